#!/bin/bash
# Entrypoint of labs/dind:bookworm: start a Docker engine inside the
# container, then run the container's command (default: sleep infinity).
#
# Started as a normal user (the default, "rootless"):
#   1. check what a rootless engine needs: /etc/subuid for this user,
#      /dev/net/tun (slirp4netns gives the engine's network namespace its
#      connection), a writable data root;
#   2. start Debian's dockerd-rootless.sh (rootlesskit + slirp4netns): the
#      engine and every inner container run in a user namespace whose root
#      is this user's uid on the host; socket /run/labs-docker/docker.sock
#      (also /run/docker.sock), data in $DIND_DATA_ROOT, log in
#      /run/labs-docker/dockerd.log;
#   3. wait for `docker info`, preload, then touch /run/labs-docker/ready.
#
# Started as root (legacy, for --privileged or the capabilities recipe):
#   1. make cgroups usable for the inner engine: cgroup v1 hosts get the v1
#      hierarchies mounted afresh (unless they are already writable, as under
#      --privileged); cgroup v2 hosts get the container's processes moved to
#      a child group so controllers can be delegated;
#   2. start dockerd on unix:///var/run/docker.sock, socket group `docker`
#      (learner is a member), log in /var/log/dockerd.log;
#   3. wait for `docker info`, preload, then touch /run/dind-ready.
#
# Both: wait at most DIND_WAIT_SECONDS (default 30) and exit 1 with the end
# of the log if the engine does not come up; `docker load` every
# /preload/*.tar (and .tar.gz); then exec "$@".
#
# Settings (environment): DIND_WAIT_SECONDS, DIND_PRELOAD_DIR (/preload),
# DIND_DATA_ROOT (rootless: /var/lib/labs-docker), DOCKERD_ARGS (extra
# dockerd arguments, split on spaces).
set -euo pipefail

wait_seconds=${DIND_WAIT_SECONDS:-30}
preload_dir=${DIND_PRELOAD_DIR:-/preload}
cgroot=/sys/fs/cgroup
if [ "$(id -u)" = 0 ]; then
    ready_marker=/run/dind-ready
    dockerd_log=/var/log/dockerd.log
else
    ready_marker=/run/labs-docker/ready
    dockerd_log=/run/labs-docker/dockerd.log
fi

log() { printf '[dind] %s\n' "$*" >&2; }

cgroup_v1_writable() {
    # True when every cgroup v1 hierarchy is already mounted read-write.
    local opts found=0
    while read -r opts; do
        found=1
        case ",$opts," in *,rw,*) ;; *) return 1 ;; esac
    done < <(findmnt -rn -t cgroup -o OPTIONS)
    [ "$found" = 1 ]
}

setup_cgroup_v1() {
    if cgroup_v1_writable; then
        log "cgroup v1 hierarchies already writable; leaving them"
        return 0
    fi
    log "mounting cgroup v1 hierarchies"
    if ! mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup "$cgroot"; then
        log "warning: cannot mount a tmpfs on $cgroot; inner containers may fail"
        return 0
    fi
    local sys
    # shellcheck disable=SC2013  # one word a line
    for sys in $(awk '!/^#/ { if ($4 == 1) print $1 }' /proc/cgroups); do
        mkdir -p "$cgroot/$sys"
        mount -n -t cgroup -o "$sys" cgroup "$cgroot/$sys" 2>/dev/null || rmdir "$cgroot/$sys"
    done
    mkdir -p "$cgroot/systemd"
    mount -n -t cgroup -o none,name=systemd cgroup "$cgroot/systemd" || rmdir "$cgroot/systemd"

    # Hosts that mount several controllers on one hierarchy (cpu,cpuacct)
    # refuse the single-controller mounts above: mount those hierarchies as
    # the host has them, with a link per controller.
    local _id controllers _path ctrl
    while IFS=: read -r _id controllers _path; do
        case "$controllers" in *,*) ;; *) continue ;; esac
        case "$controllers" in name=*) continue ;; esac
        [ -e "$cgroot/$controllers" ] && continue
        mkdir -p "$cgroot/$controllers"
        if mount -n -t cgroup -o "$controllers" cgroup "$cgroot/$controllers"; then
            for ctrl in ${controllers//,/ }; do
                [ -e "$cgroot/$ctrl" ] || ln -s "$controllers" "$cgroot/$ctrl"
            done
        else
            rmdir "$cgroot/$controllers"
        fi
    done < /proc/self/cgroup
}

