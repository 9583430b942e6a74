#!/usr/bin/env bash
# Build the tiny bootable test VM without downloading a disk image.
#
#   deploy/images/vm/build-test-vm.sh [--force] [--refresh-kernel] [--print-dir] [--help]
#
# Result: an image directory in the QEMU runner's convention (runners/qemu.py):
#
#   $LABS_VM_CACHE/testvm/          (default /var/cache/labs-images/vm/testvm)
#       disk.qcow2    the base disk: 64 MiB qcow2 whose first sector says LABS-TEST-VM-DISK
#       vmlinuz       the Debian cloud kernel (linux-image-<abi>-cloud-amd64, from Debian's archive)
#       initrd.img    busybox-static initramfs: /init mounts proc/sys/dev, loads the virtio and
#                     ACPI button modules, prints a banner on ttyS0 and the VGA console, runs acpid
#                     (an ACPI power button press powers the VM off) and a root shell on ttyS0 and
#                     on tty1 (the VNC screen), respawned when they exit
#       cmdline       the kernel command line
#       build.sha256  the hash of the inputs this directory was built from
#
# Idempotent: with an up-to-date build.sha256 it does nothing (well under a second). The kernel
# package and busybox-static are kept in $LABS_VM_CACHE/debs; --refresh-kernel looks up the newest
# cloud kernel again (needs Debian's archive), --force rebuilds everything from the cached debs.
# Needs: apt-get, dpkg-deb, cpio, gzip, qemu-img (qemu-utils). Runs as root or any user who can
# write the cache directory (apt-get download needs no root).
set -euo pipefail
export LC_ALL=C

readonly RECIPE_VERSION=2   # bump when the recipe changes in a way the hash below cannot see
CACHE=${LABS_VM_CACHE:-/var/cache/labs-images/vm}
OUT=$CACHE/testvm
DEBS=$CACHE/debs
FORCE=0
REFRESH=0
PRINT_DIR=0

# Modules loaded by /init, dependencies first (the initramfs has no modules.dep).
MODULES=(
    drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
    drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
    net/core/failover drivers/net/net_failover drivers/net/virtio_net
    drivers/acpi/button drivers/input/evdev
)

say() { printf '[test-vm] %s\n' "$*" >&2; }
die() { printf '[test-vm] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --force|-f) FORCE=1 ;;
        --refresh-kernel) REFRESH=1 ;;
        --print-dir) PRINT_DIR=1 ;;
        --help|-h) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done

for tool in apt-get apt-cache dpkg-deb cpio gzip qemu-img sha256sum flock; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y qemu-utils cpio)"
done

mkdir -p "$CACHE" "$DEBS"
exec 9>"$CACHE/.lock"
flock 9   # one build at a time; a second caller waits, then finds the result up to date

# apt-get download writes as the _apt user when it can; a root-owned cache is fine as root.
APT_OPTS=(-o APT::Sandbox::User=root -qq)

fetch_deb() {  # fetch_deb PACKAGE: download into $DEBS unless a .deb of it is already there
    local pkg=$1 found
    found=$(find "$DEBS" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n 1)
    if [ -n "$found" ]; then echo "$found"; return; fi
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        say "apt-get update (no package lists for $pkg)"
        apt-get update -qq >&2
    fi
    say "downloading $pkg"
    (cd "$DEBS" && apt-get download "${APT_OPTS[@]}" "$pkg" >&2)
    found=$(find "$DEBS" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n 1)
    [ -n "$found" ] || die "apt-get download $pkg left no .deb in $DEBS"
    echo "$found"
}

