#!/usr/bin/env bash
# Run cargo for the firmware with the right toolchain: `scripts/fw-cargo.sh SUBCOMMAND [ARGS..]`
# from inside firmware/ (e.g. `../scripts/fw-cargo.sh run --release`). Sources .toolchain/env.sh
# (creating it with firmware-toolchain.sh if needed) and, on the Debian route, adds the
# -Zbuild-std flags right after the subcommand.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$REPO/.toolchain/env.sh" ]; then
    "$REPO/scripts/firmware-toolchain.sh" >&2
fi
# shellcheck source=/dev/null
. "$REPO/.toolchain/env.sh"
# RUSTFLAGS from the environment (a host build's, e.g. "-D warnings" under cargo test) would
# replace the rustflags in firmware/.cargo/config.toml, which carry the linker and -Tlink.x.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
[ "$#" -ge 1 ] || { echo "usage: fw-cargo.sh SUBCOMMAND [ARGS..]" >&2; exit 64; }
sub="$1"; shift
case "$sub" in
    build | b | run | r | check | c | clippy | rustc | doc | test | t)
        # shellcheck disable=SC2086  # FW_BUILD_STD_FLAGS is a list of words on purpose
        exec "$FW_CARGO" "$sub" $FW_BUILD_STD_FLAGS "$@" ;;
    *) exec "$FW_CARGO" "$sub" "$@" ;;
esac
