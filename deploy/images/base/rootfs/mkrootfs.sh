#!/bin/bash
# Build the bookworm root filesystem tarball behind labs/base:bookworm.
#   mkrootfs.sh OUT_TAR MIRROR SECURITY_MIRROR [DEB_CACHE_DIR]
# debootstrap --variant=minbase plus packages.txt, apt pointed at MIRROR
# (bookworm, bookworm-updates) and SECURITY_MIRROR (bookworm-security),
# security updates applied, caches and lists removed. Needs root and
# debootstrap; about 1-3 minutes and ~100 MB of downloads. DEB_CACHE_DIR
# keeps debootstrap's downloaded packages for the next run.
set -euo pipefail

out=$1
mirror=$2
security_mirror=$3
deb_cache=${4:-}
suite=bookworm

here=$(cd "$(dirname "$0")" && pwd)
include=$(sed -e 's/#.*//' "$here/packages.txt" | xargs | tr ' ' ',')

work=$(mktemp -d "$(dirname "$out")/rootfs-work.XXXXXX")
rootfs=$work/rootfs

cleanup() {
    # A failed debootstrap or chroot step can leave /proc or /sys mounted
    # inside the tree: unmount before deleting anything.
    local mnt
    for mnt in $(findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r || true); do
        umount -l "$mnt" || true
    done
    rm -rf --one-file-system "$work" || true
}
trap cleanup EXIT

cache_opt=()
if [ -n "$deb_cache" ]; then
    mkdir -p "$deb_cache"
    cache_opt=(--cache-dir="$(cd "$deb_cache" && pwd)")
fi
debootstrap --variant=minbase "${cache_opt[@]}" --include="$include" "$suite" "$rootfs" "$mirror"

rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Never start services from package scripts inside an image build or a
# running lab container (there is no init system to hand them to).
cat > "$rootfs/usr/sbin/policy-rc.d" <<'POLICY'
#!/bin/sh
exit 101
POLICY
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"

# Keep image layers small: no downloaded .debs or binary caches are left
# behind by apt, and no translated package descriptions are fetched.
cat > "$rootfs/etc/apt/apt.conf.d/90labs-container" <<'APTCONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APTCONF

# No manual pages (there is no man-db), documentation besides the copyright
# files, or message translations: about 70 MB. A lab image that wants them
# deletes /etc/dpkg/dpkg.cfg.d/90labs-slim and reinstalls the packages.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/90labs-slim" <<'DPKGCFG'
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKGCFG
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

# Security and point updates on top of what debootstrap installed.
cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" apt-get update
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" \
    apt-get -y -o Dpkg::Options::=--force-confold upgrade
chroot "$rootfs" apt-get clean
umount "$rootfs/proc"

# Docker provides /dev, /etc/resolv.conf, /etc/hostname and /etc/hosts.
rm -rf "${rootfs:?}"/dev/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/apt/*
rm -f "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
: > "$rootfs/etc/resolv.conf"
echo localhost > "$rootfs/etc/hostname"

tar --numeric-owner -C "$rootfs" -cf "$out.part" .
mv "$out.part" "$out"
