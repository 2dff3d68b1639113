#!/usr/bin/env bash
# Flash and static RAM of a firmware ELF, as `key value` lines (bytes):
#   flash        .vector_table + .text + .rodata + .data   (what is programmed)
#   ram_static   .data + .bss + .uninit                    (before the stack)
# plus each of those sections on its own line. Uses arm-none-eabi-size -A.
#   scripts/firmware-size.sh ELF
set -euo pipefail
if [ "$#" -ne 1 ]; then
    echo "usage: $0 ELF" >&2
    exit 64
fi
[ -f "$1" ] || { echo "firmware-size: no such file: $1" >&2; exit 66; }
command -v arm-none-eabi-size >/dev/null 2>&1 \
    || { echo "firmware-size: arm-none-eabi-size not found; run scripts/firmware-toolchain.sh" >&2; exit 69; }
arm-none-eabi-size -A "$1" | awk '
    $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/ { s[$1] += $2 }
    END {
        flash = s[".vector_table"] + s[".text"] + s[".rodata"] + s[".data"]
        ram = s[".data"] + s[".bss"] + s[".uninit"]
        printf "flash %d\nram_static %d\n", flash, ram
        printf "vector_table %d\ntext %d\nrodata %d\ndata %d\nbss %d\nuninit %d\n", \
            s[".vector_table"], s[".text"], s[".rodata"], s[".data"], s[".bss"], s[".uninit"]
    }'
