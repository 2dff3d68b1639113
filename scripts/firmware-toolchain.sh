#!/usr/bin/env bash
# Provide everything needed to build the firmware for thumbv7em-none-eabihf and run it in QEMU,
# then write <repo>/.toolchain/env.sh for the other scripts to source.
#
# Two routes to a Rust compiler for the Cortex-M4F:
#   rustup  - when `rustup target list --installed` has thumbv7em-none-eabihf (the usual case on a
#             machine with internet: `rustup target add thumbv7em-none-eabihf`). Plain cargo.
#   debian  - otherwise: Debian's rustc-web (bookworm-security) unpacked with dpkg-deb into
#             <repo>/.toolchain/debian-rust, building core from source with -Zbuild-std.
# Idempotent: a second run finds everything in place and only rewrites env.sh.
#
# Version check: the minimum Rust the firmware needs is derived from the lock files (the highest
# `rust-version` among the crates firmware/Cargo.lock and the runtime's part of Cargo.lock
# resolve to, read with `cargo metadata`). A cached Debian toolchain older than that is replaced;
# apt's package lists are refreshed before any look-up (an old list answers with an old version),
# the newest rustc-web apt offers is taken, and if even that is too old the script stops and
# names both versions.
#
# Usage: scripts/firmware-toolchain.sh [--refresh]
#   --refresh   re-download and re-unpack the Debian toolchain even if it is cached.
# Env: FW_TOOLCHAIN_ROUTE=rustup|debian forces a route (default: auto).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TC="$REPO/.toolchain"
DEB_ROOT="$TC/debian-rust"
STAMP="$DEB_ROOT/.installed"
TARGET=thumbv7em-none-eabihf
REFRESH=0

for arg in "$@"; do
    case "$arg" in
        --refresh) REFRESH=1 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "firmware-toolchain: unknown argument '$arg'" >&2; exit 64 ;;
    esac
done

log() { echo "firmware-toolchain: $*" >&2; }
die() { echo "firmware-toolchain: error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "running apt-get update (package lists are needed to find the packages)"
        as_root apt-get update -qq >&2
        APT_UPDATED=1
    fi
}

# Newest version apt offers of a package (any archive, not only the pinned candidate).
apt_newest() {
    apt-cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' \
        | { best=""; while read -r v; do
            if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best="$v"; fi
        done; printf '%s\n' "$best"; }
}

# 1.96.0+dfsg1-1~deb12u2 -> 1.96.0 ; "rustc 1.95.0 (59807616e 2026-04-14)" -> 1.95.0
upstream_version() { printf '%s\n' "$1" | sed -E 's/^([0-9]+:)?//; s/^[^0-9]*([0-9]+\.[0-9]+(\.[0-9]+)?).*/\1/'; }

# version_ge A B: true when A >= B (plain dotted versions).
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

# The minimum rustc the firmware build needs: the highest rust-version among the crates the
# firmware's lock file resolves to and the runtime's dependency closure in the root lock file.
# Needs a host cargo (rustup's); prints nothing if it cannot tell.
required_rust() {
    command -v cargo >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 || return 0
    {
        (cd "$REPO/firmware" && cargo metadata --format-version 1 --locked 2>/dev/null) || true
        echo
        (cd "$REPO" && cargo metadata --format-version 1 --locked 2>/dev/null) || true
    } | python3 -c '
import json, sys
best = (0, 0, 0)
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    m = json.loads(line)
    pkgs = {p["id"]: p for p in m["packages"]}
    nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
    roots = [i for i, p in pkgs.items() if p["name"] in ("firmware", "runtime") and p["source"] is None]
    seen, todo = set(), list(roots)
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += [d["pkg"] for d in nodes.get(i, {}).get("deps", [])]
    for i in seen:
        rv = pkgs[i].get("rust_version")
        if rv:
            v = tuple(int(x) for x in (rv.split(".") + ["0", "0"])[:3])
            best = max(best, v)
if best > (0, 0, 0):
    print(".".join(map(str, best)))
'
}

# Candidate version of a Debian package, empty if apt knows none.
apt_candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

apt_install() {
    # $1: why; rest: packages
    local why="$1"; shift
    log "installing with apt-get: $* ($why)"
    apt_update_once
    local aptlog="$TC/apt-install.log"
    mkdir -p "$TC"
    if ! as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >"$aptlog" 2>&1; then
        apt_update_once
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "$@" >"$aptlog" 2>&1 \
            || { tail -n 20 "$aptlog" >&2; die "apt-get install $* failed (log: $aptlog)"; }
    fi
}

