# Shared steps for run.sh and test.sh. Sourced, not executed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m[labs]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[labs] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_install() {
  # Install Debian packages that are missing; one apt-get update per run at most.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ "$APT_UPDATED" -eq 0 ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_kubectl() {
  # Debian's kubectl (kubernetes-client, 1.20): a second real client the Kubernetes API double is
  # checked against. Where another package owns /usr/bin/kubectl (the Google Cloud SDK's), the
  # Debian package is unpacked under var/tools instead of fighting over that path.
  local owner
  owner=$(dpkg -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)
  if [ -z "$owner" ] || [ "$owner" = "kubernetes-client" ]; then
    apt_install kubernetes-client
    export LAB_TEST_KUBECTL=/usr/bin/kubectl
    return
  fi
  local dest="$ROOT/var/tools/kubernetes-client"
  if [ ! -x "$dest/usr/bin/kubectl" ]; then
    say "unpacking Debian's kubernetes-client into $dest (/usr/bin/kubectl belongs to $owner)"
    if [ "$APT_UPDATED" -eq 0 ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
    local work
    work=$(mktemp -d)
    (cd "$work" && apt-get download -qq kubernetes-client) || die "could not download kubernetes-client"
    mkdir -p "$dest"
    dpkg -x "$work"/kubernetes-client_*.deb "$dest"
    rm -rf "$work"
  fi
  export LAB_TEST_KUBECTL="$dest/usr/bin/kubectl"
}

ensure_python() {
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv python3-pip
  fi
  if [ ! -x "$PY" ]; then
    say "creating the virtualenv in .venv"
    python3 -m venv "$VENV"
  fi
  local req="${1:-requirements.txt}"
  local stamp="$VENV/.installed-$(sha256sum "$req" requirements.txt | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "installing Python packages from $req"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q -r "$req"
    touch "$stamp"
  fi
}

ensure_sandbox_tools() {
  apt_install bubblewrap iptables ca-certificates
}

docker_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_docker() {
  apt_install docker.io
  if ! docker_answers; then
    say "starting dockerd"
    $SUDO sh -c 'nohup dockerd --host unix:///var/run/docker.sock >/var/log/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do docker_answers && break; sleep 1; done
    docker_answers || die "dockerd did not start; see /var/log/dockerd.log"
  fi
  ensure_rootless_dind_host
}

ensure_rootless_dind_host() {
  # Docker-in-Docker sessions run a rootless engine whose network needs /dev/net/tun. Debian's udev
  # makes it 0666 (opening it grants nothing: a tap device is made only in a namespace one owns);
  # machines without udev leave it 0600, so set what udev would.
  if [ ! -c /dev/net/tun ]; then
    $SUDO mkdir -p /dev/net
    $SUDO mknod -m 0666 /dev/net/tun c 10 200 || die "cannot create /dev/net/tun (Docker-in-Docker labs need it)"
  fi
  [ "$(stat -c %a /dev/net/tun)" = 666 ] || $SUDO chmod 0666 /dev/net/tun
  # Session disks (a size-limited filesystem per session) need mkfs.ext4 and loop devices.
  command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs
}

ensure_qemu_user() {
  # The QEMU runner drops each VM to this user (-runas) when the platform runs as root; bridge-mode
  # VM labs need it, since the host's firewall fence matches the VM's traffic by this user.
  id labs-qemu >/dev/null 2>&1 || $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin labs-qemu
}

ensure_images() {
  say "building lab images (cached after the first run)"
  bash "$ROOT/deploy/scripts/build-images.sh" "$@"
}