setup_cgroup_v2() {
    # Only with a private cgroup namespace, where the container's cgroup is
    # the root of what it sees: never move processes around a host's tree.
    if [ "$(cat /proc/self/cgroup)" != "0::/" ]; then
        log "cgroup v2 without a private cgroup namespace; leaving cgroups as they are"
        return 0
    fi
    case ",$(findmnt -rn -o OPTIONS "$cgroot")," in
        *,ro,*) mount -o remount,rw "$cgroot" 2>/dev/null || log "warning: $cgroot is read-only" ;;
    esac
    log "cgroup v2: moving processes to $cgroot/init and delegating controllers"
    # "No internal processes": a group with processes cannot hand controllers
    # to its children, so empty the root group first.
    if mkdir -p "$cgroot/init" 2>/dev/null; then
        local pid ctrl controllers
        while read -r pid; do
            echo "$pid" > "$cgroot/init/cgroup.procs" 2>/dev/null || true
        done < "$cgroot/cgroup.procs"
        read -ra controllers < "$cgroot/cgroup.controllers" || true
        for ctrl in "${controllers[@]}"; do
            echo "+$ctrl" > "$cgroot/cgroup.subtree_control" 2>/dev/null \
                || log "warning: cannot delegate cgroup controller $ctrl"
        done
    else
        log "warning: $cgroot is not writable; inner containers may fail"
    fi
}

preload_images() {
    local tarball loaded=0
    shopt -s nullglob
    for tarball in "$preload_dir"/*.tar "$preload_dir"/*.tar.gz; do
        if docker load -q -i "$tarball" >&2; then
            loaded=$((loaded + 1))
        else
            log "warning: could not load $tarball"
        fi
    done
    shopt -u nullglob
    [ "$loaded" = 0 ] || log "preloaded $loaded image archive(s) from $preload_dir"
}

wait_for_engine() {
    local pid=$1 deadline=$((SECONDS + wait_seconds))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "dockerd exited; end of $dockerd_log:"
            tail -n 30 "$dockerd_log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "dockerd not ready after ${wait_seconds}s; end of $dockerd_log:"
            tail -n 30 "$dockerd_log" >&2
            exit 1
        fi
        sleep 0.1
    done
    log "dockerd ready"
}

start_rootless() {
    local user data_root=${DIND_DATA_ROOT:-/var/lib/labs-docker}
    user=$(id -un)
    if ! grep -q "^$user:" /etc/subuid || ! grep -q "^$user:" /etc/subgid; then
        log "no uid range for $user in /etc/subuid and /etc/subgid: a rootless engine needs one"
        exit 1
    fi
    if ! { : <>/dev/net/tun; } 2>/dev/null; then
        log "cannot open /dev/net/tun: start the container with --device /dev/net/tun, and make"
        log "the host's /dev/net/tun mode 0666 (what udev does on Debian)"
        exit 1
    fi
    if [ ! -w "$data_root" ]; then
        log "the engine's data root $data_root is not writable by $user"
        exit 1
    fi
    export XDG_RUNTIME_DIR=/run/user/$(id -u)
    export HOME=${HOME:-$(getent passwd "$user" | cut -d: -f6)}
    export DOCKER_HOST=unix:///run/labs-docker/docker.sock
    mkdir -p "$XDG_RUNTIME_DIR"
    rm -f "$ready_marker"
    log "starting a rootless dockerd (root inside it is uid $(id -u) on the host)"
    # shellcheck disable=SC2086  # DOCKERD_ARGS is a list of words on purpose
    # --group 0: the socket's group is gid 0 inside the engine's user namespace, which is this
    # user's own group on the host (the judge reaches the engine with it).
    /usr/share/docker.io/contrib/dockerd-rootless.sh --host "$DOCKER_HOST" --data-root "$data_root" \
        --group 0 ${DOCKERD_ARGS:-} >>"$dockerd_log" 2>&1 &
    wait_for_engine $!
}

start_as_root() {
    rm -f "$ready_marker"
    if [ -f "$cgroot/cgroup.controllers" ]; then
        setup_cgroup_v2
    else
        setup_cgroup_v1
    fi
    if [ "$(findmnt -rn -o FSTYPE --target /var/lib/docker)" = overlay ]; then
        log "warning: /var/lib/docker is on overlayfs, so the inner engine falls back to"
        log "the slow vfs storage driver; give it a tmpfs or a volume (--tmpfs /var/lib/docker:exec)"
    fi
    log "starting dockerd as root (legacy mode: only for trusted labs)"
    # shellcheck disable=SC2086  # DOCKERD_ARGS is a list of words on purpose
    dockerd --host unix:///var/run/docker.sock --group docker ${DOCKERD_ARGS:-} >>"$dockerd_log" 2>&1 &
    wait_for_engine $!
}

if [ "$(id -u)" = 0 ]; then
    start_as_root
else
    start_rootless
fi

preload_images
date -u +%Y-%m-%dT%H:%M:%SZ > "$ready_marker"
log "ready ($ready_marker)"

exec "$@"
