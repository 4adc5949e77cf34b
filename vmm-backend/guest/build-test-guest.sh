#!/usr/bin/env bash
# Builds the tiny Linux test guest used by the QEMU integration tests:
#   OUTDIR/vmlinuz     Debian 12 kernel (linux-image-6.1*-amd64)
#   OUTDIR/initrd.img  gzip'ed newc cpio: busybox, qemu-ga + libs, a few modules
#
# Usage: build-test-guest.sh [OUTDIR]     (default: <repo>/target/test-guest)
#
# Everything comes from Debian packages fetched with `apt-get download` and
# unpacked with `dpkg-deb -x`; nothing is installed on the host except the
# build tools cpio and kmod if they are missing (needs root then).
# The result is cached: if OUTDIR/stamp matches the hash of this script and
# of rootfs/, nothing is done. VMGW_GUEST_FORCE=1 forces a rebuild.
# See README.md for the guest's behaviour (kernel cmdline knobs, markers).
set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname "$SCRIPT_PATH")
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
ROOTFS_SRC=$SCRIPT_DIR/rootfs
OUTDIR=${1:-$REPO_ROOT/target/test-guest}

# Console keyboard layouts in the guest (name = the gateway's layout name, then the
# X layout): compiled from the X keyboard database with ckbcomp (console-setup) and
# `loadkeys -b` (kbd) into binary keymaps for busybox loadkmap, like Debian's
# console-setup does for the text console. The console page's layout tables come
# from the same database (static/tools/keyboard-layouts.sh).
KEYMAPS=(en-us:us de:de fr:fr en-gb:gb ja:jp)

# Kernel modules wanted in the guest (with their dependencies). Built-in ones
# are skipped automatically. QEMU's rtl8139 is an "enhanced 8139C+" that
# 8139too refuses ("use 8139cp"), so 8139cp is what drives it; 8139too is kept
# for real 8139 chips. button + evdev: ACPI power button via acpid.
KMODS=(virtio_pci virtio_net virtio_console virtio_blk e1000 8139cp 8139too button evdev)

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export LC_ALL=C

