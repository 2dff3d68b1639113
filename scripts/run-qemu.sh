#!/usr/bin/env bash
# Run a firmware ELF on an emulated board with semihosting, deterministically.
#   scripts/run-qemu.sh [--board B] ELF
# B is the board the ELF was built for (default mps2-an386; firmware/boards/B/board.env names
# QEMU's machine and CPU).
# Semihosting output goes to stdout; the exit status is the firmware's (0 ok, 2 runtime error,
# 101 panic, 102 HardFault, 103 stack overflow), or 124 when the timeout ends it.
# Env: QEMU_TIMEOUT seconds (default 300).
# -icount shift=0,align=off,sleep=off: each instruction is 1 ns of virtual time, so SysTick
# counts (and the INSN lines) are exact and identical on every run and machine.
set -euo pipefail
board=mps2-an386
if [ "${1:-}" = "--board" ]; then
    board="${2:?--board needs a value}"
    shift 2
fi
if [ "$#" -ne 1 ]; then
    echo "usage: $0 [--board B] ELF" >&2
    exit 64
fi
elf="$1"
board_env="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/firmware/boards/$board/board.env"
[ -f "$board_env" ] || { echo "run-qemu: unknown board '$board'" >&2; exit 64; }
QEMU_MACHINE="" QEMU_CPU=""
# shellcheck source=/dev/null
. "$board_env"
[ -n "$QEMU_MACHINE" ] || { echo "run-qemu: board '$board' is silicon; QEMU does not emulate it" >&2; exit 64; }
[ -f "$elf" ] || { echo "run-qemu: no such file: $elf" >&2; exit 66; }
command -v qemu-system-arm >/dev/null 2>&1 \
    || { echo "run-qemu: qemu-system-arm not found; run scripts/firmware-toolchain.sh" >&2; exit 69; }
status=0
timeout -k 5 "${QEMU_TIMEOUT:-300}" \
    qemu-system-arm -machine "$QEMU_MACHINE" -cpu "$QEMU_CPU" -nographic \
    -monitor none -serial none \
    -semihosting-config enable=on,target=native \
    -icount shift=0,align=off,sleep=off \
    -kernel "$elf" </dev/null || status=$?
if [ "$status" -eq 124 ]; then
    echo "run-qemu: timed out after ${QEMU_TIMEOUT:-300} s" >&2
fi
exit "$status"
