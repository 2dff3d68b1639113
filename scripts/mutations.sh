#!/usr/bin/env bash
# Mutation check of the test suite (the six of the test audit, and the fused pool the
# hardening review found): each mutation breaks the code in an obvious way, runs the
# tests aimed at that code and expects them to FAIL; the file is restored afterwards (also on
# Ctrl-C). Prints one line per mutation, "caught" or "MISSED", and exits 1 if any was missed.
#
#   scripts/mutations.sh [NAME...]     (default: all; names below)
#
# Each mutation replaces one exact snippet, which must occur exactly once in its file: when
# the code moves on, the script says which snippet it no longer finds instead of testing
# nothing. About 5 minutes warm (each mutation rebuilds the tests it runs).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# name | file | snippet | replacement | test command
MUTATIONS=(
"crc|runtime/src/model.rs|    if computed != pre.crc32 {|    if computed != pre.crc32 && false {|cargo test --release -q -p runtime --features std --test blob"
"planner-overlaps|runtime/src/planner.rs|        self.first <= o.last && o.first <= self.last|        self.first < o.last && o.first <= self.last|cargo test --release -q -p runtime --lib planner"
"double-rounding-conv-loop|runtime/src/kernels/conv.rs|    for ((o, &mi), &rq) in block.iter_mut().zip(max).zip(rq) {|    for ((o, &mi), &rq) in block.iter_mut().zip(max).zip(rq).skip(1) {|cargo test --release -q -p runtime --lib kernels::"
"negative-ties-round-up|runtime/src/quant.rs|        let r = p + (p >> 63);|        let r = p;|cargo test --release -q -p runtime --lib quant::"
"direct-conv-dx-not-flipped|trainer/src/nn/autograd/ops_conv_direct.rs|                        let src = ((oo * s.kh + s.kh - 1 - ky) * s.kw + s.kw - 1 - kx) * c;|                        let src = ((oo * s.kh + ky) * s.kw + kx) * c;|cargo test --release -q -p trainer --lib ops_conv"
"fused-pool-wrapping-requant|runtime/src/quant.rs| self.shift <= 0| self.shift <= 30|cargo test --release -q -p runtime --features std --test structured"
"avgpool-backward-overwrites|trainer/src/nn/autograd/ops_pool.rs|                    *dst += src * inv;|                    *dst = src * inv;|cargo test --release -q -p trainer --lib ops_pool"
)

want=("$@")
# Proptest saves the failures a mutation causes under proptest-regressions/: remove the files
# this run creates (the ones already there are the suite's own).
before_regressions="$(find . -path ./target -prune -o -path ./.toolchain -prune -o -type f -path '*/proptest-regressions/*' -print | sort)"
cleanup_regressions() {
    find . -path ./target -prune -o -path ./.toolchain -prune -o -type f -path '*/proptest-regressions/*' -print | sort |
        comm -13 <(printf '%s\n' "$before_regressions") - | xargs -r rm -f
    find . -path ./target -prune -o -path ./.toolchain -prune -o -type d -path '*proptest-regressions*' -empty -print | xargs -r rmdir
}
backup=""
file=""
restore() { if [ -n "$backup" ] && [ -f "$backup" ]; then cp "$backup" "$file"; rm -f "$backup"; backup=""; fi; }
trap 'restore; cleanup_regressions' EXIT INT TERM

missed=0
for m in "${MUTATIONS[@]}"; do
    IFS='|' read -r name file snippet replacement cmd <<<"$m"
    if [ "${#want[@]}" -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then
        continue
    fi
    count=$(python3 - "$file" "$snippet" <<'PY'
import sys
print(open(sys.argv[1]).read().count(sys.argv[2]))
PY
)
    if [ "$count" != 1 ]; then
        echo "$name: the snippet occurs $count times in $file (expected once): update this script"
        missed=1
        continue
    fi
    backup="$(mktemp)"
    cp "$file" "$backup"
    python3 - "$file" "$snippet" "$replacement" <<'PY'
import sys
p, a, b = sys.argv[1:]
s = open(p).read()
open(p, "w").write(s.replace(a, b, 1))
PY
    if $cmd >/dev/null 2>&1; then
        echo "$name: MISSED ($cmd passed with the mutation in $file)"
        missed=1
    else
        echo "$name: caught by $cmd"
    fi
    restore
done
exit "$missed"