log() { echo "build-test-guest: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

inputs_hash() {
    (
        cd "$SCRIPT_DIR"
        sha256sum build-test-guest.sh
        find rootfs \( -type f -o -type l \) -print0 | sort -z | xargs -0 -r sha256sum
        find rootfs -type l -printf '%p -> %l\n' | sort
        sha256sum vmgw-clip/vmgw-clip.c
    ) | sha256sum | cut -d' ' -f1
}

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
HASH=$(inputs_hash)

is_fresh() {
    [[ ${VMGW_GUEST_FORCE:-0} != 1 && -s $OUTDIR/vmlinuz && -s $OUTDIR/initrd.img &&
        -f $OUTDIR/stamp && "$(cat "$OUTDIR/stamp")" == "$HASH" ]]
}

is_fresh && exit 0

# Serialise concurrent builds (e.g. parallel tests); re-check after the lock.
exec 9>"$OUTDIR/.lock"
flock 9
is_fresh && exit 0

# ---------------------------------------------------------------- host tools
apt_update() {
    [[ -e $WORK/apt-updated ]] && return 0
    [[ $(id -u) == 0 ]] || die "apt package lists missing/outdated; run 'apt-get update' as root"
    log "running apt-get update"
    apt-get -q update >&2
    : >"$WORK/apt-updated"
}

ensure_tools() {
    local -a missing=()
    command -v cpio >/dev/null || missing+=(cpio)
    # vmgw-clip (the clipboard agent) is built static: gcc and glibc's static libc
    command -v cc >/dev/null || missing+=(gcc)
    [[ -e /usr/lib/x86_64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
    # ckbcomp (console keymaps) is a perl script
    command -v perl >/dev/null || missing+=(perl)
    { command -v depmod && command -v modprobe; } >/dev/null || missing+=(kmod)
    for t in apt-get apt-cache dpkg-deb gzip flock sha256sum find xargs; do
        command -v "$t" >/dev/null || die "required tool '$t' not found"
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing host tools: ${missing[*]} (apt-get install ${missing[*]})"
    log "installing host tools: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}" >&2; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# pkg_depends PKG...: names of the PKGs' (Pre-)Depends, alternatives included.
pkg_depends() {
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$@" |
        sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([^< ][^ ]*\)$/\2/p' | sort -u
}

resolve_kernel_pkg() {
    local pkg
    pkg=$(pkg_depends linux-image-amd64 2>/dev/null | grep '^linux-image-[0-9].*-amd64$' | sort -V | tail -n1 || true)
    [[ -n $pkg ]] || return 1
    [[ $pkg == linux-image-6.1* ]] || log "warning: expected linux-image-6.1*, got $pkg"
    echo "$pkg"
}

# Library packages qemu-guest-agent needs (transitively, lib* / zlib1g only;
# breadth-first, one apt-cache call per level as each call loads the cache).
resolve_qga_lib_pkgs() {
    local -A seen=()
    local -a level=(qemu-guest-agent) next out=()
    local d
    while ((${#level[@]})); do
        next=()
        for d in $(pkg_depends "${level[@]}" 2>/dev/null); do
            case $d in
            lib* | zlib1g)
                if [[ -z ${seen[$d]:-} ]]; then
                    seen[$d]=1
                    next+=("$d")
                    out+=("$d")
                fi
                ;;
            esac
        done
        level=("${next[@]}")
    done
    ((${#out[@]})) || return 1
    echo "${out[@]}"
}

# fetch_debs: resolve the package names and `apt-get download` them into
# $WORK/debs. Sets KPKG and LIBPKGS. Returns non-zero (no exit) on failure.
fetch_debs() {
    KPKG=$(resolve_kernel_pkg) || return 1
    LIBPKGS=$(resolve_qga_lib_pkgs) || return 1
    rm -rf "$WORK/debs" && mkdir -p "$WORK/debs" || return 1
    # shellcheck disable=SC2086
    (cd "$WORK/debs" && apt-get -q -o APT::Sandbox::User=root download \
        "$KPKG" busybox-static qemu-guest-agent console-setup xkb-data kbd $LIBPKGS >&2)
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmgw-test-guest.XXXXXX")
STAGE=$(mktemp -d "$OUTDIR/.build.XXXXXX")
cleanup() { rm -rf "$WORK" "$STAGE"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building test guest into $OUTDIR"
ensure_tools

# ------------------------------------------------------------------ download
# Package lists missing or stale (404 on a superseded kernel ABI): update once
# and resolve again.
if ! fetch_debs; then
    apt_update
    fetch_debs || die "cannot resolve/download the guest packages"
fi

deb_of() {
    local f
    f=$(find "$WORK/debs" -maxdepth 1 -name "$1_*.deb" | head -n1)
    [[ -n $f ]] || die "downloaded package $1 not found"
    echo "$f"
}

# ----------------------------------------------------------------- initramfs
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc,proc,sys,dev,run,tmp,root,mnt,var/lib,var/log}
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"
ln -s ../run "$ROOT/var/run"

# busybox + applet symlinks
mkdir -p "$WORK/busybox"
dpkg-deb -x "$(deb_of busybox-static)" "$WORK/busybox"
install -m 0755 "$WORK/busybox/bin/busybox" "$ROOT/bin/busybox"
while read -r applet; do
    [[ -e $ROOT/$applet || -L $ROOT/$applet ]] && continue
    mkdir -p "$ROOT/$(dirname "$applet")"
    ln -s /bin/busybox "$ROOT/$applet"
done < <("$ROOT/bin/busybox" --list-full)
[[ -L $ROOT/bin/sh && -L $ROOT/sbin/init && -L $ROOT/sbin/acpid ]] || die "busybox lacks sh/init/acpid"

# kernel + modules
KROOT=$WORK/kernel
mkdir -p "$KROOT"
dpkg-deb -x "$(deb_of "$KPKG")" "$KROOT"
VMLINUZ=$(find "$KROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[[ -n $VMLINUZ ]] || die "no vmlinuz in $KPKG"
KVER=${VMLINUZ##*/vmlinuz-}
if [[ ! -d $KROOT/lib/modules/$KVER && -d $KROOT/usr/lib/modules/$KVER ]]; then
    mkdir -p "$KROOT/lib"
    ln -s ../usr/lib/modules "$KROOT/lib/modules"
fi
[[ -d $KROOT/lib/modules/$KVER ]] || die "no modules for $KVER in $KPKG"
depmod -b "$KROOT" "$KVER"

MODDIR=lib/modules/$KVER
mkdir -p "$ROOT/$MODDIR"
declare -A have_mod=()
LOADABLE=()
MODFILES=()
for m in "${KMODS[@]}"; do
    deps=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m") || die "kernel module $m not found"
    if ! grep -q '^insmod ' <<<"$deps"; then
        log "module $m is built in"
        continue
    fi
    LOADABLE+=("$m")
    while read -r _ path _; do
        rel=${path#"$KROOT"/}
        rel=${rel#usr/} # usr/lib/modules -> lib/modules
        [[ -n ${have_mod[$rel]:-} ]] && continue
        have_mod[$rel]=1
        MODFILES+=("${rel%.ko*}.ko")
        mkdir -p "$ROOT/$(dirname "$rel")"
        # busybox modprobe/insmod can't rely on decompression: store plain .ko
        case $path in
        *.ko) cp "$path" "$ROOT/$rel" ;;
        *.ko.xz) xz -dc "$path" >"$ROOT/${rel%.xz}" ;;
        *.ko.zst) zstd -qdc "$path" >"$ROOT/${rel%.zst}" ;;
        *.ko.gz) gzip -dc "$path" >"$ROOT/${rel%.gz}" ;;
        *) die "unexpected module file $path" ;;
        esac
    done < <(grep '^insmod ' <<<"$deps")
done
for f in modules.builtin modules.builtin.modinfo; do
    [[ -f $KROOT/$MODDIR/$f ]] && cp "$KROOT/$MODDIR/$f" "$ROOT/$MODDIR/"
done
printf '%s\n' "${MODFILES[@]#"$MODDIR"/}" >"$ROOT/$MODDIR/modules.order"
depmod -b "$ROOT" "$KVER"
# keep only what busybox modprobe reads
find "$ROOT/$MODDIR" -maxdepth 1 \( -name 'modules.*.bin' -o -name modules.builtin.modinfo \) -delete
mkdir -p "$ROOT/etc/vmgw"
printf '%s\n' "${LOADABLE[@]}" >"$ROOT/etc/vmgw/modules"

# qemu-ga + exactly the shared libraries it links against
LIBROOT=$WORK/libs
mkdir -p "$LIBROOT"
for p in qemu-guest-agent $LIBPKGS; do
    dpkg-deb -x "$(deb_of "$p")" "$LIBROOT"
done
QGA=$LIBROOT/usr/sbin/qemu-ga
LDSO=$LIBROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[[ -x $QGA && -x $LDSO ]] || die "qemu-ga or the dynamic loader missing from the packages"
LIBPATH=$LIBROOT/lib/x86_64-linux-gnu:$LIBROOT/usr/lib/x86_64-linux-gnu
ldlist=$("$LDSO" --inhibit-cache --library-path "$LIBPATH" --list "$QGA") ||
    die "cannot resolve qemu-ga libraries: $ldlist"
if grep -q 'not found' <<<"$ldlist"; then
    die "qemu-ga libraries missing: $(grep 'not found' <<<"$ldlist" | tr -s ' \t\n' ' ')"
fi
install -m 0755 "$QGA" "$ROOT/usr/sbin/qemu-ga"
install -m 0755 "$LDSO" "$ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$ROOT/lib64/ld-linux-x86-64.so.2"
while read -r lib; do
    [[ $lib == */ld-linux-x86-64.so.2 ]] && continue
    install -m 0755 "$(readlink -f "$lib")" "$ROOT/lib/x86_64-linux-gnu/${lib##*/}"
done < <(sed -n 's/^.* => \(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' <<<"$ldlist")

# console keymaps (see KEYMAPS): ckbcomp is perl, loadkeys runs on the host
KBDROOT=$WORK/kbd
mkdir -p "$KBDROOT" "$ROOT/etc/vmgw/keymaps"
for p in console-setup xkb-data kbd; do
    dpkg-deb -x "$(deb_of "$p")" "$KBDROOT"
done
command -v perl >/dev/null || die "perl is needed to run ckbcomp"
for km in "${KEYMAPS[@]}"; do
    perl "$KBDROOT/usr/bin/ckbcomp" "-I$KBDROOT/usr/share/X11/xkb" -model pc105 -layout "${km#*:}" \
        2>/dev/null >"$WORK/keymap.txt" || die "ckbcomp failed for ${km#*:}"
    "$KBDROOT/bin/loadkeys" -q -b -u "$WORK/keymap.txt" >"$ROOT/etc/vmgw/keymaps/${km%%:*}.bmap" ||
        die "loadkeys -b failed for ${km#*:}"
done

# the clipboard agent (vmgw-clip/vmgw-clip.c), static so that it needs no library
command -v cc >/dev/null || die "a C compiler (cc) is needed for vmgw-clip"
cc -static -Os -Wall -o "$ROOT/usr/bin/vmgw-clip" "$SCRIPT_DIR/vmgw-clip/vmgw-clip.c" ||
    die "cannot build vmgw-clip (needs gcc and libc6-dev)"

# our files (/init, /etc/...); scripts executable whatever the checkout says
cp -R --preserve=mode,links "$ROOTFS_SRC"/. "$ROOT"/
while IFS= read -r -d '' f; do
    [[ $(head -c2 "$f") == '#!' ]] && chmod 0755 "$f"
done < <(find "$ROOT/init" "$ROOT/etc" -type f -print0)
[[ -x $ROOT/init ]] || die "rootfs/init missing"

# pack (newc, root-owned, sorted, fixed mtimes: reproducible)
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -mindepth 1 -print0 | sort -z |
    cpio --null --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >"$STAGE/initrd.img"
cp "$VMLINUZ" "$STAGE/vmlinuz"

# Optional fast path: the uncompressed ELF vmlinux inside the bzImage. QEMU
# boots it directly through its PVH entry point, skipping the ~4 s of XZ
# decompression under TCG. Caveat: a PVH boot has no VGA text console (tty1 is
# a dummy console), so use vmlinuz for anything that looks at the screen.
extract_vmlinux() {
    local magic tool off
    for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${magic%%:*}
        command -v "$tool" >/dev/null || continue
        while read -r off; do
            case $tool in
            xz) tail -c +$((off + 1)) "$VMLINUZ" | xz -dcq --single-stream >"$1" 2>/dev/null || true ;;
            zstd) tail -c +$((off + 1)) "$VMLINUZ" | zstd -dcq >"$1" 2>/dev/null || true ;;
            gzip) tail -c +$((off + 1)) "$VMLINUZ" | gzip -dcq >"$1" 2>/dev/null || true ;;
            esac
            [[ $(head -c 4 "$1" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] && return 0
        done < <(grep -aboP "${magic#*:}" "$VMLINUZ" | cut -d: -f1 | head -n 5)
    done
    rm -f "$1"
    return 1
}
if extract_vmlinux "$STAGE/vmlinux"; then
    HAVE_VMLINUX=1
else
    HAVE_VMLINUX=0
    log "warning: could not extract the ELF vmlinux (PVH fast path) from $VMLINUZ"
fi

{
    echo "inputs=$HASH"
    echo "kernel_pkg=$KPKG"
    echo "kernel_version=$KVER"
    echo "modules=${LOADABLE[*]}"
    echo "packages:"
    for f in "$WORK"/debs/*.deb; do
        echo "  $(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version)"
    done
} >"$STAGE/build-info.txt"

# ------------------------------------------------------------ move into place
# Each rename is atomic; the stamp goes last so a half-replaced set is never
# considered fresh.
rm -f "$OUTDIR/stamp"
mv -f "$STAGE/vmlinuz" "$OUTDIR/vmlinuz"
mv -f "$STAGE/initrd.img" "$OUTDIR/initrd.img"
if ((HAVE_VMLINUX)); then
    mv -f "$STAGE/vmlinux" "$OUTDIR/vmlinux"
else
    rm -f "$OUTDIR/vmlinux" # never leave one from another kernel version
fi
mv -f "$STAGE/build-info.txt" "$OUTDIR/build-info.txt"
echo "$HASH" >"$STAGE/stamp"
mv -f "$STAGE/stamp" "$OUTDIR/stamp"

log "done: kernel $KVER, initrd $(du -k "$OUTDIR/initrd.img" | cut -f1) KiB"
