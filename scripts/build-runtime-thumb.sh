#!/usr/bin/env bash
# Build the workspace's `runtime` crate for thumbv7em-none-eabihf without default features:
# proves it is no_std (and needs no allocator), through the same toolchain route as the
# firmware; then the minimal Cortex-M program users start from (runtime/examples/cortex-m).
# Extra arguments go to the runtime's cargo build (e.g. --features defmt).
#   scripts/build-runtime-thumb.sh [CARGO ARGS..]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$REPO/.toolchain/env.sh" ]; then
    "$REPO/scripts/firmware-toolchain.sh" >&2
fi
# shellcheck source=/dev/null
. "$REPO/.toolchain/env.sh"
cd "$REPO"
# A separate target dir: the host workspace's target/ keeps its own cache, and this one is
# git-ignored already (/firmware/target).
export CARGO_TARGET_DIR="$REPO/firmware/target/runtime-thumb"
# shellcheck disable=SC2086  # FW_BUILD_STD_FLAGS is a list of words on purpose
"$FW_CARGO" build -p runtime --no-default-features --release \
    --target thumbv7em-none-eabihf $FW_BUILD_STD_FLAGS "$@"
echo "build-runtime-thumb: runtime builds for thumbv7em-none-eabihf (no_std, no default features)" >&2
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
export CARGO_TARGET_DIR="$REPO/firmware/target/cortex-m-example"
cd "$REPO/runtime/examples/cortex-m"
# shellcheck disable=SC2086
"$FW_CARGO" build --release $FW_BUILD_STD_FLAGS
echo "build-runtime-thumb: runtime/examples/cortex-m builds and links" >&2
