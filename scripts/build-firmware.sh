#!/usr/bin/env bash
# Build the release firmware ELF and print its path as the last line of stdout.
#   scripts/build-firmware.sh [--board B] [--model PATH] [--inputs PATH]
#                             [--features F1,F2] [--stack-reserve BYTES]
# Boards: the folders of firmware/boards/ (default mps2-an386); each one's board.env is its
# registry entry (target, CPU, QEMU machine, budgets, counter, stack guard), memory.x its map.
# Defaults: model firmware/models/ref-cnn.bin, inputs firmware/models/test-inputs.bin.
# Relative paths are taken from the current directory. Output is cached per board in
# firmware/target/B.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

board=mps2-an386
features=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --board) board="${2:?--board needs a value}"; shift 2 ;;
        --board=*) board="${1#*=}"; shift ;;
        --model) FIRMWARE_MODEL="$(abspath "${2:?--model needs a path}")"; export FIRMWARE_MODEL; shift 2 ;;
        --model=*) FIRMWARE_MODEL="$(abspath "${1#*=}")"; export FIRMWARE_MODEL; shift ;;
        --inputs) FIRMWARE_INPUTS="$(abspath "${2:?--inputs needs a path}")"; export FIRMWARE_INPUTS; shift 2 ;;
        --inputs=*) FIRMWARE_INPUTS="$(abspath "${1#*=}")"; export FIRMWARE_INPUTS; shift ;;
        --features) features+=("${2:?--features needs a value}"); shift 2 ;;
        --features=*) features+=("${1#*=}"); shift ;;
        --stack-reserve) export FIRMWARE_STACK_RESERVE="${2:?}"; shift 2 ;;
        -h | --help) usage ;;
        *) echo "build-firmware: unknown argument '$1'" >&2; usage ;;
    esac
done
# Paths given through the environment are made absolute too (build.rs would otherwise take
# them from firmware/).
if [ -n "${FIRMWARE_MODEL:-}" ]; then FIRMWARE_MODEL="$(abspath "$FIRMWARE_MODEL")"; export FIRMWARE_MODEL; fi
if [ -n "${FIRMWARE_INPUTS:-}" ]; then FIRMWARE_INPUTS="$(abspath "$FIRMWARE_INPUTS")"; export FIRMWARE_INPUTS; fi

board_env="$REPO/firmware/boards/$board/board.env"
if [ ! -f "$board_env" ]; then
    known=$(cd "$REPO/firmware/boards" && ls -d -- */ | tr -d / | tr '\n' ' ')
    echo "build-firmware: unknown board '$board' (known: $known)" >&2
    exit 64
fi
TARGET="" TARGET_CPU=""
# shellcheck source=/dev/null
. "$board_env"
feature_list="board-$board"
for f in ${features[@]+"${features[@]}"}; do feature_list="$feature_list,$f"; done

if [ ! -f "$REPO/.toolchain/env.sh" ]; then
    "$REPO/scripts/firmware-toolchain.sh" >&2
fi
# shellcheck source=/dev/null
. "$REPO/.toolchain/env.sh"
# The rustup route has prebuilt targets (no -Zbuild-std): the board's must be installed.
if [ "${FW_ROUTE:-}" = rustup ] \
    && ! (cd "$REPO/firmware" && rustup target list --installed) | grep -qx "$TARGET"; then
    echo "build-firmware: installing the Rust target $TARGET for board $board (rustup)" >&2
    (cd "$REPO/firmware" && rustup target add "$TARGET" >&2) || {
        echo "build-firmware: board $board needs 'rustup target add $TARGET'" >&2
        exit 69
    }
fi
# One target directory per board: boards differ in target and -C target-cpu, and sharing one
# directory would rebuild everything at each switch.
export CARGO_TARGET_DIR="$REPO/firmware/target/$board"
if [ -n "$TARGET_CPU" ]; then
    triple_var="CARGO_TARGET_$(printf '%s' "$TARGET" | tr 'a-z.-' 'A-Z__')_RUSTFLAGS"
    export "$triple_var=-C target-cpu=$TARGET_CPU"
fi
# RUSTFLAGS from the environment (a host build's, e.g. "-D warnings" under cargo test) would
# replace the rustflags in firmware/.cargo/config.toml, which carry the linker and -Tlink.x.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS

cd "$REPO/firmware"
# shellcheck disable=SC2086  # FW_BUILD_STD_FLAGS is a list of words on purpose
"$FW_CARGO" build --release $FW_BUILD_STD_FLAGS --target "$TARGET" \
    --no-default-features --features "$feature_list" >&2
elf="$CARGO_TARGET_DIR/$TARGET/release/firmware"
[ -f "$elf" ] || { echo "build-firmware: cargo succeeded but $elf is missing" >&2; exit 1; }
echo "$elf"
