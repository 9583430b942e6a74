#!/usr/bin/env bash
# Build the local lab images without any container registry.
#
#   deploy/scripts/build-images.sh [OPTIONS] [all | busybox | base | dind | python | qemu ...]
#
# Images (deploy/images/README.md has the details):
#   labs/busybox:latest   busybox-static rootfs, ~2 MB, for fast tests
#   labs/base:bookworm    debootstrap minbase + lab tools, users learner/judge
#   labs/dind:bookworm    labs/base + docker.io, an engine of its own
#   labs/qemu:bookworm    labs/base + QEMU and socat: the runner image of VM labs
#                         on the Docker runner (runners/docker_vm.py)
#   labs/killercoda:bookworm  labs/base + Docker's CLI, ssh, jq, vim…: the host imported
#                         Killercoda scenarios run on (root's shell; the engine sits beside it)
#   labs/python:3.11-slim Debian's Python 3.11 + pip + venv, flattened (~150 MB),
#                         with the wheels of deploy/images/python/wheels.txt
#   labs/python:3.11      labs/python:3.11-slim + build-essential, python3-dev
#                         (~470 MB); both for the Dockerfile demo labs
# With no image named: all of them (busybox, base, dind, python, qemu and killercoda).
# An image is rebuilt only when its org.labs.build-hash label differs from
# the hash of its inputs (its deploy/images/NAME directory, the image it is
# built from, the packages it is made of), so a second run takes seconds.
#
# Options:
#   --force, -f       rebuild the named images (default set: all of them)
#                     even when up to date, without Docker's layer cache
#   --refresh-rootfs  run debootstrap again instead of using the cached tarball
#   --with-qemu       accepted for old callers; qemu is built by default now
#   --test-dind       afterwards, check that labs/dind:bookworm runs an inner
#                     `docker run` and `docker build` on this host
#   --verbose, -v     show the build output (default: logged to a file)
#   --help, -h
#
# Environment:
#   LABS_IMAGES_CACHE            cache and logs (/var/cache/labs-images)
#   LABS_DEBIAN_MIRROR           http://deb.debian.org/debian
#   LABS_DEBIAN_SECURITY_MIRROR  http://deb.debian.org/debian-security
#   LABS_DIND_RUN_OPTS           `docker run` options for --test-dind, as
#                                shell words (default: the rootless recipe in
#                                DIND_ROOTLESS_OPTS below, as the platform runs it)
#   DOCKER_BUILDKIT              0 unless set (the classic builder is on every
#                                Docker install and needs no registry)
set -euo pipefail

readonly HASH_LABEL=org.labs.build-hash
readonly RECIPE_VERSION=1   # bump to force every image to rebuild
readonly SUITE=bookworm

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGES_DIR=$REPO_ROOT/deploy/images
CACHE_DIR=${LABS_IMAGES_CACHE:-/var/cache/labs-images}
MIRROR=${LABS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LABS_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
export LC_ALL=C

FORCE=0
REFRESH_ROOTFS=0
WITH_QEMU=0
TEST_DIND=0
VERBOSE=0
NAMED=()

# How the platform runs labs/dind by default: as learner, a rootless engine inside (see
# deploy/images/README.md). seccomp=unconfined stands in for the runner's own profile here.
DIND_ROOTLESS_OPTS=(
    --user learner
    --cap-drop ALL --cap-add SETUID --cap-add SETGID
    --security-opt seccomp=unconfined
    --security-opt systempaths=unconfined
    --device /dev/net/tun
    --tmpfs /var/lib/labs-docker:exec,uid=1000,gid=1000
)

log() { printf '[images] %s\n' "$*"; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$1' needs root; run this script as root"
    fi
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] || run_logged apt-update as_root apt-get update
    APT_UPDATED=1
}