# ---------------------------------------------------------------------------------------------
# 1. Host tools: QEMU (runs the firmware), ld.lld (links it), arm-none-eabi binutils (sizes it).
# ---------------------------------------------------------------------------------------------
missing=()
command -v qemu-system-arm >/dev/null 2>&1 || missing+=(qemu-system-arm)
command -v ld.lld >/dev/null 2>&1 || missing+=(lld)
command -v arm-none-eabi-size >/dev/null 2>&1 || missing+=(binutils-arm-none-eabi)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "qemu-system-arm runs the firmware on an emulated Cortex-M4 (mps2-an386); \
lld provides ld.lld, the linker the firmware config names; binutils-arm-none-eabi provides \
arm-none-eabi-size for the flash/RAM report" "${missing[@]}"
fi

# ---------------------------------------------------------------------------------------------
# 2. Rust for thumbv7em-none-eabihf.
# ---------------------------------------------------------------------------------------------
ROUTE="${FW_TOOLCHAIN_ROUTE:-auto}"
if [ "$ROUTE" = auto ]; then
    if command -v rustup >/dev/null 2>&1 \
        && (cd "$REPO/firmware" 2>/dev/null || cd "$REPO"; rustup target list --installed 2>/dev/null) \
            | grep -qx "$TARGET"; then
        ROUTE=rustup
    else
        ROUTE=debian
    fi
fi

mkdir -p "$TC"

