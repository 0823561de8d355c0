#!/usr/bin/env bash
# mmdebstrap --customize-hook for the kernel test VM (scripts/kernel_vm/build_image.sh): runs on the host with the
# finished root file system in $1. Steps from ../shared/PLATFORMS.md ("systemd as PID 1 with cgroup v2").
set -euo pipefail
root="$1"
guest="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

echo kernel-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 kernel-vm\n' >"$root/etc/hosts"
# The disk is /dev/vda (virtio-blk); the 9p share is mounted by the job runner itself.
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' >"$root/etc/fstab"
# Console login without a password (debugging through the serial console; the VM has no network).
chroot "$root" passwd -d root >/dev/null

# A small initramfs with only what this VM needs (6.7 MB instead of 36 MB with MODULES=most: a faster boot).
printf '%s\n' virtio_pci virtio_blk ext4 9p 9pnet_virtio >>"$root/etc/initramfs-tools/modules"
echo 'MODULES=list' >"$root/etc/initramfs-tools/conf.d/kernel-vm"
chroot "$root" update-initramfs -u -k all

# Nothing periodic that would compete with the tests for the emulated CPU.
for timer in apt-daily.timer apt-daily-upgrade.timer man-db.timer fstrim.timer e2scrub_all.timer \
    dpkg-db-backup.timer; do
    chroot "$root" systemctl mask "$timer" >/dev/null 2>&1 || true
done

# The job runner: scripts dropped into the 9p share's queue/ run as root (see kt-runner).
install -m 0755 "$guest/kt-runner" "$root/usr/local/sbin/kt-runner"
install -m 0644 "$guest/kt-runner.service" "$root/etc/systemd/system/kt-runner.service"
chroot "$root" systemctl enable kt-runner.service >/dev/null 2>&1

# Keep the apt lists out of the image (no network inside anyway).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