apt_install() {
    apt_update
    run_logged apt-install as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

sha256() { sha256sum | cut -d' ' -f1; }

# Hash of a directory: every file's relative path, mode and contents.
tree_hash() {
    (
        cd "$1"
        find . -type f -print0 | LC_ALL=C sort -z |
            while IFS= read -r -d '' f; do
                printf '%s %s %s\n' "$(stat -c %a "$f")" "$f" "$(sha256sum < "$f" | cut -d' ' -f1)"
            done
    ) | sha256
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }

image_hash() {
    docker image inspect -f "{{with .Config.Labels}}{{index . \"$HASH_LABEL\"}}{{end}}" "$1" 2>/dev/null || true
}

image_size() {
    docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'
}

# up_to_date IMAGE HASH FORCE: true when IMAGE exists with HASH and FORCE is 0.
up_to_date() {
    [ "$3" = 0 ] && [ "$(image_hash "$1")" = "$2" ]
}

# run_logged NAME CMD...: run CMD with its output in $CACHE_DIR/logs/NAME.log
# (and on the terminal with --verbose); on failure show the log's end.
run_logged() {
    local name=$1 logfile=$CACHE_DIR/logs/$1.log status=0
    shift
    if [ "$VERBOSE" = 1 ]; then
        "$@" 2>&1 | tee "$logfile" || status=$?
    else
        "$@" > "$logfile" 2>&1 || status=$?
    fi
    if [ "$status" != 0 ]; then
        [ "$VERBOSE" = 1 ] || tail -n 40 "$logfile" >&2
        die "$name failed (exit $status); full log: $logfile"
    fi
}

# force_for NAME: 1 when --force applies to image NAME (it was named, or
# nothing was named and NAME is in the default set).
force_for() {
    local n
    [ "$FORCE" = 1 ] || { echo 0; return; }
    for n in "${NAMED[@]}"; do
        if [ "$n" = "$1" ]; then echo 1; return; fi
    done
    echo 0
}

built() {
    # built IMAGE START: report a finished build.
    log "built $1 in $(since "$2") s ($(image_size "$1"))"
}

fresh() {
    log "$1 is up to date ($(image_size "$1"), hash ${2:0:12})"
}

# --- labs/busybox:latest ----------------------------------------------------

download_busybox_static() {
    (cd "$CACHE_DIR/tmp/deb" && apt-get download -o APT::Sandbox::User=root busybox-static)
}

# Print the path of a statically linked busybox: the host's busybox-static
# if installed, else one extracted from the downloaded package (the host's
# packages are left alone).
busybox_binary() {
    if [ "$(dpkg-query -W -f '${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] \
        && [ -x /bin/busybox ]; then
        echo /bin/busybox
        return
    fi
    local dir=$CACHE_DIR/busybox-static
    if [ ! -x "$dir/bin/busybox" ]; then
        log "fetching busybox-static from the Debian archive" >&2
        rm -rf "$CACHE_DIR/tmp/deb" && mkdir -p "$CACHE_DIR/tmp/deb"
        # (Without the lists of a fresh machine the first try fails.)
        if ! download_busybox_static >/dev/null 2>&1; then
            apt_update >&2
            run_logged apt-download download_busybox_static >&2
        fi
        rm -rf "$dir.part"
        dpkg-deb -x "$CACHE_DIR"/tmp/deb/busybox-static_*.deb "$dir.part"
        rm -rf "$dir" && mv "$dir.part" "$dir"
        rm -rf "$CACHE_DIR/tmp/deb"
    fi
    echo "$dir/bin/busybox"
}

build_busybox() {
    local name=labs/busybox:latest dir=$IMAGES_DIR/busybox
    local force bb hash start work
    force=$(force_for busybox)
    bb=$(busybox_binary)
    hash=$(printf '%s\n' "recipe $RECIPE_VERSION" "busybox-dir $(tree_hash "$dir")" \
        "busybox $(sha256 < "$bb")" | sha256)
    if up_to_date "$name" "$hash" "$force"; then fresh "$name" "$hash"; return; fi

    log "building $name (busybox-static rootfs, a few seconds)..."
    start=$(now)
    work=$(mktemp -d "$CACHE_DIR/tmp/busybox.XXXXXX")
    as_root sh "$dir/mkrootfs.sh" "$work/rootfs" "$bb"
    as_root tar --numeric-owner -C "$work/rootfs" -c . |
        docker import \
            -c 'CMD ["/bin/sh"]' \
            -c "LABEL $HASH_LABEL=$hash" \
            -m "labs/busybox: busybox-static rootfs" - "$name" >/dev/null
    as_root rm -rf "$work"
    built "$name" "$start"
}

# --- labs/base:bookworm -----------------------------------------------------

build_base() {
    local name=labs/base:$SUITE rootfs_name=labs/base-rootfs:$SUITE
    local dir=$IMAGES_DIR/base force key tarball rootfs_hash hash start
    force=$(force_for base)

    # 1. The debootstrap tarball, cached outside the repository under a name
    #    that changes with everything that goes into it.
    key=$(printf '%s\n' "recipe $RECIPE_VERSION" "rootfs-dir $(tree_hash "$dir/rootfs")" \
        "suite $SUITE" "mirror $MIRROR" "security $SECURITY_MIRROR" \
        "arch $(dpkg --print-architecture)" | sha256)
    tarball=$CACHE_DIR/rootfs-$SUITE-${key:0:16}.tar
    if [ ! -s "$tarball" ] || [ "$REFRESH_ROOTFS" = 1 ]; then
        command -v debootstrap >/dev/null 2>&1 || {
            log "installing debootstrap"
            apt_install debootstrap
        }
        log "building $name (debootstrap, ~2-4 min)..."
        start=$(now)
        as_root rm -f "$tarball"
        run_logged debootstrap as_root bash "$dir/rootfs/mkrootfs.sh" "$tarball" "$MIRROR" "$SECURITY_MIRROR" "$CACHE_DIR/debs"
        # Older tarballs (other inputs) are of no further use.
        find "$CACHE_DIR" -maxdepth 1 -name "rootfs-$SUITE-*.tar" ! -path "$tarball" -exec rm -f {} +
        log "debootstrap rootfs done in $(since "$start") s ($(du -m "$tarball" | cut -f1) MB, $tarball)"
        force=1
    fi

    # 2. The tarball imported as it is.
    rootfs_hash=$(printf '%s\n' "$key" "$(stat -c '%s %Y' "$tarball")" | sha256)
    if ! up_to_date "$rootfs_name" "$rootfs_hash" "$force"; then
        log "importing $tarball as $rootfs_name..."
        start=$(now)
        docker import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'CMD ["/bin/bash"]' \
            -c "LABEL $HASH_LABEL=$rootfs_hash" \
            -m "labs/base-rootfs: debootstrap --variant=minbase $SUITE" \
            "$tarball" "$rootfs_name" >/dev/null
        built "$rootfs_name" "$start"
    fi

    # 3. The users and defaults, from deploy/images/base/Dockerfile.
    hash=$(printf '%s\n' "recipe $RECIPE_VERSION" "base-dir $(tree_hash "$dir")" \
        "from $(image_id "$rootfs_name")" | sha256)
    if up_to_date "$name" "$hash" "$force"; then fresh "$name" "$hash"; return; fi
    log "building $name (users and defaults, a few seconds)..."
    docker_build base "$name" "$hash" "$force" "$dir" --build-arg "ROOTFS_IMAGE=$rootfs_name"
}

# docker_build KEY IMAGE HASH FORCE DIR [ARGS...]
docker_build() {
    local key=$1 name=$2 hash=$3 force=$4 dir=$5 start
    shift 5
    local args=(--label "$HASH_LABEL=$hash" -t "$name" "$@")
    [ "$force" = 1 ] && args+=(--no-cache)
    start=$(now)
    run_logged "$key" docker build "${args[@]}" "$dir"
    built "$name" "$start"
}

# --- images FROM labs/base --------------------------------------------------

build_from_base() {
    local key=$1 name=$2 note=$3 dir=$IMAGES_DIR/$1 base=labs/base:$SUITE force hash
    force=$(force_for "$key")
    hash=$(printf '%s\n' "recipe $RECIPE_VERSION" "$key-dir $(tree_hash "$dir")" \
        "from $(image_id "$base")" | sha256)
    if up_to_date "$name" "$hash" "$force"; then fresh "$name" "$hash"; return; fi
    log "building $name ($note)..."
    docker_build "$key" "$name" "$hash" "$force" "$dir" --build-arg "BASE_IMAGE=$base"
}

# --- labs/python:3.11-slim and labs/python:3.11 -----------------------------

# A Python with pip on this machine, for `pip download` (the project's venv if there is one).
host_python() {
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then
        echo "$REPO_ROOT/.venv/bin/python"
        return
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "installing python3-pip (to download the lab wheels)" >&2
        apt_install python3-pip >&2
    fi
    echo python3
}

# Print the directory holding the wheels of deploy/images/python/wheels.txt, downloaded
# from PyPI once into the cache (named after the list, so a changed list downloads again).
python_wheels() {
    local list=$IMAGES_DIR/python/wheels.txt dir py
    dir=$CACHE_DIR/wheels-$(sha256 < "$list" | cut -c1-16)
    if [ ! -d "$dir" ]; then
        py=$(host_python)
        log "downloading the lab wheels ($(grep -cv '^\s*\(#\|$\)' "$list") from PyPI)" >&2
        rm -rf "$dir.part" && mkdir -p "$dir.part"
        run_logged pip-download "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.11 \
            -d "$dir.part" -r "$list" >&2
        mv "$dir.part" "$dir"
        find "$CACHE_DIR" -maxdepth 1 -name 'wheels-*' ! -path "$dir" -exec rm -rf {} +
    fi
    echo "$dir"
}

build_python() {
    local slim=labs/python:3.11-slim full=labs/python:3.11 stage=labs/python-stage:3.11-slim
    local dir=$IMAGES_DIR/python rootfs=labs/base-rootfs:$SUITE force wheels hash full_hash start work cid
    force=$(force_for python)
    wheels=$(python_wheels)
    hash=$(printf '%s\n' "recipe $RECIPE_VERSION" "python-slim-dir $(tree_hash "$dir/slim")" \
        "wheels $(tree_hash "$wheels")" "from $(image_id "$rootfs")" | sha256)
    if up_to_date "$slim" "$hash" "$force"; then
        fresh "$slim" "$hash"
    else
        log "building $slim (Python, pip and venv from the Debian archive, flattened, ~30 s)..."
        start=$(now)
        work=$(mktemp -d "$CACHE_DIR/tmp/python.XXXXXX")
        cp -a "$dir/slim/." "$work/"
        mkdir -p "$work/wheels" && cp -a "$wheels/." "$work/wheels/"
        local args=(-t "$stage" --build-arg "ROOTFS_IMAGE=$rootfs")
        [ "$force" = 1 ] && args+=(--no-cache)
        run_logged python-slim docker build "${args[@]}" "$work"
        # Flatten: the packages removed in the build leave no layer behind.
        cid=$(docker create "$stage")
        docker export "$cid" |
            docker import \
                -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                -c 'ENV LANG=C.UTF-8' \
                -c 'CMD ["python3"]' \
                -c "LABEL $HASH_LABEL=$hash" \
                -m "labs/python:3.11-slim: Debian's Python 3.11 with pip and venv" - "$slim" >/dev/null
        docker rm "$cid" >/dev/null
        docker rmi "$stage" >/dev/null 2>&1 || true
        rm -rf "$work"
        built "$slim" "$start"
        force=1
    fi
    full_hash=$(printf '%s\n' "recipe $RECIPE_VERSION" "python-full-dir $(tree_hash "$dir/full")" \
        "from $(image_id "$slim")" | sha256)
    if up_to_date "$full" "$full_hash" "$force"; then fresh "$full" "$full_hash"; return; fi
    log "building $full (build-essential and python3-dev from the Debian archive, ~40 s)..."
    docker_build python-full "$full" "$full_hash" "$force" "$dir/full" --build-arg "BASE_IMAGE=$slim"
}

# --- the Docker-in-Docker check ---------------------------------------------

dind_run_opts() {
    if [ -n "${LABS_DIND_RUN_OPTS:-}" ]; then
        # Shell words, quotes allowed: "--device-cgroup-rule 'a *:* rwm'".
        eval "DIND_OPTS=($LABS_DIND_RUN_OPTS)"
    else
        DIND_OPTS=("${DIND_ROOTLESS_OPTS[@]}")
    fi
}

test_dind() {
    local image=labs/dind:$SUITE cid="" start t_ready out preload
    dind_run_opts
    log "checking $image with: docker run -d $(printf '%q ' "${DIND_OPTS[@]}")$image"
    preload=$(mktemp -d "$CACHE_DIR/tmp/preload.XXXXXX")
    docker save labs/busybox:latest -o "$preload/busybox.tar"
    chmod 0755 "$preload"; chmod 0644 "$preload/busybox.tar"  # a rootless engine loads it as learner

    start=$(now)
    cid=$(docker run -d "${DIND_OPTS[@]}" -v "$preload:/preload:ro" "$image")
    # shellcheck disable=SC2064  # expand now: cid and preload are local
    trap "docker rm -f $cid >/dev/null 2>&1 || true; rm -rf '$preload'" EXIT

    local deadline=$((SECONDS + 45))
    until docker exec "$cid" sh -c 'test -e /run/labs-docker/ready || test -e /run/dind-ready'; do
        if [ "$(docker inspect -f '{{.State.Running}}' "$cid")" != true ] || [ "$SECONDS" -ge "$deadline" ]; then
            docker logs "$cid" >&2 || true
            die "the inner engine did not become ready"
        fi
        sleep 0.2
    done
    t_ready=$(since "$start")
    log "  inner engine ready (with /preload loaded) after $t_ready s"

    docker exec -u learner "$cid" docker image inspect labs/busybox:latest >/dev/null \
        || die "/preload/busybox.tar was not loaded"
    log "  /preload/*.tar loaded"

    start=$(now)
    docker save labs/busybox:latest | docker exec -u learner -i "$cid" docker load -q >/dev/null
    log "  docker save | docker exec -i C docker load: $(since "$start") s"

    start=$(now)
    out=$(docker exec -u learner "$cid" docker run --rm labs/busybox:latest echo hi)
    [ "$out" = hi ] || die "inner docker run printed '$out', not 'hi'"
    log "  docker exec -u learner C docker run --rm labs/busybox:latest echo hi -> $out ($(since "$start") s)"

    start=$(now)
    out=$(docker exec -u learner "$cid" sh -c '
        set -e
        mkdir -p /tmp/build && cd /tmp/build
        printf "FROM labs/busybox:latest\nRUN echo built-inside > /built\n" > Dockerfile
        docker build -q -t dind-check . >/dev/null
        docker run --rm dind-check cat /built')
    [ "$out" = built-inside ] || die "inner docker build failed: '$out'"
    log "  docker build inside (learner): ok ($(since "$start") s)"

    docker rm -f "$cid" >/dev/null
    rm -rf "$preload"
    trap - EXIT
    log "DinD check passed"
}

# --- main -------------------------------------------------------------------

main() {
    local arg want_busybox=0 want_base=0 want_dind=0 want_python=0 want_qemu=0 want_killercoda=0 total
    for arg in "$@"; do
        case "$arg" in
            --force|-f) FORCE=1 ;;
            --refresh-rootfs) REFRESH_ROOTFS=1 ;;
            --with-qemu) WITH_QEMU=1 ;;
            --test-dind) TEST_DIND=1 ;;
            --verbose|-v) VERBOSE=1 ;;
            --help|-h) usage; exit 0 ;;
            all) NAMED+=(busybox base dind python qemu killercoda) ;;
            busybox|labs/busybox|labs/busybox:latest) NAMED+=(busybox) ;;
            base|labs/base|"labs/base:$SUITE") NAMED+=(base) ;;
            dind|labs/dind|"labs/dind:$SUITE") NAMED+=(dind) ;;
            qemu|labs/qemu|"labs/qemu:$SUITE") NAMED+=(qemu) ;;
            killercoda|labs/killercoda|"labs/killercoda:$SUITE") NAMED+=(killercoda) ;;
            python|labs/python|labs/python:3.11|labs/python:3.11-slim) NAMED+=(python) ;;
            *) usage >&2; die "unknown argument: $arg" ;;
        esac
    done
    if [ "${#NAMED[@]}" = 0 ]; then
        # qemu too: VM labs run through the Docker runner in it (run.sh and test.sh need it).
        NAMED=(busybox base dind python qemu killercoda)
    fi
    [ "$WITH_QEMU" = 1 ] && NAMED+=(qemu)
    for arg in "${NAMED[@]}"; do
        case "$arg" in
            busybox) want_busybox=1 ;;
            base) want_base=1 ;;
            dind) want_dind=1; want_base=1 ;;
            qemu) want_qemu=1; want_base=1 ;;
            python) want_python=1; want_base=1 ;;
            killercoda) want_killercoda=1; want_base=1 ;;
        esac
    done
    if [ "$TEST_DIND" = 1 ]; then want_busybox=1; want_base=1; want_dind=1; fi

    command -v docker >/dev/null 2>&1 || die "docker is not installed (apt-get install docker.io)"
    docker info >/dev/null 2>&1 || die "cannot reach the Docker engine (is dockerd running?)"

    as_root mkdir -p "$CACHE_DIR"
    [ -w "$CACHE_DIR" ] || as_root chown "$(id -u):$(id -g)" "$CACHE_DIR"
    mkdir -p "$CACHE_DIR/logs" "$CACHE_DIR/tmp"

    # One build at a time per machine.
    exec 9> "$CACHE_DIR/.lock"
    if ! flock -n 9; then
        log "waiting for another build-images.sh to finish..."
        flock 9
    fi
    # Left over by an interrupted run (no other run holds the lock now).
    as_root rm -rf "${CACHE_DIR:?}"/tmp/* "$CACHE_DIR"/rootfs-work.*

    total=$(now)
    [ "$want_busybox" = 1 ] && build_busybox
    [ "$want_base" = 1 ] && build_base
    [ "$want_dind" = 1 ] && build_from_base dind "labs/dind:$SUITE" "docker.io from the Debian archive, ~30 s"
    [ "$want_qemu" = 1 ] && build_from_base qemu "labs/qemu:$SUITE" "QEMU from the Debian archive, ~30 s"
    [ "$want_python" = 1 ] && build_python
    [ "$want_killercoda" = 1 ] && build_from_base killercoda "labs/killercoda:$SUITE" \
        "Docker's CLI, ssh and tools from the Debian archive, ~40 s"

    # Images replaced by a rebuild are left untagged: drop ours.
    docker image prune -f --filter "label=$HASH_LABEL" >/dev/null 2>&1 || true
    log "images ready in $(since "$total") s"

    [ "$TEST_DIND" = 1 ] && test_dind
    return 0
}

main "$@"
