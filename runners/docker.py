"""Docker runner: one labelled container per session, optionally with its own Docker engine.

OPTIONS (all optional):
    base_url        engine address (default: DOCKER_HOST or the local socket)
    instance        value of the managed-by label, to share an engine between installs ("labs")
    cap_add         capabilities kept for ordinary sessions (everything else is dropped)
    dind_mode       how Docker-in-Docker sessions (labs with docker_access) get their engine:
                    "rootless" (the default; "auto" means the same): the session container runs as
                    the learner from its first process, with no capabilities but SETUID/SETGID in its
                    bounding set and no setuid programs; the image's entrypoint starts dockerd through
                    rootlesskit in a user namespace whose root is the learner's uid on the host, so
                    `docker run -v /:/x`, `--privileged`, `--cap-add ALL` or `mknod` inside give nothing
                    on the host. Needs the image label org.labs.dind=rootless (labs/dind:bookworm has it),
                    /dev/net/tun on the host (mode 0666, as udev sets it) and a custom seccomp profile
                    that lets the engine make namespaces (ROOTLESS_SECCOMP below).
                    "privileged" and "capabilities" run the inner engine as root in a privileged
                    container (or with all capabilities where --privileged cannot work): root inside is
                    root on the host, a learner can mount the host's disks. Refused unless the operator
                    sets LAB_ALLOW_UNSAFE_DIND=true; the admin then shows a warning.
    dind_preload    images copied into an inner engine when the lab names none in its
                    `dind_images` (default ["labs/busybox:latest"])
    preload_cache   where saved image tarballs are cached (default DATA_DIR/preload)
    disk_limit      "auto" (default): a size-limited filesystem per session (disks.py) when the platform
                    runs as root next to a local engine, else none, with a note in the session log;
                    "required": refuse to start without one; "off": never.
    disk_root       where session disks live (default DATA_DIR/session-disks)
    api_timeout     seconds for one engine API call (default 60)
    vnc_port        where a session's VNC server listens, for labs with a graphical console (5900)
    guard_host      install the firewall rules of firewall.py (default true for a local engine):
                    sessions never open connections to the host's own services or link-local
                    addresses (cloud metadata), and bridge-mode sessions never reach private networks.
                    Session bridges are named "labs…" (bridge, isolated) and "labu…" (unrestricted).
                    Needs root and iptables.
    vm_runner       the alias that takes this runner's VM labs (default "docker-vm": runners/docker_vm.py,
                    QEMU in a container on this same engine). Its options (vm_image, vm_accel,
                    vnc_port, vm_powerdown_timeout, vm_memory_overhead_mb, vm_tcg_cache_mb) may be
                    set here too; the docker-vm runner reads them from its engine's options.

Disk limits: with a session disk, every directory the learner can write in the image (the
workspace, the home, /tmp, /var/tmp and any other directory writable by the learner's user or
group, found once per image) becomes a volume bound to a directory of the session's own disk,
filled from the image on first use as Docker fills any new volume; so does the inner engine's
data root. A learner who is root in the session can still write to the container's own layer.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import selectors
import socket
import struct
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
from django.conf import settings

from runners import container_logs, firewall
from runners.base import (
    VM_IMAGE_KINDS,
    DiskUsage,
    Endpoint,
    ExecResult,
    FileEntry,
    FileStat,
    ManagedEnvironment,
    PlacedFile,
    PollStatus,
    ProgressCallback,
    Runner,
    RunnerError,
    RunnerStats,
    SessionSpec,
    StartResult,
    clean_workspace_path,
    no_progress,
)
from runners.disks import SessionDisks
from runners.docker_terminal import DockerTerminal, api_error_text
from runners.session_shell import (
    CONFINE,
    DEFAULT_CAPS,
    KEEPALIVE,
    LIST_SCRIPT,
    OOM_FIRST,
    WRITE_SCRIPT,
    connect_hosts,
    parse_listing,
    read_script,
    terminal_shell,
    tmux_probe,
)

log = logging.getLogger(__name__)

LABEL_MANAGED = "labs.managed-by"
LABEL_SESSION = "labs.session"
LABEL_USER = "labs.user"
LABEL_LAB = "labs.lab"
SHELL_USER_LABEL = "org.labs.shell-user"  # set on images whose USER must stay root (DinD entrypoints)
DIND_LABEL = "org.labs.dind"  # "rootless" on images whose entrypoint can start a rootless engine
INIT_LABEL = "org.labs.init"  # "image": the image's own CMD is the container's main process (sshd...)
CAPS_LABEL = "org.labs.caps"  # capabilities an image's own main process needs, from IMAGE_CAPS only
LABEL_HOST = "labs.host"  # which machine of a multi-host session a container is
LABEL_ROLE = "labs.role"  # "host" (a machine the learner uses) or "engine" (a Docker engine beside one)
IMAGE_CAPS = frozenset({"SYS_CHROOT", "NET_BIND_SERVICE", "AUDIT_WRITE"})  # sshd's privilege separation...
DEFAULT_HOSTNAME = "lab"
ENGINE_SOCKET_DIR = "/run/labs-docker"
ENGINE_HOST = f"unix://{ENGINE_SOCKET_DIR}/docker.sock"

DEFAULT_PRELOAD = ["labs/busybox:latest"]
DIND_MODES = ("rootless", "privileged", "capabilities")
UNSAFE_DIND_MODES = ("privileged", "capabilities")
DIND_CAPABILITY_OPTIONS: dict[str, Any] = {
    "cgroupns": "private",
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
}
# The seccomp profile of rootless Docker-in-Docker sessions. Docker's default profile refuses the
# system calls an unprivileged engine needs (unshare, mount, pivot_root and the new mount API, all
# only ever effective inside the session's own user namespace); this one allows everything except
# what no session needs and what has been a way into the kernel: modules, kexec, reboot, swap,
# clocks, the kernel keyring and log, BPF, perf, userfaultfd, io_uring, raw port I/O and file
# handles. The inner engine applies its own default profile to the learner's containers on top.
ROOTLESS_SECCOMP: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {
            "names": [
                "init_module", "finit_module", "delete_module", "create_module", "query_module",
                "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
                "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex", "syslog",
                "bpf", "perf_event_open", "lookup_dcookie", "iopl", "ioperm",
                "quotactl", "quotactl_fd", "nfsservctl", "uselib", "vm86", "vm86old", "open_by_handle_at",
            ],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,  # EPERM
        },
        {
            # "Not implemented" rather than "not allowed": runc and the C library carry on without
            # them (runc skips its session keyring, programs fall back from io_uring).
            "names": ["add_key", "keyctl", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
                      "io_uring_register"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 38,  # ENOSYS
        },
    ],
}
ROOTLESS_CAPS = ["SETUID", "SETGID"]  # newuidmap/newgidmap's file capabilities, nothing else
ROOTLESS_DATA_ROOT = "/var/lib/labs-docker"
ROOTLESS_READY = "/run/labs-docker/ready"
ROOTLESS_LOG = "/run/labs-docker/dockerd.log"
LEGACY_DATA_ROOT = "/var/lib/docker"
LEGACY_READY = "/run/dind-ready"
LEGACY_LOG = "/var/log/dockerd.log"
STARTER_MARKER = "/run/labs-starter-copied"
MAX_OUTPUT = 4 * 1024 * 1024
_STORAGE_LIMIT_DRIVERS = {"devicemapper", "btrfs", "zfs"}
# Go's os.FileMode bits, in which the engine reports a path's mode (archive API).
_GO_DIR, _GO_SYMLINK = 1 << 31, 1 << 27
_GO_SETUID, _GO_SETGID, _GO_STICKY = 1 << 23, 1 << 22, 1 << 20
# Everything that makes a path not a regular file: dir, symlink, device, pipe, socket, char device, irregular.
_GO_TYPE = _GO_DIR | _GO_SYMLINK | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)
MAX_SYMLINKS = 40  # as Linux's ELOOP limit
TAR_OVERHEAD = 64 * 1024  # headers (PAX, xattrs) and padding around one file in the engine's tar

# Run once per image (as root, no network, nothing writable) to learn who the learner is and
# where they can write. $1: the shell user ("" for root). Prints "uid gid home", then one directory
# a line that the user, its group or everyone may write, outermost only.
PROFILE_SCRIPT = r"""
u="${1:-root}"
line=$(awk -F: -v u="$u" '$1 == u || $3 == u { print $3 " " $4 " " $6; exit }' /etc/passwd)
[ -n "$line" ] || { echo "no user $u in /etc/passwd" >&2; exit 3; }
echo "$line"
set -- $line
[ "$1" = 0 ] && exit 0
find / -xdev -type d \( -perm -0002 -o -user "$1" -o \( -group "$2" -perm -0020 \) \) -print -prune
"""
ALWAYS_WRITABLE = ("/tmp", "/var/tmp")  # noqa: S108 (container paths)  bound to the session disk even where the image lacks them




@dataclass(frozen=True)
class ImageProfile:
    """Who the learner is in an image and which of its directories they can write."""

    uid: int
    gid: int
    home: str
    writable: tuple[str, ...] = ()

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass
class Plan:
    """What one start is about to create; decided before the containers exist."""

    spec: SessionSpec
    image: dict[str, Any]
    profile: ImageProfile
    network: str
    user: str = ""  # the learner's user in the container ("" for root)
    dind_mode: str = ""  # "rootless" (the engine in the learner's container), a legacy mode, or ""
    engine_beside: bool = False  # a rootless engine in a container of its own (learners who are root)
    disk: Path | None = None
    hosts: tuple[str, ...] = (DEFAULT_HOSTNAME,)

    @property
    def main_host(self) -> str:
        return self.hosts[0]


class DockerRunner(Runner):
    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.instance = str(self.options.get("instance", "labs"))
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._image_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._profiles: dict[str, ImageProfile] = {}
        self._storage_driver: tuple[str, str] | None = None
        self._apparmor: bool | None = None

    @property
    def vm_runner(self) -> str | None:  # type: ignore[override]  # an option here, a constant elsewhere
        """VM labs go to the docker-vm runner (runners/docker_vm.py), which shares this engine."""
        return str(self.options.get("vm_runner", "docker-vm"))

    # engine -------------------------------------------------------------------------------
    @functools.cached_property
    def disks(self) -> SessionDisks:
        """This runner's session disks (disks.py); settings are read on first use, not at construction."""
        return SessionDisks(Path(self.options.get("disk_root") or Path(settings.DATA_DIR) / "session-disks"))

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                timeout = int(self.options.get("api_timeout", 60))
                try:
                    if self.options.get("base_url"):
                        self._client = docker.DockerClient(base_url=self.options["base_url"], timeout=timeout)
                    else:
                        self._client = docker.from_env(timeout=timeout)
                except docker.errors.DockerException as exc:
                    raise RunnerError(f"Docker engine unreachable: {api_error_text(exc)}") from exc
            return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    def available(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            with self._client_lock:
                self._client = None
            return False

    def call_engine(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one engine call, turning the SDK's errors into RunnerError with a readable reason."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: Exception) -> Exception:
        if isinstance(exc, RunnerError):
            return exc
        if isinstance(exc, docker.errors.ImageNotFound):
            return RunnerError(f"{what}: image not found on this engine ({api_error_text(exc)})", permanent=True)
        if isinstance(exc, docker.errors.NotFound):
            return RunnerError(f"{what}: not found ({api_error_text(exc)})", permanent=True)
        if isinstance(exc, docker.errors.APIError):
            return RunnerError(f"{what}: {api_error_text(exc)}", permanent=bool(exc.is_client_error()))
        unreachable = isinstance(exc, (docker.errors.DockerException, OSError)) or any(
            word in type(exc).__name__ for word in ("Connection", "Timeout")
        )
        if unreachable:
            with self._client_lock:
                self._client = None
            return RunnerError(f"{what}: Docker engine unreachable ({api_error_text(exc)})")
        return exc

    def _engine_is_local(self) -> bool:
        return not str(self.options.get("base_url", "")).startswith(("tcp://", "ssh://", "http"))

    # naming -------------------------------------------------------------------------------
    def labels_for(self, spec: SessionSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED: self.instance,
            LABEL_SESSION: spec.session_id,
            LABEL_USER: str(spec.user_id),
            LABEL_LAB: spec.lab_slug,
        }

    def container_name(self, session_id: str) -> str:
        return f"{self.instance}-{session_id}"

    def _session_of_disk(self, disk_name: str) -> str | None:
        prefix = f"{self.instance}-"
        return disk_name[len(prefix):] if disk_name.startswith(prefix) else None

    # start ----------------------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        if spec.image_kind in VM_IMAGE_KINDS:
            raise RunnerError(f"VM labs run on the {self.vm_runner} runner, not on {self.name}", permanent=True)
        try:
            return self._start_containers(spec, progress, timeout)
        except BaseException:
            # Nothing half-made stays behind (containers, networks, volumes, the disk), as the contract
            # asks; a retried start makes it all again.
            try:
                self._remove_session_resources(spec.session_id)
            except Exception as exc:
                log.warning("cleaning up after the failed start of %s: %s", spec.session_id, exc)
            raise

    def _start_containers(self, spec: SessionSpec, progress: ProgressCallback, timeout: float) -> StartResult:
        deadline = time.monotonic() + timeout
        image = self.image_info(spec.image)
        user = self._session_user(spec, image)
        plan = Plan(spec=spec, image=image, profile=self._image_profile(image, user), network="",
                    user="" if user == "root" else user, hosts=tuple(spec.hosts) or (DEFAULT_HOSTNAME,))
        if spec.docker_access:
            if plan.profile.is_root:
                # Root in the learner's container must not share it with an engine that needs /proc
                # unmasked: the engine runs in a container of its own beside it (rootless as ever).
                plan.engine_beside = True
                self._dind_mode(self.image_info(self._engine_image()))
            else:
                plan.dind_mode = self._dind_mode(image)
        if len(plan.hosts) > 1 and spec.network_mode == "none":
            raise RunnerError("a session with several hosts needs a network (not network mode none)", permanent=True)
        plan.network = self.ensure_network(spec)
        plan.disk = self._session_disk(spec, progress)
        progress("Creating container" if len(plan.hosts) == 1 else f"Creating {len(plan.hosts)} hosts")
        container_id, adopted = self._create_container(plan, progress)
        if adopted:
            progress("Found the existing container; adopting it")
        info = self._ensure_running(container_id)
        state = self.state_of(info, plan.image, spec, dind_mode=plan.dind_mode, disk=plan.disk, user=plan.user)
        if plan.disk is not None and plan.profile.is_root and plan.profile.home not in ("", "/"):
            state["shell_dir"] = plan.profile.home  # the workspace, by the name root knows it by (/root)
        for host in plan.hosts[1:]:
            host_id, _ = self._create_container(plan, progress, host=host)
            self._ensure_running(host_id)
            state.setdefault("hosts", {})[host] = host_id
        if plan.engine_beside:
            progress("Starting Docker engine")
            state["engine_container_id"] = self._start_engine_beside(plan, info["Id"], progress)
        if spec.starter_dir and not self._engine_lstat(state, STARTER_MARKER):
            progress("Copying starter files")
            self._copy_starter(state, spec.starter_dir, plan.profile)
        if plan.dind_mode or plan.engine_beside:
            if plan.dind_mode:
                progress("Starting Docker engine")
            self._wait_for_inner_engine(state, deadline)
        if len(plan.hosts) > 1:
            progress("Letting the hosts reach each other over SSH")
            self._connect_hosts(state)
        if time.monotonic() > deadline:
            raise RunnerError(f"environment not ready after {timeout:g} s")
        progress("Container ready")
        endpoints = self.endpoints_of(info)
        if "vnc" in spec.consoles and endpoints.get("host"):
            endpoints["vnc"] = {"host": endpoints["host"], "port": int(self.options.get("vnc_port", 5900))}
        return StartResult(state=state, endpoints=endpoints)

    def _ensure_running(self, container_id: str) -> dict[str, Any]:
        info = self.call_engine("inspecting container", self.api.inspect_container, container_id)
        if not info["State"]["Running"]:
            self.call_engine("starting container", self.api.start, container_id)
            info = self.call_engine("inspecting container", self.api.inspect_container, container_id)
        return info

    def _session_user(self, spec: SessionSpec, image: dict[str, Any]) -> str:
        """The learner's user: the lab's shell_user, else the image's (`org.labs.shell-user`, USER)."""
        user = spec.shell_user or self._image_user(image).split(":")[0]
        return user or "root"

    def _engine_image(self) -> str:
        return str(self.options.get("engine_image", "labs/dind:bookworm"))

    def image_info(self, reference: str) -> dict[str, Any]:
        """Inspect an image, cached briefly: every start needs it, and it rarely changes."""
        now = time.monotonic()
        cached = self._image_cache.get(reference)
        if cached and now - cached[0] < 30:
            return cached[1]
        attrs = self.call_engine(f"looking up image {reference}", self.api.inspect_image, reference)
        self._image_cache[reference] = (now, attrs)
        return attrs

    def _image_user(self, image: dict[str, Any]) -> str:
        """The user learners get: the image's `org.labs.shell-user` label, else its USER."""
        config = image.get("Config") or {}
        return str((config.get("Labels") or {}).get(SHELL_USER_LABEL) or config.get("User") or "")

    def _image_profile(self, image: dict[str, Any], user: str) -> ImageProfile:
        """Who `user` is in `image` and where they can write: learned once per image and user by a
        short-lived container (no network, read-only), kept in memory and on disk."""
        key = str(image["Id"])
        cache_key = f"{key}:{user}"
        if cache_key in self._profiles:
            return self._profiles[cache_key]
        digest = hashlib.sha256(cache_key.encode()).hexdigest()[:32]
        cache_file = Path(settings.DATA_DIR) / "image-profiles" / f"{digest}.json"
        try:
            saved = json.loads(cache_file.read_text())
            profile = ImageProfile(uid=int(saved["uid"]), gid=int(saved["gid"]), home=str(saved["home"]),
                                   writable=tuple(str(path) for path in saved["writable"]))
        except (OSError, ValueError, TypeError, KeyError):
            profile = self._scan_image(key, user)
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                cache_file.write_text(json.dumps({"uid": profile.uid, "gid": profile.gid, "home": profile.home,
                                                  "writable": list(profile.writable)}))
            except OSError as exc:
                log.warning("cannot cache the profile of image %s: %s", key, exc)
        self._profiles[cache_key] = profile
        return profile

    def _scan_image(self, image_id: str, user: str) -> ImageProfile:
        container = self.call_engine(
            "reading the image's users", self.api.create_container, image_id,
            command=["sh", "-c", PROFILE_SCRIPT, "labs-profile", user], entrypoint=[], user="root",
            network_disabled=True, labels={LABEL_MANAGED: self.instance},
            host_config=self.api.create_host_config(
                network_mode="none", read_only=True, cap_drop=["ALL"], cap_add=["DAC_READ_SEARCH"],
                security_opt=["no-new-privileges:true"], mem_limit="128m", pids_limit=64),
        )
        container_id = container["Id"]
        try:
            self.call_engine("reading the image's users", self.api.start, container_id)
            result = self.call_engine("reading the image's users", self.api.wait, container_id, timeout=60)
            reading = "reading the image's users"
            output = self.call_engine(reading, self.api.logs, container_id, stdout=True, stderr=False)
            errors = self.call_engine(reading, self.api.logs, container_id, stdout=False, stderr=True)
        finally:
            try:
                self.api.remove_container(container_id, force=True)
            except Exception as exc:
                log.warning("removing the profile container %s: %s", container_id, exc)
        lines = output.decode(errors="replace").splitlines()
        if int(result.get("StatusCode", 1)) != 0 or not lines:
            raise RunnerError(
                f"cannot read the users of image {image_id[:19]}: "
                f"{errors.decode(errors='replace').strip()[-300:] or 'it has no sh, awk or /etc/passwd'}",
                permanent=True)
        uid, gid, home = [*lines[0].split(" ", 2), "", ""][:3]
        writable = tuple(sorted({line for line in lines[1:] if line.startswith("/")}))
        return ImageProfile(uid=int(uid), gid=int(gid), home=home or "/", writable=writable)

    # Docker-in-Docker ------------------------------------------------------------------------
    def _dind_mode(self, image: dict[str, Any]) -> str:
        mode = str(self.options.get("dind_mode", "rootless"))
        if mode == "auto":
            mode = "rootless"
        if mode not in DIND_MODES:
            raise RunnerError(f"unknown dind_mode {mode!r} (use one of {', '.join(DIND_MODES)})", permanent=True)
        if mode in UNSAFE_DIND_MODES and not settings.LAB_ALLOW_UNSAFE_DIND:
            raise RunnerError(
                f"dind_mode {mode!r} makes root in a session root on the host (a learner can mount the host's "
                "disks); it is refused unless the operator sets LAB_ALLOW_UNSAFE_DIND=true for trusted labs",
                permanent=True)
        labels = (image.get("Config") or {}).get("Labels") or {}
        if mode == "rootless" and labels.get(DIND_LABEL) != "rootless":
            raise RunnerError(
                "this lab's image cannot run a rootless Docker engine (it lacks the label "
                f"{DIND_LABEL}=rootless); rebuild it from labs/dind:bookworm (deploy/images/dind)", permanent=True)
        return mode

    def _dind_data_root(self, mode: str) -> str:
        return ROOTLESS_DATA_ROOT if mode == "rootless" else LEGACY_DATA_ROOT

    def _apparmor_enabled(self) -> bool:
        if self._apparmor is None:
            info = self.call_engine("reading engine info", self.client.info)
            self._apparmor = any("apparmor" in str(option) for option in info.get("SecurityOptions") or [])
        return self._apparmor

    # network ----------------------------------------------------------------------------------
    def ensure_network(self, spec: SessionSpec) -> str:
        mode = spec.network_mode
        if mode == "none":
            return "none"
        name = self.container_name(spec.session_id)
        self._ensure_guard()
        prefix = firewall.OPEN_PREFIX if mode == "unrestricted" else firewall.BRIDGED_PREFIX
        try:
            self.api.create_network(
                name,
                driver="bridge",
                internal=(mode == "isolated"),
                labels=self.labels_for(spec),
                options={"com.docker.network.bridge.name": prefix + spec.session_id.replace("-", "")[:11]},
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: it exists already (a retried start)
                raise self._translate("creating network", exc) from exc
        except Exception as exc:
            raise self._translate("creating network", exc) from exc
        return name

    def _ensure_guard(self) -> None:
        if not self.options.get("guard_host", self._engine_is_local()):
            return
        chain = "DOCKER-USER" if firewall.chain_exists("DOCKER-USER") else "FORWARD"
        try:
            firewall.ensure(firewall.docker_session_rules(chain),
                            "keeps sessions away from the host, link-local addresses and private networks")
        except RunnerError as exc:
            raise RunnerError(f"{exc}; run the platform as root with iptables, or set the Docker runner option "
                              "guard_host=false to accept that risk", permanent=True) from exc

    # disk -----------------------------------------------------------------------------------
    def _session_disk(self, spec: SessionSpec, progress: ProgressCallback) -> Path | None:
        """The session's own size-limited filesystem (disks.py), or None where there is none."""
        policy = str(self.options.get("disk_limit", "auto"))
        if policy == "off":
            return None
        reason = self.disks.unavailable()
        if reason is None and not self._engine_is_local():
            reason = "the Docker engine is on another machine"
        if reason is not None:
            if policy == "required":
                raise RunnerError(f"cannot limit this session's disk: {reason}", permanent=True)
            progress(f"Note: the disk limit of {spec.disk_mb} MB is not enforced here ({reason})")
            return None
        return self.disks.ensure(self.container_name(spec.session_id), spec.disk_mb)

    def _volume_for(self, plan: Plan, path: str, host: str = "") -> str:
        """A volume bound to a directory of the session disk, created once per host and path (idempotent)."""
        assert plan.disk is not None
        digest = hashlib.sha256(f"{host}:{path}".encode() if host else path.encode()).hexdigest()[:10]
        directory = plan.disk / "volumes" / digest
        if not directory.exists():
            directory.mkdir(parents=True)
            if path in ALWAYS_WRITABLE:
                directory.chmod(0o1777)  # as /tmp should be, where the image has none to copy from
        name = f"{self.container_name(plan.spec.session_id)}-{digest}"
        self.call_engine("creating a volume on the session disk", self.client.volumes.create, name=name, driver="local",
                   driver_opts={"type": "none", "o": "bind", "device": str(directory)},
                   labels=self.labels_for(plan.spec))
        return name

    def _writable_paths(self, plan: Plan) -> list[str]:
        paths = {self.workspace, *ALWAYS_WRITABLE, *plan.profile.writable}
        if plan.profile.home not in ("", "/") and not plan.profile.is_root:
            paths.add(plan.profile.home)  # root's home is the workspace itself (see _mounts)
        if plan.dind_mode:
            paths.add(self._dind_data_root(plan.dind_mode))
        # Outermost only: a volume already covers what lies below it.
        ordered = sorted(paths)
        return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]

    def _storage_opts(self, spec: SessionSpec, progress: ProgressCallback) -> dict[str, str] | None:
        if self._storage_driver is None:
            info = self.call_engine("reading engine info", self.client.info)
            backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
            self._storage_driver = (info.get("Driver", ""), backing)
        driver, backing = self._storage_driver
        if driver in _STORAGE_LIMIT_DRIVERS or (driver == "overlay2" and backing == "xfs"):
            return {"size": f"{spec.disk_mb}M"}
        return None

    # container ------------------------------------------------------------------------------
    def _mounts(self, plan: Plan, host: str = "") -> list[str]:
        """The session disk's volumes for one host, as `volume:path:rw` binds (none without a disk)."""
        if plan.disk is None:
            return []
        binds = []
        for path in self._writable_paths(plan):
            volume = self._volume_for(plan, path, host)
            binds.append(f"{volume}:{path}:rw")
            if path == self.workspace and plan.profile.is_root and plan.profile.home not in ("", "/"):
                # A learner who is root works in their home, as Killercoda's scenarios expect: the
                # workspace (what the editor and the judge see) is that same directory.
                binds.append(f"{volume}:{plan.profile.home}:rw")
        return binds

    def _create_container(self, plan: Plan, progress: ProgressCallback, host: str = "") -> tuple[str, bool]:
        """Create a container of the session (the learner's, or the extra `host`); return its id and
        whether it already existed."""
        spec = plan.spec
        hostname = host or plan.main_host
        host_config: dict[str, Any] = {
            "nano_cpus": int(spec.cpu * 1e9),
            "mem_limit": f"{spec.memory_mb}m",
            "memswap_limit": f"{spec.memory_mb}m",  # equal to the memory limit: no swap
            "pids_limit": spec.pids_limit,
            "network_mode": plan.network,
            "storage_opt": self._storage_opts(spec, progress),
        }
        labels = {**self.labels_for(spec), LABEL_HOST: hostname, LABEL_ROLE: "host"}
        create: dict[str, Any] = {
            "name": self.container_name(spec.session_id) + (f"-{host}" if host else ""),
            "hostname": hostname,
            "labels": labels,
            "detach": True,
            "working_dir": self.workspace,
            "environment": {"LAB_SESSION": spec.session_id, "TERM": "xterm-256color"},
        }
        if plan.network not in ("none", "bridge"):
            create["networking_config"] = self.api.create_networking_config(
                {plan.network: self.api.create_endpoint_config(aliases=[hostname])}
            )
        binds = self._mounts(plan, host)
        if plan.dind_mode and not host:
            return self._create_dind(plan, host_config, create, binds, progress)
        if plan.dind_mode and host:
            raise RunnerError("only the first host of a session can have a Docker engine", permanent=True)
        if plan.engine_beside and not host:
            create["environment"] = {**create["environment"], "DOCKER_HOST": ENGINE_HOST}
            binds.append(f"{self._engine_socket_volume(plan)}:{ENGINE_SOCKET_DIR}:rw")
        labels_of_image = (plan.image.get("Config") or {}).get("Labels") or {}
        caps = list(self.options.get("cap_add", DEFAULT_CAPS))
        caps += sorted(IMAGE_CAPS & set(str(labels_of_image.get(CAPS_LABEL, "")).split(",")))
        host_config.update(
            init=True,
            cap_drop=["ALL"],
            cap_add=caps,
            security_opt=["no-new-privileges:true"],
            binds=binds or None,
        )
        if labels_of_image.get(INIT_LABEL) != "image":
            create["entrypoint"] = []
            create["command"] = KEEPALIVE
        return self.create_container(plan.image["Id"], host_config, create)

    def _create_dind(self, plan: Plan, host: dict[str, Any], create: dict[str, Any], binds: list[str],
                     progress: ProgressCallback) -> tuple[str, bool]:
        """The learner's container with its Docker engine inside (rootless, or a legacy mode)."""
        spec = plan.spec
        if plan.disk is None:
            # No session disk: the engine's data still must not sit on overlayfs (overlay on overlay).
            volume = self.call_engine("creating engine volume", self.client.volumes.create,
                                name=f"{self.container_name(spec.session_id)}-docker", labels=self.labels_for(spec))
            binds.append(f"{volume.name}:{self._dind_data_root(plan.dind_mode)}:rw")
        binds += self._preload_binds(spec, progress)
        host["binds"] = binds
        if plan.dind_mode == "rootless":
            create["user"] = plan.user or "learner"
            create["environment"] = {**create["environment"], "DOCKER_HOST": ENGINE_HOST}
            host.update(self._rootless_host_config())
            # The engine mounts a fresh /proc for its containers, which the kernel allows only where no
            # part of /proc is hidden; nothing here runs as root on the host, so nothing can misuse it.
            return self.create_container(plan.image["Id"], host, create, unmask_paths=True)
        # Legacy: the entrypoint starts the inner engine as root; shells use the shell user.
        create["user"] = "root"
        return self._create_legacy_dind(plan.image["Id"], host, create, plan.dind_mode)

    def _rootless_host_config(self) -> dict[str, Any]:
        security = ["seccomp=" + json.dumps(ROOTLESS_SECCOMP)]
        if self._apparmor_enabled():
            security.append("apparmor=unconfined")  # rootlesskit mounts; AppArmor's docker-default forbids it
        return {"cap_drop": ["ALL"], "cap_add": ROOTLESS_CAPS, "security_opt": security,
                "devices": ["/dev/net/tun:/dev/net/tun:rwm"]}

    def _engine_socket_volume(self, plan: Plan) -> str:
        """A small tmpfs volume for the engine's socket, owned by the engine's user, shared by the two
        containers (the learner's client, the engine beside it)."""
        engine_image = self.image_info(self._engine_image())
        engine_user = self._image_user(engine_image).split(":")[0] or "learner"
        profile = self._image_profile(engine_image, engine_user)
        name = f"{self.container_name(plan.spec.session_id)}-engine-socket"
        self.call_engine("creating the engine's socket volume", self.client.volumes.create, name=name, driver="local",
                   driver_opts={"type": "tmpfs", "device": "tmpfs",
                                "o": f"size=1m,mode=0750,uid={profile.uid},gid={profile.gid}"},
                   labels=self.labels_for(plan.spec))
        return name

    def _start_engine_beside(self, plan: Plan, main_id: str, progress: ProgressCallback) -> str:
        """A rootless Docker engine in a container of its own that shares the learner's network (its
        published ports answer on the learner's localhost) and sees the learner's workspace at the
        same paths (so `docker run -v /root/x:/x` finds it). Nothing of it runs as root on the host."""
        spec = plan.spec
        engine_image = self.image_info(self._engine_image())
        binds = [f"{self._engine_socket_volume(plan)}:{ENGINE_SOCKET_DIR}:rw"]
        if plan.disk is not None:
            workspace = self._volume_for(plan, self.workspace)
            binds += [f"{workspace}:{self.workspace}:rw", f"{self._volume_for(plan, ROOTLESS_DATA_ROOT, 'engine')}:"
                      f"{ROOTLESS_DATA_ROOT}:rw"]
            if plan.profile.home not in ("", "/"):
                binds.append(f"{workspace}:{plan.profile.home}:rw")
        else:
            volume = self.call_engine("creating engine volume", self.client.volumes.create,
                                name=f"{self.container_name(spec.session_id)}-docker", labels=self.labels_for(spec))
            binds.append(f"{volume.name}:{ROOTLESS_DATA_ROOT}:rw")
        binds += self._preload_binds(spec, progress)
        host = {
            "nano_cpus": int(spec.cpu * 1e9),
            "mem_limit": f"{spec.memory_mb}m",
            "memswap_limit": f"{spec.memory_mb}m",
            "pids_limit": spec.pids_limit,
            "network_mode": f"container:{main_id}",
            "binds": binds,
            **self._rootless_host_config(),
        }
        create = {
            "name": f"{self.container_name(spec.session_id)}-engine",
            "labels": {**self.labels_for(spec), LABEL_HOST: plan.main_host, LABEL_ROLE: "engine"},
            "detach": True,
            "user": self._image_user(engine_image).split(":")[0] or "learner",
            "environment": {"LAB_SESSION": spec.session_id},
        }
        engine_id, _ = self.create_container(engine_image["Id"], host, create, unmask_paths=True)
        self._ensure_running(engine_id)
        return engine_id

    def create_container(
        self, image_id: str, host: dict[str, Any], create: dict[str, Any], unmask_paths: bool = False
    ) -> tuple[str, bool]:
        host_config = self.api.create_host_config(**{k: v for k, v in host.items() if v is not None})
        if unmask_paths:
            # "systempaths=unconfined" exists only in the CLI: it is these two empty lists.
            host_config["MaskedPaths"] = []
            host_config["ReadonlyPaths"] = []
        try:
            created = self.api.create_container(image_id, host_config=host_config, **create)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # created by an earlier or concurrent start: adopt it
                existing = self.call_engine("adopting container", self.api.inspect_container, create["name"])
                return existing["Id"], True
            raise self._translate("creating container", exc) from exc
        except Exception as exc:
            raise self._translate("creating container", exc) from exc
        return created["Id"], False

    def _create_legacy_dind(self, image_id: str, host: dict[str, Any], create: dict[str, Any],
                            mode: str) -> tuple[str, bool]:
        attempt = dict(host)
        if mode == "privileged":
            attempt["privileged"] = True
        else:
            attempt.update(DIND_CAPABILITY_OPTIONS)
        container_id, adopted = self.create_container(image_id, attempt, create, unmask_paths=mode != "privileged")
        if adopted:
            return container_id, True
        try:
            self.call_engine("starting container", self.api.start, container_id)
        except RunnerError as exc:
            self.call_engine("removing failed container", self.api.remove_container, container_id, force=True)
            raise RunnerError(f"cannot start a {mode} Docker-in-Docker container on this host: {exc}",
                              permanent=True) from exc
        return container_id, False

    def _preload_binds(self, spec: SessionSpec, progress: ProgressCallback) -> list[str]:
        refs = spec.dind_images or self.options.get("dind_preload", DEFAULT_PRELOAD)
        return [f"{source}:{target['bind']}:ro" for source, target in self._preload_mounts(refs, progress).items()]

    def _preload_mounts(
        self, refs: list[str] | tuple[str, ...], progress: ProgressCallback
    ) -> dict[str, dict[str, str]]:
        """Save each preload image once to a tarball cache, then bind it read-only into /preload."""
        cache = Path(self.options.get("preload_cache") or Path(settings.DATA_DIR) / "preload")
        cache.mkdir(parents=True, exist_ok=True)
        mounts: dict[str, dict[str, str]] = {}
        for ref in refs:
            image = self.call_engine(f"looking up preload image {ref}", self.client.images.get, ref)
            tarball = cache / f"{image.id.replace(':', '_')}.tar"
            if not tarball.exists():
                progress(f"Saving {ref} for the inner engine (first time only)")
                partial = tarball.with_suffix(f".{os.getpid()}.partial")
                with partial.open("wb") as out:
                    for chunk in self.call_engine(f"saving {ref}", image.save, named=True):
                        out.write(chunk)
                os.chmod(partial, 0o644)  # the rootless engine loads it as the learner
                partial.replace(tarball)
            safe = ref.replace("/", "_").replace(":", "_")
            mounts[str(tarball)] = {"bind": f"/preload/{safe}.tar", "mode": "ro"}
        return mounts

    def _wait_for_inner_engine(self, state: dict[str, Any], deadline: float) -> None:
        legacy = state.get("dind_mode") not in (None, "", "rootless")
        marker = LEGACY_READY if legacy else ROOTLESS_READY  # beside: in the socket volume both see
        engine = state.get("engine_container_id") or state["container_id"]
        while time.monotonic() < deadline:
            if self._engine_lstat(state, marker):
                return
            info = self.call_engine("inspecting container", self.api.inspect_container, engine)
            if not info["State"]["Running"]:
                break  # the entrypoint gave up (it says why in the container's log)
            time.sleep(0.1)
        logs = self.call_engine("reading the container's log", self.api.logs, engine, stdout=True,
                          stderr=True, tail=20)
        raise RunnerError("the session's Docker engine did not start: "
                          + logs.decode(errors="replace").strip()[-800:], permanent=True)

    def _copy_starter(self, state: dict[str, Any], starter_dir: str, profile: ImageProfile) -> None:
        """Copy the lab's files into the workspace owned by the learner, through the engine's archive
        API: no program in the session takes part, so nothing can fail there unseen."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for entry in sorted(Path(starter_dir).rglob("*")):
                if entry.is_symlink():
                    raise RunnerError(f"starter file {entry.relative_to(starter_dir)} is a symlink; lab files "
                                      "must be plain files and directories", permanent=True)
                info = archive.gettarinfo(str(entry), arcname=str(entry.relative_to(starter_dir)))
                info.uid, info.gid, info.uname, info.gname = profile.uid, profile.gid, "", ""
                if info.isreg():
                    with entry.open("rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
        self.call_engine("copying starter files", self.api.put_archive, state["container_id"], self.workspace,
                   buffer.getvalue())
        marker = io.BytesIO()
        with tarfile.open(fileobj=marker, mode="w") as archive:
            info = tarfile.TarInfo(STARTER_MARKER.rsplit("/", 1)[1])
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(b""))
        self.call_engine("marking the starter files copied", self.api.put_archive, state["container_id"],
                   posixpath.dirname(STARTER_MARKER), marker.getvalue())

    def _connect_hosts(self, state: dict[str, Any]) -> None:
        """The learner's user on the first host may `ssh <host>` to the others (session_shell.connect_hosts)."""
        hosts = state.get("hosts") or {}

        def run(host: str, command: list[str], stdin: bytes | None, timeout: float) -> ExecResult:
            return self.exec({**state, "container_id": hosts[host]} if host else state, command, stdin=stdin,
                             timeout=timeout)

        connect_hosts(run, list(hosts))

    def place_files(self, state: dict[str, Any], files: list[PlacedFile], host: str = "") -> None:
        """Through the engine's archive API, as root: nothing in the session takes part."""
        container_id = state["container_id"] if not host else (state.get("hosts") or {}).get(host)
        if not container_id:
            raise RunnerError(f"this session has no host named {host!r}", permanent=True)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for placed in files:
                path = posixpath.normpath(placed.path)
                if not placed.path.startswith("/") or path == "/" or "\x00" in path:
                    raise RunnerError(f"{placed.path!r} is not an absolute file path", permanent=True)
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(placed.data), placed.mode & 0o7777, int(time.time())
                info.uid = info.gid = 0
                archive.addfile(info, io.BytesIO(placed.data))
        self.call_engine("placing the lab's files", self.api.put_archive, container_id, "/", buffer.getvalue())

    def state_of(self, info: dict[str, Any], image: dict[str, Any], spec: SessionSpec, *, dind_mode: str = "",
                  disk: Path | None = None, user: str | None = None) -> dict[str, Any]:
        if user is None:
            user = self._image_user(image).split(":")[0]
        networks = list((info.get("NetworkSettings") or {}).get("Networks") or {})
        state: dict[str, Any] = {
            "container_id": info["Id"],
            "name": info["Name"].lstrip("/"),
            "networks": networks,
            "user": "" if user == "root" else user,
            "docker_access": spec.docker_access,
        }
        if dind_mode:
            state["dind_mode"] = dind_mode
        if disk is not None:
            state["disk"] = self.container_name(spec.session_id)
        return state

    def endpoints_of(self, info: dict[str, Any]) -> dict[str, Any]:
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        for net in networks.values():
            if net.get("IPAddress"):
                return {"host": net["IPAddress"]}
        return {}

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        container_id = state.get("container_id")
        session_id = None
        if container_id:
            try:
                container = self.client.containers.get(container_id)
            except docker.errors.NotFound:
                container = None
            except docker.errors.DockerException as exc:
                raise RunnerError(f"Docker engine unreachable ({api_error_text(exc)})") from exc
            if container is not None:
                session_id = container.labels.get(LABEL_SESSION)
                engine = state.get("engine_container_id")
                if engine:
                    try:
                        self.api.remove_container(engine, v=True, force=True)
                    except docker.errors.NotFound:
                        pass
                    except Exception as exc:
                        raise self._translate("removing the session's engine", exc) from exc
                self.call_engine("stopping container", container.stop, timeout=int(timeout))
                self.call_engine("removing container", container.remove, v=True, force=True)
        if session_id is None and state.get("name", "").startswith(f"{self.instance}-"):
            session_id = state["name"][len(self.instance) + 1:]
        if session_id:
            self._remove_session_resources(session_id)

    def _remove_session_resources(self, session_id: str) -> None:
        label = [f"{LABEL_MANAGED}={self.instance}", f"{LABEL_SESSION}={session_id}"]
        # The other hosts and an engine beside the learner's container (first: it uses its network).
        others = self.call_engine("listing containers", self.client.containers.list, all=True, filters={"label": label})
        for container in sorted(others, key=lambda c: c.labels.get(LABEL_ROLE) != "engine"):
            try:
                container.remove(v=True, force=True)
            except docker.errors.NotFound:
                pass
            except Exception as exc:
                raise self._translate("removing container", exc) from exc
        for network in self.call_engine("listing networks", self.client.networks.list, filters={"label": label}):
            self.call_engine("removing network", network.remove)
        for volume in self.call_engine("listing volumes", self.client.volumes.list, filters={"label": label}):
            self.call_engine("removing volume", volume.remove, force=True)
        self.disks.remove(self.container_name(session_id))

    def disk_usage(self, state: dict[str, Any]) -> DiskUsage | None:
        return self.disks.usage(state["disk"]) if state.get("disk") else None

    def poll(self, state: dict[str, Any]) -> PollStatus:
        try:
            container = self.client.containers.get(state.get("container_id", ""))
        except docker.errors.NotFound:
            return PollStatus.MISSING
        except docker.errors.DockerException as exc:
            raise RunnerError(f"Docker engine unreachable ({api_error_text(exc)})") from exc
        return PollStatus.RUNNING if container.status == "running" else PollStatus.STOPPED

    # exec -----------------------------------------------------------------------------------
    def exec(
        self,
        state: dict[str, Any],
        command: list[str],
        *,
        timeout: float = 15.0,
        stdin: bytes | None = None,
        user: str | None = None,
        workdir: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> ExecResult:
        exec_user = user if user is not None else (state.get("user") or "root")
        if state.get("dind_mode") == "rootless" and exec_user.split(":")[0] in ("root", "0"):
            # Its /proc is unmasked for the inner engine: root there could write the host's sysctls.
            raise RunnerError("nothing runs as root in a rootless Docker-in-Docker session", permanent=True)
        wrapped = ["sh", "-c", OOM_FIRST + 'exec "$@"', "labs-exec",
                   "timeout", "-s", "KILL", str(max(1, int(timeout + 0.999))), *command]
        created = self.call_engine(
            "running a command",
            self.api.exec_create,
            state["container_id"],
            wrapped,
            stdin=stdin is not None,
            stdout=True,
            stderr=True,
            tty=False,
            user=exec_user,
            workdir=workdir or self.workspace,
            environment=environment or {},
        )
        exec_id = created["Id"]
        sock = self.call_engine("running a command", self.api.exec_start, exec_id, socket=True)
        raw: socket.socket = getattr(sock, "_sock", sock)
        started = time.monotonic()
        try:
            stdout, stderr = _exchange(raw, stdin, deadline=started + timeout + 5)
        finally:
            raw.close()
        info = self.call_engine("reading the command's result", self.api.exec_inspect, exec_id)
        exit_code = info.get("ExitCode")
        elapsed = time.monotonic() - started
        timed_out = exit_code is None or (exit_code in (124, 137) and elapsed >= timeout - 0.05)
        return ExecResult(exit_code if exit_code is not None else 124, stdout, stderr, timed_out=timed_out)

    # files ----------------------------------------------------------------------------------
    def _file_command(self, state: dict[str, Any], script: str, path: str, *, stdin: bytes | None = None,
                      timeout: float = 20) -> ExecResult:
        relative = clean_workspace_path(path)
        target = f"{self.workspace}/{relative}" if relative else self.workspace
        return self.exec(state, ["sh", "-c", CONFINE + script, "sh", target], stdin=stdin, timeout=timeout)

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        result = self._file_command(state, LIST_SCRIPT, path)
        if result.exit_code != 0:
            raise RunnerError(f"{path or '.'}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return parse_listing(result.stdout, self.workspace)

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        result = self._file_command(state, read_script(max_bytes), path)
        if result.exit_code != 0:
            raise RunnerError(f"{path}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return result.stdout

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        if not clean_workspace_path(path):
            raise RunnerError("Give a file name.", permanent=True)
        result = self._file_command(state, WRITE_SCRIPT, path, stdin=data)
        if result.exit_code != 0:
            reason = result.stderr.decode(errors="replace").strip()
            if not reason:
                # A command that dies while the data is still coming can take its message with it.
                usage = self.disk_usage(state)
                reason = ("No space left on device (the session's disk is full)" if usage and usage.fraction > 0.98
                          else f"the save failed (exit status {result.exit_code})")
            raise RunnerError(f"{path}: {reason}", permanent=True)

    # files the judge reads: through the engine's archive API --------------------------------
    # No program in the container takes part: a learner who is root there (Docker-in-Docker)
    # could replace sh, stat or cat, but not what the engine reads from the container's
    # filesystem. The engine confines every path to the container's own root (never the host);
    # the walk below also refuses symlinks that lead out of the workspace.

    def _engine_lstat(self, state: dict[str, Any], absolute: str) -> dict[str, Any] | None:
        """The engine's lstat of a container path (the last component is not followed); None if absent."""
        url = self.api._url("/containers/{0}/archive", state.get("container_id", ""))
        try:
            response = self.api.head(url, params={"path": absolute}, timeout=self.api.timeout)
        except Exception as exc:
            raise self._translate("reading the workspace", exc) from exc
        if response.status_code == 404:
            return None
        header = response.headers.get("X-Docker-Container-Path-Stat")
        if response.status_code != 200 or not header:
            raise RunnerError(f"reading the workspace: the engine answered {response.status_code} for {absolute}")
        stat: dict[str, Any] = docker.utils.decode_json_header(header)
        return stat

    def _resolve_in_workspace(self, state: dict[str, Any], path: str) -> tuple[str, dict[str, Any]] | None:
        """Follow ``path`` from the workspace one component at a time; (resolved relative path, stat).

        A symlink is followed only when the engine's resolution of it (scoped to the container's
        root) lands inside the workspace, and its target is walked again the same way. None when
        the path is missing, passes through a non-directory, or leads outside.
        """
        root = self._engine_lstat(state, self.workspace)
        if root is None:
            raise RunnerError("the session's container or its workspace is gone")
        if not int(root.get("mode", 0)) & _GO_DIR:
            return None  # the workspace itself replaced (by a symlink, say): nothing in it to read
        pending = [part for part in clean_workspace_path(path).split("/") if part]
        pending.reverse()  # a stack: the next component is last
        current, found, links = "", root, 0
        while pending:
            part = pending.pop()
            candidate = f"{current}/{part}" if current else part
            try:
                stat = self._engine_lstat(state, f"{self.workspace}/{candidate}")
            except RunnerError:
                # The engine refuses what it cannot resolve (a symlink loop: a bare 500). If the
                # workspace still answers, the fault is this path's: it cannot be followed.
                self._engine_lstat(state, self.workspace)
                return None
            if stat is None:
                return None
            mode = int(stat.get("mode", 0))
            if mode & _GO_SYMLINK:
                links += 1
                inside = _inside(self.workspace, str(stat.get("linkTarget") or ""))
                if inside is None or links > MAX_SYMLINKS:
                    return None
                pending.extend(reversed([p for p in inside.split("/") if p]))
                current, found = "", root
                continue
            if pending and not mode & _GO_DIR:
                return None
            current, found = candidate, stat
        return current, found

    def stat_file(self, state: dict[str, Any], path: str) -> FileStat | None:
        resolved = self._resolve_in_workspace(state, path)
        if resolved is None:
            return None
        relative, stat = resolved
        mode = int(stat.get("mode", 0))
        return FileStat(path=relative, is_dir=bool(mode & _GO_DIR), is_file=not mode & _GO_TYPE,
                        size=int(stat.get("size") or 0), mode=_unix_mode(mode))

    def read_file_untrusted(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        shown = clean_workspace_path(path)
        found = self.stat_file(state, shown)
        if found is None or not found.is_file:
            raise RunnerError(f"{shown}: no such file", permanent=True)
        if found.size > max_bytes:
            raise RunnerError(f"{shown}: larger than {int(max_bytes)} bytes", permanent=True)
        data = self._engine_read(state, f"{self.workspace}/{found.path}", shown, max_bytes)
        # The engine follows symlinks in the directories above the file; resolving again catches
        # a directory swapped for a symlink while the file was being read.
        again = self.stat_file(state, shown)
        if again is None or again.path != found.path or not again.is_file:
            raise RunnerError(f"{shown}: changed while it was read", permanent=True)
        return data

    def _engine_read(self, state: dict[str, Any], absolute: str, shown: str, max_bytes: int) -> bytes:
        """One regular file's bytes, from the engine's tar of it (streamed, at most ``max_bytes``)."""
        url = self.api._url("/containers/{0}/archive", state.get("container_id", ""))
        try:
            response = self.api._get(url, params={"path": absolute}, stream=True,
                                     headers={"Accept-Encoding": "identity"})
            self.api._raise_for_status(response)
        except Exception as exc:
            raise self._translate(f"reading {shown}", exc) from exc
        buffer = bytearray()
        try:
            for chunk in response.iter_content(65536):
                buffer.extend(chunk)
                if len(buffer) > max_bytes + TAR_OVERHEAD:  # grown since it was measured
                    raise RunnerError(f"{shown}: larger than {int(max_bytes)} bytes", permanent=True)
        except RunnerError:
            raise
        except Exception as exc:
            raise self._translate(f"reading {shown}", exc) from exc
        finally:
            response.close()
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(buffer)), mode="r:") as archive:
                member = archive.next()
                if member is None or not member.isreg():
                    raise RunnerError(f"{shown}: no such file", permanent=True)
                if member.size > max_bytes:
                    raise RunnerError(f"{shown}: larger than {int(max_bytes)} bytes", permanent=True)
                extracted = archive.extractfile(member)
                return extracted.read() if extracted is not None else b""
        except tarfile.TarError as exc:
            raise RunnerError(f"{shown}: the engine sent an unreadable archive ({exc})") from exc

    # reaching the session ---------------------------------------------------------------------
    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        info = self.call_engine("finding the container", self.api.inspect_container, state.get("container_id", ""))
        endpoints = self.endpoints_of(info)
        if not endpoints.get("host"):
            raise RunnerError("this session has no network, so its ports cannot be reached", permanent=True)
        return Endpoint(host=endpoints["host"], port=port)

    def terminal_exists(self, state: dict[str, Any], name: str) -> bool:
        # Shells are kept in a per-name tmux session where the image has tmux; `tmux new-session -A`
        # does not say whether it created or joined one, so tmux is asked first.
        try:
            return self.exec(state, ["sh", "-c", tmux_probe(name)], timeout=5).exit_code == 0
        except RunnerError:
            return False

    def open_terminal(self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1") -> DockerTerminal:
        shell = terminal_shell(name)
        created = self.call_engine(
            "opening a terminal",
            self.api.exec_create,
            state["container_id"],
            ["sh", "-c", shell],
            stdin=True,
            tty=True,
            user=state.get("user") or "root",
            workdir=state.get("shell_dir") or self.workspace,
            environment={"TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": self._home(state)},
        )
        sock = self.call_engine("opening a terminal", self.api.exec_start, created["Id"], socket=True, tty=True)
        terminal = DockerTerminal(self.api, created["Id"], sock)
        try:
            terminal.resize(cols, rows)
        except RunnerError:
            pass  # the exec may not have started yet; the client resizes again on connect
        return terminal

    def _home(self, state: dict[str, Any]) -> str:
        user = state.get("user")
        return f"/home/{user}" if user else "/root"

    # supervision ------------------------------------------------------------------------------
    def list_managed(self) -> list[ManagedEnvironment]:
        return self._list_managed([f"{LABEL_MANAGED}={self.instance}"], self.disks.names())

    def list_managed_for(self, session_id: str) -> list[ManagedEnvironment]:
        # The engine filters by the session's label: teardown of one session lists only its own.
        disk = self.container_name(session_id)
        disks = [disk] if disk in self.disks.names() else []  # a directory listing: cheap beside the engine's
        return self._list_managed([f"{LABEL_MANAGED}={self.instance}", f"{LABEL_SESSION}={session_id}"], disks)

    def _list_managed(self, labels: list[str], disks: list[str]) -> list[ManagedEnvironment]:
        containers = self.call_engine(
            "listing containers", self.client.containers.list, all=True, filters={"label": labels},
        )
        found = [
            ManagedEnvironment(c.labels.get(LABEL_SESSION, ""), c.id, c.status == "running", {"name": c.name})
            for c in containers
        ]
        with_container = {env.session_id for env in found}
        networks = self.call_engine("listing networks", self.client.networks.list, filters={"label": labels})
        for network in networks:
            session_id = (network.attrs.get("Labels") or {}).get(LABEL_SESSION, "")
            if session_id not in with_container:
                found.append(ManagedEnvironment(session_id, f"network:{network.id}", False, {"name": network.name}))
                with_container.add(session_id)
        # A failed Docker-in-Docker start in network mode none/unrestricted has no network of its
        # own, so its engine volume can be all that is left: report it, or nothing ever removes it.
        volumes = self.call_engine("listing volumes", self.client.volumes.list, filters={"label": labels})
        for volume in volumes:
            session_id = (volume.attrs.get("Labels") or {}).get(LABEL_SESSION, "")
            if session_id and session_id in with_container:
                continue  # removing that container or network removes the session's volumes too
            found.append(ManagedEnvironment(session_id, f"volume:{volume.name}", False, {"name": volume.name}))
            with_container.add(session_id)
        # A session disk outlives nothing else by design, but a crash between making it and the
        # container can leave it alone.
        for disk in disks:
            session_id = self._session_of_disk(disk) or ""
            if session_id and session_id not in with_container:
                found.append(ManagedEnvironment(session_id, f"disk:{disk}", False, {"name": disk}))
                with_container.add(session_id)
        return found

    def remove_managed(self, env: ManagedEnvironment) -> None:
        kind, _, name = env.ref.partition(":")
        if kind == "disk":
            self.disks.remove(name)
        elif kind in ("volume", "network"):
            # Removed by name as well, so one that lacks a session label still goes.
            collection = self.client.volumes if kind == "volume" else self.client.networks
            try:
                resource = collection.get(name)
                resource.remove(**({"force": True} if kind == "volume" else {}))
            except docker.errors.NotFound:
                pass  # already gone (a concurrent teardown or reconciler)
            except Exception as exc:
                raise self._translate(f"removing {kind} {name}", exc) from exc
        else:
            try:
                container = self.client.containers.get(env.ref)
                self.call_engine("removing container", container.remove, v=True, force=True)
            except docker.errors.NotFound:
                pass
        if env.session_id:
            self._remove_session_resources(env.session_id)

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        container = self.call_engine("finding the container", self.client.containers.get, state.get("container_id", ""))
        raw = self.call_engine("reading stats", container.stats, stream=False)
        cpu = raw.get("cpu_stats", {})
        pre = raw.get("precpu_stats", {})
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or 1
        percent = (cpu_delta / system_delta) * cpus * 100.0 if system_delta > 0 and cpu_delta > 0 else 0.0
        memory = raw.get("memory_stats", {})
        # As `docker stats` counts it: the cgroup's usage includes the page cache of files written or
        # read, which the kernel drops at once under pressure (inactive files); that is not in use.
        usage = int(memory.get("usage", 0))
        cache = memory.get("stats", {})
        inactive = int(cache.get("inactive_file", cache.get("total_inactive_file", 0)))
        return RunnerStats(
            cpu_percent=round(percent, 2),
            memory_bytes=usage - inactive if inactive < usage else usage,
            memory_limit_bytes=int(memory.get("limit", 0)),
            pids=int(raw.get("pids_stats", {}).get("current", 0)),
        )

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """The containers' stdout and stderr as the engine logged them (container_logs.py): the
        learner's (for Docker-in-Docker, what its entrypoint says about the inner engine; dockerd's
        own log is a file inside), then the session's other hosts and the engine beside it, their
        lines marked "[host] " and "[engine] "."""
        sources = [("", str(state.get("container_id", "")))]
        sources += [(host, str(container_id)) for host, container_id in (state.get("hosts") or {}).items()]
        if state.get("engine_container_id"):
            sources.append(("engine", str(state["engine_container_id"])))
        return self.call_engine("reading the session's output", container_logs.session_output, self.api, sources,
                                since, max_bytes)


def _unix_mode(go_mode: int) -> int:
    """Permission bits (0o7777) from a Go FileMode."""
    mode = go_mode & 0o777
    for go_bit, bit in ((_GO_SETUID, 0o4000), (_GO_SETGID, 0o2000), (_GO_STICKY, 0o1000)):
        if go_mode & go_bit:
            mode |= bit
    return mode


def _inside(workspace: str, target: str) -> str | None:
    """``target`` (an absolute container path) relative to the workspace, or None if it is outside."""
    target = posixpath.normpath(target) if target.startswith("/") else ""
    if target == workspace:
        return ""
    return target[len(workspace) + 1:] if target.startswith(workspace + "/") else None


def _exchange(raw: socket.socket, stdin: bytes | None, deadline: float) -> tuple[bytes, bytes]:
    """Feed `stdin` to an exec and read its multiplexed output (8-byte frame headers) at the same
    time, until EOF or the deadline. A command that stops reading early (it failed, or needs no
    more) never blocks the feeding: what it printed is read all the while, and the rest of the
    input is dropped when the engine closes its side."""
    buffers = {1: bytearray(), 2: bytearray()}
    pending = bytearray()
    to_send = memoryview(stdin) if stdin is not None else None
    raw.setblocking(False)
    with selectors.DefaultSelector() as selector:  # poll/epoll: no limit on descriptor numbers
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if to_send is not None else 0)
        selector.register(raw, events)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready = selector.select(min(remaining, 1.0))
            if not ready:
                continue
            mask = ready[0][1]
            if mask & selectors.EVENT_WRITE and to_send is not None:
                try:
                    sent = raw.send(to_send[:65536])
                    to_send = to_send[sent:]
                except BlockingIOError:
                    pass
                except OSError:
                    to_send = memoryview(b"")  # the engine closed its side: the command has ended
                if to_send is not None and not len(to_send):
                    to_send = None
                    try:
                        raw.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    selector.modify(raw, selectors.EVENT_READ)
            if not mask & selectors.EVENT_READ:
                continue
            try:
                chunk = raw.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break
            pending.extend(chunk)
            while len(pending) >= 8:
                stream, size = pending[0], struct.unpack(">I", pending[4:8])[0]
                if len(pending) < 8 + size:
                    break
                target = buffers.get(stream, buffers[1])
                if len(target) < MAX_OUTPUT:
                    target.extend(pending[8:8 + size][: MAX_OUTPUT - len(target)])
                del pending[:8 + size]
    return bytes(buffers[1]), bytes(buffers[2])
