#!/usr/bin/env bash
# The importer's fuzzing campaign: `trainer/fuzz`'s target `import` (raw bytes and
# structure-aware mutations of real .tflite files), RUNS executions in all (default 10 M) over
# two workers sharing one corpus, then libFuzzer's coverage figures.
#
#   scripts/fuzz-import.sh [RUNS]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); not part of the
# test suite (`trainer/tests/tflite.rs` keeps the hostile files found so far as regression tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../trainer"
runs=${1:-10000000}
cargo +nightly fuzz build -O -a -s none --no-trace-compares import
bin=fuzz/target/x86_64-unknown-linux-gnu/release/import
mkdir -p fuzz/seeds fuzz/corpus fuzz/logs
# Seeds: each real file behind a 0 byte (raw mode), and a few decision lists (odd first byte).
for f in tests/fixtures/tflite/*.tflite tests/fixtures/mlperf/kws_ref_model.tflite; do
    { printf '\x00'; cat "$f"; } >"fuzz/seeds/raw-$(basename "$f" .tflite)"
done
for i in 1 3 5 7 9; do
    { printf "\\x0$i"; head -c 512 /dev/zero | tr '\0' "\\$((i * 7))"; } >"fuzz/seeds/mut-$i"
done
half=$((runs / 2))
start=$(date +%s)
for w in 1 2; do
    "$bin" fuzz/corpus fuzz/seeds -runs="$half" -seed="$w" -print_final_stats=1 \
        >"fuzz/logs/worker-$w.log" 2>&1 &
done
status=0
wait || status=$?
for w in 1 2; do
    grep -E "^Done|stat::number_of_executed_units|^INFO: Loaded|(NEW|pulse).*cov:" \
        "fuzz/logs/worker-$w.log" | tail -4
done
echo "corpus: $(ls fuzz/corpus | wc -l) inputs; $(( $(date +%s) - start )) s; crashes: $(ls fuzz/artifacts/import 2>/dev/null | wc -l)"
[ -z "$(ls fuzz/artifacts/import 2>/dev/null)" ] || status=1
exit $status
