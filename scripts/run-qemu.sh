#!/usr/bin/env bash
# Run a firmware ELF on QEMU's mps2-an386 (Cortex-M4F) with semihosting, deterministically.
#   scripts/run-qemu.sh ELF
# Semihosting output goes to stdout; the exit status is the firmware's (0 ok, 2 runtime error,
# 101 panic, 102 HardFault), or 124 when the timeout ends it.
# Env: QEMU_TIMEOUT seconds (default 300).
# -icount shift=0,align=off,sleep=off: each instruction is 1 ns of virtual time, so SysTick
# counts (and the INSN lines) are exact and identical on every run and machine.
set -euo pipefail
if [ "$#" -ne 1 ]; then
    echo "usage: $0 ELF" >&2
    exit 64
fi
elf="$1"
[ -f "$elf" ] || { echo "run-qemu: no such file: $elf" >&2; exit 66; }
command -v qemu-system-arm >/dev/null 2>&1 \
    || { echo "run-qemu: qemu-system-arm not found; run scripts/firmware-toolchain.sh" >&2; exit 69; }
status=0
timeout -k 5 "${QEMU_TIMEOUT:-300}" \
    qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
    -monitor none -serial none \
    -semihosting-config enable=on,target=native \
    -icount shift=0,align=off,sleep=off \
    -kernel "$elf" </dev/null || status=$?
if [ "$status" -eq 124 ]; then
    echo "run-qemu: timed out after ${QEMU_TIMEOUT:-300} s" >&2
fi
exit "$status"