install_debian_rust() {
    local rustc_ver series llvm_pkg dl pkgs p pkg
    apt_update_once
    rustc_ver="$(apt_newest rustc-web)"
    [ -n "$rustc_ver" ] || die "apt knows no 'rustc-web' package (Debian bookworm-security carries it). \
Either add bookworm-security to the apt sources, or install the target with rustup: \
'rustup target add $TARGET'."
    # 1.96.0+dfsg1-1~deb12u2 -> 1.96 (the libstd package carries the series in its name).
    series="$(printf '%s\n' "$rustc_ver" | sed -E 's/^([0-9]+:)?([0-9]+\.[0-9]+).*/\2/')"
    if [ -n "$REQUIRED" ] && ! version_ge "$(upstream_version "$rustc_ver")" "$REQUIRED"; then
        die "the newest Debian rustc-web apt offers is $rustc_ver, but the lock files need rustc \
>= $REQUIRED (the highest rust-version among the firmware's crates). Install the target with \
rustup instead ('rustup target add $TARGET'), or add an apt source that carries a newer rustc-web."
    fi
    # The LLVM library rustc links against: read it from libstd's dependencies rather than guess.
    llvm_pkg="$(apt-cache show "libstd-rust-web-$series=$rustc_ver" 2>/dev/null \
        | sed -n 's/^Depends: //p' | head -n1 | tr ',' '\n' | grep -oE 'libllvm[0-9]+' | head -n1 || true)"
    if [ -z "$llvm_pkg" ]; then
        # Fallback: the newest libllvmN that apt offers.
        llvm_pkg="$(apt-cache search --names-only '^libllvm[0-9]+$' 2>/dev/null \
            | awk '{print $1}' | sort -V | tail -n1)"
        log "could not read libllvm from libstd-rust-web-$series's dependencies; using $llvm_pkg"
    fi
    [ -n "$llvm_pkg" ] || die "no libllvm package found for rustc-web $rustc_ver"

    pkgs=("rustc-web=$rustc_ver" "cargo-web=$rustc_ver" "libstd-rust-web-$series=$rustc_ver"
        "libstd-rust-web-dev=$rustc_ver" "rust-web-src=$rustc_ver" "$llvm_pkg")
    log "no rustup target $TARGET here, so using Debian's Rust $rustc_ver (with -Zbuild-std)."
    log "fetching .debs (about 145 MB): ${pkgs[*]}"
    log "  -> unpacking into $DEB_ROOT (project-local; does not touch rustup or the system rustc)"
    dl="$(mktemp -d "$TC/debs.XXXXXX")"
    # apt-get download drops privileges to _apt when it can; make the folder writable for it.
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -q "${pkgs[@]}" >&2) || {
        apt_update_once
        (cd "$dl" && apt-get download -q "${pkgs[@]}" >&2)
    }
    rm -rf "$DEB_ROOT"
    mkdir -p "$DEB_ROOT"
    for p in "$dl"/*.deb; do dpkg-deb -x "$p" "$DEB_ROOT"; done
    rm -rf "$dl"

    # cargo-web and rustc-web need some ordinary shared libraries from the system (libgit2 for
    # cargo, for example) that a minimal image may lack: install those lib* dependencies.
    local need=()
    for pkg in "cargo-web=$rustc_ver" "rustc-web=$rustc_ver" "libstd-rust-web-$series=$rustc_ver"; do
        while read -r p; do
            case "$p" in
                libstd-rust-web* | libllvm*) ;; # unpacked above
                # Skip virtual packages (libc-dev): apt has no candidate for them.
                lib*) pkg_installed "$p" || [ -z "$(apt_candidate "$p")" ] || need+=("$p") ;;
            esac
        done < <(apt-cache show "$pkg" | sed -n 's/^Depends: //p' | head -n1 | tr ',' '\n' \
            | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/^ +//; s/ +$//')
    done
    if [ "${#need[@]}" -gt 0 ]; then
        apt_install "shared libraries that Debian's cargo/rustc load at run time" "${need[@]}"
    fi

    printf 'rustc-web=%s\nllvm=%s\n' "$rustc_ver" "$llvm_pkg" >"$STAMP"
}

REQUIRED="$(required_rust || true)"
if [ -n "$REQUIRED" ]; then
    log "the lock files need rustc >= $REQUIRED (highest rust-version among the firmware's crates)"
else
    log "warning: could not derive the minimum rustc from the lock files (no host cargo or \
python3, or crates.io unreachable); not checking the toolchain's version"
fi

if [ "$ROUTE" = rustup ]; then
    have="$(upstream_version "$(rustc --version 2>/dev/null || true)")"
    if [ -n "$REQUIRED" ] && [ -n "$have" ] && ! version_ge "$have" "$REQUIRED"; then
        die "rustup's rustc is $have but the lock files need >= $REQUIRED: run 'rustup update'"
    fi
fi

if [ "$ROUTE" = debian ]; then
    if [ "$REFRESH" -eq 0 ] && [ -f "$STAMP" ] && [ -n "$REQUIRED" ]; then
        cached="$(sed -n 's/^rustc-web=//p' "$STAMP")"
        if ! version_ge "$(upstream_version "$cached")" "$REQUIRED"; then
            log "the cached Debian toolchain (rustc-web $cached) is older than the $REQUIRED the \
lock files need: replacing it"
            REFRESH=1
        fi
    fi
    if [ "$REFRESH" -eq 1 ] || [ ! -f "$STAMP" ] || [ ! -x "$DEB_ROOT/usr/bin/cargo" ]; then
        install_debian_rust
    fi
    LIBDIR="$DEB_ROOT/usr/lib/x86_64-linux-gnu"
    [ -d "$LIBDIR" ] || LIBDIR="$(dirname "$(find "$DEB_ROOT/usr/lib" -name 'libLLVM*.so*' | head -n1)")"
    if ! LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$DEB_ROOT/usr/bin/rustc" --version >/dev/null 2>&1; then
        die "the unpacked rustc in $DEB_ROOT does not run; retry with --refresh"
    fi
    cat >"$TC/env.sh" <<EOF
# Generated by scripts/firmware-toolchain.sh (route: debian, $(sed -n 's/^rustc-web=//p' "$STAMP")).
# Source it, then build from firmware/ with:  "\$FW_CARGO" build --release \$FW_BUILD_STD_FLAGS
# (or use scripts/fw-cargo.sh, which does exactly that for one command).
export FW_ROUTE=debian
export FW_TOOLCHAIN_ROOT="$DEB_ROOT"
export FW_CARGO="$DEB_ROOT/usr/bin/cargo"
export RUSTC="$DEB_ROOT/usr/bin/rustc"
export RUSTDOC="$DEB_ROOT/usr/bin/rustdoc"
export LD_LIBRARY_PATH="$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# -Zbuild-std is unstable; Debian's stable rustc accepts it with RUSTC_BOOTSTRAP. The firmware
# code itself uses stable features only.
export RUSTC_BOOTSTRAP=1
export FW_BUILD_STD_FLAGS="-Zbuild-std=core,compiler_builtins -Zbuild-std-features=compiler-builtins-mem"
EOF
else
    cat >"$TC/env.sh" <<EOF
# Generated by scripts/firmware-toolchain.sh (route: rustup, target $TARGET installed).
export FW_ROUTE=rustup
export FW_TOOLCHAIN_ROOT=""
export FW_CARGO="$(command -v cargo)"
export FW_BUILD_STD_FLAGS=""
EOF
fi

# shellcheck source=/dev/null
. "$TC/env.sh"
log "route: $FW_ROUTE; $(LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" "${RUSTC:-rustc}" --version); \
qemu: $(qemu-system-arm --version | head -n1 | awk '{print $4}'); $(ld.lld --version | head -n1)"
log "wrote $TC/env.sh"
