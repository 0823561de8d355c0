#!/usr/bin/env bash
# Build (or find cached) the Debian bookworm VM image of the kernel test tier (`make test-kernel`): systemd as PID 1
# on cgroup v2, run under QEMU with software emulation. Recipe: ../shared/PLATFORMS.md, section "systemd as PID 1
# with cgroup v2: a QEMU VM".
#
#   scripts/kernel_vm/build_image.sh              build when missing; print the image directory on the last line
#   scripts/kernel_vm/build_image.sh --print-dir  print the image directory only (built or not)
#
# The image lives in .cache/kernel-vm/<key>/ where <key> hashes the recipe (this script and scripts/kernel_vm/guest/),
# so changing the recipe builds a new image. Contents: base.raw (ext4, the root file system; never written to: each
# test session boots a qcow2 overlay on it), vmlinuz, initrd.img, build.log.
#
# Needs root (mmdebstrap in root mode, apt-get); installs qemu-system-x86, qemu-utils and mmdebstrap with apt-get when
# they are missing. The Debian mirror is the one this host's apt uses (never hard-coded here).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache_root="$repo/.cache/kernel-vm"
packages=qemu-system-x86,qemu-utils,mmdebstrap
# The guest's packages (PLATFORMS.md): systemd as init, the kernel and an initramfs builder, Python with venv support
# for memmon, procps for ps/pgrep in test scripts.
include=systemd,systemd-sysv,udev,dbus,kmod,initramfs-tools,linux-image-amd64,python3,python3-venv,procps
disk_size=3G

key="$(cat "${BASH_SOURCE[0]}" "$here"/guest/* | sha256sum | cut -c1-16)"
dir="$cache_root/$key"

if [ "${1:-}" = --print-dir ]; then
    echo "$dir"
    exit 0
elif [ "$#" -gt 0 ]; then
    case "$1" in
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_image: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
fi

if [ -f "$dir/base.raw" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
    echo "kernel-vm: cached image $dir"
    echo "$dir"
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "kernel-vm: building the image needs root (mmdebstrap, apt-get)" >&2; exit 1; }

missing=""
for p in ${packages//,/ }; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "kernel-vm: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The host's own Debian sources for bookworm (one-line or deb822 format), reduced to "deb URI SUITE main" lines.
sources="$("$repo/scripts/debian_sources.py" bookworm)"
[ -n "$sources" ] || { echo "kernel-vm: no Debian bookworm source in /etc/apt (needed for mmdebstrap)" >&2; exit 1; }

mkdir -p "$cache_root"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir "$rootfs"
printf '%s\n' "$sources" >"$work/sources.list"
echo "kernel-vm: building $dir (mmdebstrap, about 2 minutes; log: $work/build.log)"
start=$SECONDS
{
    echo "sources:"
    cat "$work/sources.list"
    mmdebstrap --variant=apt --mode=root --include="$include" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --customize-hook="\"$here/guest/customize.sh\" \"\$1\"" \
        bookworm "$rootfs" "$work/sources.list"
} >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; echo "kernel-vm: mmdebstrap failed" >&2; exit 1; }

# The kernel and initramfs boot directly (-kernel/-initrd), no boot loader in the image.
cp "$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -n 1)" "$work/vmlinuz"
cp "$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -n 1)" "$work/initrd.img"
# A raw ext4 disk filled from the directory (mke2fs -d): no loop mount needed.
truncate -s "$disk_size" "$work/base.raw"
mke2fs -q -t ext4 -L root -d "$rootfs" "$work/base.raw" >>"$work/build.log" 2>&1
rm -rf "$rootfs"
echo "built in $((SECONDS - start)) s" >>"$work/build.log"

rm -rf "$dir"
mkdir "$dir"
mv "$work/base.raw" "$work/vmlinuz" "$work/initrd.img" "$work/build.log" "$dir/"
# Images of older recipes are of no further use (about 700 MB each).
for old in "$cache_root"/*; do
    name="$(basename "$old")"
    if [ -d "$old" ] && [ "$name" != "$key" ] && [[ "$name" =~ ^[0-9a-f]{16}$ ]]; then rm -rf "$old"; fi
done
echo "kernel-vm: built $dir in $((SECONDS - start)) s"
echo "$dir"
