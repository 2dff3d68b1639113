#!/usr/bin/env bash
# Instructions per inference of one model on every core QEMU emulates, as a markdown table
# (the README's "Every Cortex-M core" table comes from this command):
#   scripts/cores.sh [MODEL.bin] [IMAGES]
# Defaults: firmware/models/ref-cnn.bin, 10 images. Each row is `trainer device --board B`:
# the firmware built for that core, the images run in QEMU and checked byte for byte against
# the host runtime, instructions counted by SysTick under -icount (per layer: one profiling
# inference). A model that does not fit a board's RAM or flash gets the build's refusal.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${1:-$REPO/firmware/models/ref-cnn.bin}"
case "$model" in /*) ;; *) model="$PWD/$model" ;; esac
images="${2:-10}"
err="$(mktemp)"
trap 'rm -f "$err"' EXIT
cd "$REPO"
cargo build --release -q -p trainer
trainer="$REPO/target/release/trainer"
echo "| board | core | instructions / inference | per layer | bit-exact | peak stack | static RAM (arena incl.) | flash |"
echo "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"
# Every emulated board of the registry (firmware/boards/B/board.env with a QEMU machine).
for env_file in firmware/boards/*/board.env; do
    board=$(basename "$(dirname "$env_file")")
    QEMU_MACHINE="" DESCRIPTION=""
    # shellcheck source=/dev/null
    . "$env_file"
    [ -n "$QEMU_MACHINE" ] || continue
    core=${DESCRIPTION%%,*}
    if ! json=$("$trainer" device --board "$board" --model "$model" --images "$images" --json 2>"$err"); then
        why=$(grep -m1 "does not fit" "$err" | sed 's/^ *//; s/^Error: //' || true)
        echo "| $board | $core | does not fit | ${why:-build failed} | | | | |"
        continue
    fi
    JSON="$json" python3 - "$board" "$core" <<'PY'
import json, os, sys
r = json.loads(os.environ["JSON"])
layers = " + ".join(f"{l['instructions']:,}" for l in r["layers"])
print(f"| {sys.argv[1]} | {sys.argv[2]} | {r['instructions_per_inference']:,} | {layers} | "
      f"{r['bit_exact']} / {r['images']} | {r['peak_stack_bytes']:,} B | {r['static_ram_bytes']:,} B | {r['flash_bytes']:,} B |")
PY
done