kernel_package() {
    # The flavour metapackage names the current ABI, e.g. linux-image-6.1.0-56-cloud-amd64.
    local cached name
    cached=$(find "$DEBS" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' -printf '%f\n' | sort -V | tail -n 1)
    if [ -n "$cached" ] && [ "$REFRESH" -eq 0 ]; then echo "${cached%%_*}"; return; fi
    if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || [ "$REFRESH" -eq 1 ]; then
        say "apt-get update (looking up the current cloud kernel)"
        apt-get update -qq >&2
    fi
    name=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [ -n "$name" ] || die "cannot find the kernel package behind linux-image-cloud-amd64"
    echo "$name"
}

KERNEL_DEB=$(fetch_deb "$(kernel_package)")
BUSYBOX_DEB=$(fetch_deb busybox-static)

SELF_HASH=$(sha256sum "$0" | cut -c1-64)
INPUT_HASH=$(printf '%s\n' "$RECIPE_VERSION" "$SELF_HASH" "$(basename "$KERNEL_DEB")" "$(basename "$BUSYBOX_DEB")" \
    | sha256sum | cut -c1-64)
if [ "$FORCE" -eq 0 ] && [ -f "$OUT/build.sha256" ] && [ "$(cat "$OUT/build.sha256")" = "$INPUT_HASH" ]; then
    say "up to date: $OUT"
    [ "$PRINT_DIR" -eq 1 ] && echo "$OUT"
    exit 0
fi

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say "unpacking $(basename "$KERNEL_DEB")"
dpkg-deb -x "$KERNEL_DEB" "$WORK/kernel"
VMLINUZ=$(find "$WORK/kernel/boot" -name 'vmlinuz-*' | head -n 1)
[ -n "$VMLINUZ" ] || die "no vmlinuz in $KERNEL_DEB"
MODDIR=$(find "$WORK/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)

say "unpacking $(basename "$BUSYBOX_DEB")"
dpkg-deb -x "$BUSYBOX_DEB" "$WORK/busybox"
BUSYBOX=$WORK/busybox/bin/busybox
[ -x "$BUSYBOX" ] || die "no bin/busybox in $BUSYBOX_DEB"

say "laying out the initramfs"
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS"/{bin,dev,etc/acpi,lib/modules,proc,root,sys,tmp,run}
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$ROOTFS/bin/$applet"
done
ln -s bin "$ROOTFS/sbin"
for module in "${MODULES[@]}"; do
    src=$MODDIR/kernel/$module.ko
    [ -f "$src" ] || src=$(find "$MODDIR" -name "$(basename "$module").ko*" | head -n 1)
    [ -n "$src" ] && [ -f "$src" ] || die "module $module not found in the kernel package"
    case "$src" in
        *.ko.xz) xz -dc "$src" >"$ROOTFS/lib/modules/$(basename "$module").ko" ;;
        *) cp "$src" "$ROOTFS/lib/modules/$(basename "$module").ko" ;;
    esac
done
printf '%s\n' "${MODULES[@]##*/}" >"$ROOTFS/lib/modules/load-order"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\n' >"$ROOTFS/etc/group"
# busybox acpid runs <config dir>/PWRF/00000080 for the power button (QMP system_powerdown).
mkdir -p "$ROOTFS/etc/acpi/PWRF"
printf '#!/bin/sh\necho "LABS TEST VM: power button, powering off" >/dev/ttyS0\npoweroff -f\n' \
    >"$ROOTFS/etc/acpi/PWRF/00000080"
chmod 0755 "$ROOTFS/etc/acpi/PWRF/00000080"

cat >"$ROOTFS/init" <<'INIT'
#!/bin/sh
# PID 1 of the labs test VM. Never exits (the kernel would panic). busybox's poweroff, halt and
# reboot ask PID 1 by signal (USR2, USR1, TERM), as its own init would take them.
export PATH=/bin HOME=/root TERM=linux PS1='labvm# '
trap 'sync; poweroff -f' USR2
trap 'sync; halt -f' USR1
trap 'sync; reboot -f' TERM
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for module in $(cat /lib/modules/load-order); do insmod "/lib/modules/$module.ko" 2>/dev/null; done
hostname labvm
disk=none
[ -b /dev/vda ] && disk="/dev/vda ($(head -c 17 /dev/vda 2>/dev/null | tr -cd 'A-Z-'))"
banner="LABS TEST VM ready: Linux $(uname -r), disk $disk"
echo "$banner" >/dev/ttyS0
# Something to see on the VGA console (the VNC screen): a coloured title bar over the kernel log.
printf '\033[1;37;44m%-79s\033[0m\n%s\n' "  Labs test VM" "$banner" >/dev/tty0
acpid -c /etc/acpi -l /dev/null 2>/dev/null
shell_on() {  # a root shell with $1 as its controlling terminal, started again when it exits
    while :; do setsid sh -c "exec sh -i <>$1 >&0 2>&1"; sleep 0.2; done
}
shell_on /dev/ttyS0 &
shell_on /dev/tty1 &
while :; do wait; sleep 1; done
INIT
chmod 0755 "$ROOTFS/init"

say "packing initrd.img"
(cd "$ROOTFS" && find . -mindepth 1 | sort | cpio -o -H newc --owner 0:0 --quiet) | gzip -9n >"$WORK/initrd.img"

say "creating disk.qcow2"
# The first sector names the disk so the guest (and the tests) can tell it is attached.
printf 'LABS-TEST-VM-DISK\n' >"$WORK/disk.raw"
truncate -s 64M "$WORK/disk.raw"
qemu-img convert -q -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk.qcow2"

mkdir -p "$OUT.new"
cp "$VMLINUZ" "$OUT.new/vmlinuz"
mv "$WORK/initrd.img" "$WORK/disk.qcow2" "$OUT.new/"
printf 'console=ttyS0 console=tty0 quiet panic=10\n' >"$OUT.new/cmdline"
echo "$INPUT_HASH" >"$OUT.new/build.sha256"
chmod 0644 "$OUT.new"/*
chmod 0755 "$OUT.new"
rm -rf "$OUT.old"
[ -d "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$OUT.new" "$OUT"
rm -rf "$OUT.old"
say "built $OUT ($(du -sh "$OUT" | cut -f1)): $(basename "$KERNEL_DEB" .deb), $(basename "$BUSYBOX_DEB" .deb)"
[ "$PRINT_DIR" -eq 1 ] && echo "$OUT"
exit 0
