#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what it needs first
# (firmware toolchain, QEMU, a font for plots), then format, lints, the no_std build of the
# runtime for thumbv7em-none-eabihf, and every test (including host-vs-QEMU parity).
#
# One build profile: the tests build with `--release` (cargo's `bench` profile for test targets,
# `release` for everything else), so the main job's `cargo run --release` reuses the same
# compiled dependencies. Each step prints its time; a failure names the step.
#
# Usage: scripts/test.sh [--quick]
#   --quick   skip the long tests (marked #[ignore]: the R-CNN family's mAP targets, parity on
#             five more cores, MLPerf Tiny on every core and on all 1,000 keyword-spotting
#             inputs); CI does not pass it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "test.sh: unknown argument '$arg'" >&2; exit 64 ;;
    esac
done

t0=$(date +%s)
CURRENT=""
TIMES=()
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$CURRENT" ]; then
        echo >&2
        echo "test.sh: FAILED at step '$CURRENT' (exit $rc) after $(( $(date +%s) - t0 )) s" >&2
    fi
}
trap on_exit EXIT

# run_step NAME COMMAND..: runs one step, prints its duration.
run_step() {
    local name="$1"; shift
    CURRENT="$name"
    printf '\n==> %s\n' "$name" >&2
    local s; s=$(date +%s)
    "$@"
    local d=$(( $(date +%s) - s ))
    TIMES+=("$(printf '%5d s  %s' "$d" "$name")")
    printf '<== %s: %d s\n' "$name" "$d" >&2
    CURRENT=""
}

prerequisites() {
    if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
        echo "installing fonts-dejavu-core: the PNG plots need a TrueType font for labels" >&2
        if [ "$(id -u)" -eq 0 ]; then
            apt-get update -qq >&2 && apt-get install -y -qq fonts-dejavu-core >&2
        else
            sudo apt-get update -qq >&2 && sudo apt-get install -y -qq fonts-dejavu-core >&2
        fi
    fi
    scripts/firmware-toolchain.sh
}

run_step "prerequisites (firmware toolchain, QEMU, plot font)" prerequisites
run_step "cargo fmt --check" cargo fmt --all -- --check
# The firmware is its own workspace (thumb only); rustfmt checks its sources directly.
run_step "rustfmt --check firmware" rustfmt --edition 2021 --check firmware/build.rs firmware/src/main.rs \
    runtime/examples/cortex-m/build.rs runtime/examples/cortex-m/src/main.rs
run_step "cargo clippy --all-targets -D warnings" \
    cargo clippy --workspace --all-targets --release -- -D warnings
run_step "runtime builds for thumbv7em-none-eabihf (no_std, no alloc); the Cortex-M example links" \
    scripts/build-runtime-thumb.sh
run_step "build the tests (release profile)" cargo test --workspace --release --no-run
if [ "$QUICK" -eq 1 ]; then
    run_step "cargo test --workspace --release (quick: ignored tests skipped)" \
        cargo test --workspace --release
else
    run_step "cargo test --workspace --release (unit, property, gradient checks, parity in QEMU, long #[ignore] tests)" \
        cargo test --workspace --release -- --include-ignored
fi

echo >&2
echo "test.sh: step times" >&2
printf '%s\n' "${TIMES[@]}" >&2
echo "test.sh: all steps passed in $(( $(date +%s) - t0 )) s" >&2
