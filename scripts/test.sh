#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what it needs first
# (firmware toolchain, QEMU, a font for plots), then format, lints, the no_std build of the
# runtime for thumbv7em-none-eabihf, and every test (including host-vs-QEMU parity).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
step() { printf '\n==> %s\n' "$*" >&2; }
t0=$(date +%s)

step "prerequisites (firmware toolchain, QEMU, plot font)"
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    echo "installing fonts-dejavu-core: the PNG plots need a TrueType font for labels" >&2
    apt-get update -qq >&2 && apt-get install -y -qq fonts-dejavu-core >&2
fi
scripts/firmware-toolchain.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "runtime builds for thumbv7em-none-eabihf (no_std, no alloc)"
scripts/build-runtime-thumb.sh

step "cargo test --workspace (unit, property, gradient checks, parity in QEMU)"
cargo test --workspace

echo "test.sh: all steps passed in $(( $(date +%s) - t0 )) s" >&2
