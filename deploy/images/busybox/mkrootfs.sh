#!/bin/sh
# Lay out the labs/busybox:latest root filesystem.
#   mkrootfs.sh ROOTFS BUSYBOX
# ROOTFS must not exist yet; BUSYBOX is a statically linked busybox binary
# (Debian's busybox-static). Needs root (chroot, chown). The result is a
# ~2 MB tree: busybox applets as symlinks in /bin, root and a `learner`
# user (uid 1000) with /home/learner and /workspace owned by 1000.
set -eu

root=$1
busybox=$2

if [ -e "$root" ]; then
    echo "mkrootfs.sh: $root already exists" >&2
    exit 1
fi

mkdir -p "$root"
cd "$root"
mkdir -p bin etc root home/learner workspace tmp usr/bin proc sys dev
chmod 0700 root
chmod 1777 tmp

install -m 0755 "$busybox" bin/busybox
# Inside the chroot busybox cannot read /proc/self/exe, so it links every
# applet to its argv[0], /bin/busybox: the path it has in the image.
chroot "$root" /bin/busybox --install -s /bin
# Scripts starting with #!/usr/bin/env find it.
ln -s /bin/env usr/bin/env

cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
learner:x:1000:1000:learner:/home/learner:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
learner:x:1000:
nogroup:x:65534:
GROUP
chmod 0644 etc/passwd etc/group
echo 'hosts: files dns' > etc/nsswitch.conf

chown 1000:1000 home/learner workspace
chmod 0755 home/learner workspace
