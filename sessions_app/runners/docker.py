"""Docker runner: one labelled container per session, optionally with its own Docker engine.

OPTIONS (all optional):
    base_url        engine address (default: DOCKER_HOST or the local socket)
    instance        value of the managed-by label, to share an engine between installs ("labs")
    cap_add         capabilities kept for ordinary sessions (everything else is dropped)
    dind_mode       "auto" | "privileged" | "capabilities": how Docker-in-Docker sessions get the
                    rights their inner engine needs. "privileged" is the usual choice; "capabilities"
                    is for hosts where --privileged cannot work (all capabilities but
                    SYS_RESOURCE, unconfined seccomp/AppArmor, private cgroup namespace).
                    "auto" tries privileged first and remembers what worked.
    dind_preload    images copied into an inner engine when the lab names none in its
                    `dind_images` (default ["labs/busybox:latest"])
    preload_cache   where saved image tarballs are cached (default DATA_DIR/preload)
    api_timeout     seconds for one engine API call (default 60)
    vnc_port        where a session's VNC server listens, for labs with a graphical console (5900)
    guard_host      keep sessions from opening connections to the host's own services (default
                    true for a local engine). Session bridges are named "labs…" and one iptables
                    rule drops new connections from them into the host; replies to connections
                    the platform opens (the web preview) still pass. Needs root and iptables.
    vm_image        the runner image for VM labs (default "labs/qemu:bookworm"). A session whose
                    image is a VM disk or ISO boots in a container of this image: QEMU as its main
                    process, the base bind-mounted read-only, a qcow2 overlay on a per-session volume,
                    QMP and the serial console on unix sockets inside (the terminal is the serial
                    console), VNC on vnc_port of the session's network only. See docker_vm.py, also
                    for vm_accel (default settings.LAB_QEMU_ACCEL), vm_powerdown_timeout (10),
                    vm_memory_overhead_mb (256, added to the lab's memory for QEMU itself) and
                    vm_tcg_cache_mb (64).
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import select
import socket
import struct
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
from django.conf import settings

from sessions_app.runners.base import (
    Endpoint,
    ExecResult,
    FileEntry,
    FileStat,
    ManagedEnvironment,
    PollStatus,
    ProgressCallback,
    Runner,
    RunnerError,
    RunnerStats,
    SessionSpec,
    StartResult,
    _no_progress,
    clean_workspace_path,
)
from sessions_app.runners.docker_vm import DockerVM, is_vm_spec, is_vm_state

log = logging.getLogger(__name__)

LABEL_MANAGED = "labs.managed-by"
LABEL_SESSION = "labs.session"
LABEL_USER = "labs.user"
LABEL_LAB = "labs.lab"
SHELL_USER_LABEL = "org.labs.shell-user"  # set on images whose USER must stay root (DinD entrypoints)

# Keeps the container alive and exits at once on SIGTERM, so stops are fast.
KEEPALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
# Everything the platform starts in a session (commands, shells) offers itself to the OOM killer
# first, so a memory hog never takes the container's init or keep-alive down with it. Raising
# one's own oom_score_adj needs no capability; lowering it below the container's would.
OOM_FIRST = "echo 500 >/proc/self/oom_score_adj 2>/dev/null; "
DEFAULT_PRELOAD = ["labs/busybox:latest"]
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETUID", "SETGID"]
DIND_CAPABILITY_OPTIONS: dict[str, Any] = {
    "cgroupns": "private",
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
}
MAX_OUTPUT = 4 * 1024 * 1024
BRIDGE_PREFIX = "labs"
HOST_GUARD_RULE = ["INPUT", "-i", f"{BRIDGE_PREFIX}+", "-m", "conntrack", "--ctstate", "NEW,INVALID",
                   "-j", "DROP"]
_STORAGE_LIMIT_DRIVERS = {"devicemapper", "btrfs", "zfs"}
# Go's os.FileMode bits, in which the engine reports a path's mode (archive API).
_GO_DIR, _GO_SYMLINK = 1 << 31, 1 << 27
_GO_SETUID, _GO_SETGID, _GO_STICKY = 1 << 23, 1 << 22, 1 << 20
# Everything that makes a path not a regular file: dir, symlink, device, pipe, socket, char device, irregular.
_GO_TYPE = _GO_DIR | _GO_SYMLINK | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)
MAX_SYMLINKS = 40  # as Linux's ELOOP limit
TAR_OVERHEAD = 64 * 1024  # headers (PAX, xattrs) and padding around one file in the engine's tar


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if text else type(exc).__name__


class DockerTerminal:
    """A TTY exec attached over the hijacked API socket."""

    def __init__(self, runner: DockerRunner, exec_id: str, sock: Any) -> None:
        self._runner = runner
        self.exec_id = exec_id
        self._sock_wrapper = sock
        self._sock: socket.socket = getattr(sock, "_sock", sock)
        self._closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return self._sock.recv(max_bytes)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def resize(self, cols: int, rows: int) -> None:
        try:
            self._runner.api.exec_resize(self.exec_id, height=rows, width=cols)
        except docker.errors.APIError as exc:
            raise RunnerError(f"resize failed: {_short(exc)}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class DockerRunner(Runner):
    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.instance = str(self.options.get("instance", "labs"))
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._dind_mode_found: str | None = None
        self._image_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._storage_driver: tuple[str, str] | None = None
        self._host_guarded = False
        self.vm = DockerVM(self)  # VM labs: QEMU in a runner container (docker_vm.py)

    # engine -------------------------------------------------------------------------------
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
                    raise RunnerError(f"Docker engine unreachable: {_short(exc)}") from exc
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

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one engine call, turning the SDK's errors into RunnerError with a readable reason."""
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: Exception) -> Exception:
        if isinstance(exc, RunnerError):
            return exc
        if isinstance(exc, docker.errors.ImageNotFound):
            return RunnerError(f"{what}: image not found on this engine ({_short(exc)})", permanent=True)
        if isinstance(exc, docker.errors.NotFound):
            return RunnerError(f"{what}: not found ({_short(exc)})", permanent=True)
        if isinstance(exc, docker.errors.APIError):
            return RunnerError(f"{what}: {_short(exc)}", permanent=bool(exc.is_client_error()))
        unreachable = isinstance(exc, (docker.errors.DockerException, OSError)) or any(
            word in type(exc).__name__ for word in ("Connection", "Timeout")
        )
        if unreachable:
            with self._client_lock:
                self._client = None
            return RunnerError(f"{what}: Docker engine unreachable ({_short(exc)})")
        return exc

    # naming -------------------------------------------------------------------------------
    def _labels(self, spec: SessionSpec) -> dict[str, str]:
        return {
            LABEL_MANAGED: self.instance,
            LABEL_SESSION: spec.session_id,
            LABEL_USER: str(spec.user_id),
            LABEL_LAB: spec.lab_slug,
        }

    def _name(self, session_id: str) -> str:
        return f"{self.instance}-{session_id}"

    # start ----------------------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = _no_progress, timeout: float = 120.0
    ) -> StartResult:
        if is_vm_spec(spec):
            return self.vm.start(spec, progress, timeout)
        deadline = time.monotonic() + timeout
        image = self._image(spec.image)
        network = self._ensure_network(spec)
        progress("Creating container")
        container_id, adopted = self._create_container(spec, image, network, progress)
        if adopted:
            progress("Found the existing container; adopting it")
        info = self._call("inspecting container", self.api.inspect_container, container_id)
        if not info["State"]["Running"]:
            progress("Starting container")
            self._call("starting container", self.api.start, container_id)
            info = self._call("inspecting container", self.api.inspect_container, container_id)
        state = self._state_of(info, image, spec)
        if spec.starter_dir and not self._marker_exists(state, "/run/labs-starter-copied"):
            progress("Copying starter files")
            self._copy_starter(state, spec.starter_dir)
        if spec.docker_access:
            progress("Starting Docker engine")
            self._wait_for_inner_engine(state, deadline)
        if time.monotonic() > deadline:
            raise RunnerError(f"environment not ready after {timeout:g} s")
        progress("Container ready")
        endpoints = self._endpoints(info)
        if "vnc" in spec.consoles and endpoints.get("host"):
            endpoints["vnc"] = {"host": endpoints["host"], "port": int(self.options.get("vnc_port", 5900))}
        return StartResult(state=state, endpoints=endpoints)

    def _image(self, reference: str) -> dict[str, Any]:
        """Inspect an image, cached briefly: every start needs it, and it rarely changes."""
        now = time.monotonic()
        cached = self._image_cache.get(reference)
        if cached and now - cached[0] < 30:
            return cached[1]
        attrs = self._call(f"looking up image {reference}", self.api.inspect_image, reference)
        self._image_cache[reference] = (now, attrs)
        return attrs

    def _ensure_network(self, spec: SessionSpec) -> str:
        mode = spec.network_mode
        if mode == "none":
            return "none"
        if mode == "unrestricted":
            return "bridge"
        name = self._name(spec.session_id)
        self._ensure_host_guard()
        try:
            self.api.create_network(
                name,
                driver="bridge",
                internal=(mode == "isolated"),
                labels=self._labels(spec),
                options={"com.docker.network.bridge.name": BRIDGE_PREFIX + spec.session_id.replace("-", "")[:11]},
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: it exists already (a retried start)
                raise self._translate("creating network", exc) from exc
        except Exception as exc:
            raise self._translate("creating network", exc) from exc
        return name

    def _ensure_host_guard(self) -> None:
        if self._host_guarded:
            return
        default = not str(self.options.get("base_url", "")).startswith(("tcp://", "ssh://", "http"))
        if not self.options.get("guard_host", default):
            self._host_guarded = True
            return
        try:
            present = subprocess.run(["iptables", "-C", *HOST_GUARD_RULE], capture_output=True, timeout=10)
            if present.returncode == 0:
                self._host_guarded = True
                return
            added = subprocess.run(["iptables", "-I", *HOST_GUARD_RULE], capture_output=True, timeout=10, text=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            added = subprocess.CompletedProcess([], 1, "", str(exc))
        if added.returncode != 0:
            raise RunnerError(
                "cannot install the firewall rule that keeps sessions away from the host's services "
                f"(iptables: {added.stderr.strip() or 'failed'}); run the platform as root with iptables, "
                "or set the Docker runner option guard_host=false to accept that risk",
                permanent=True,
            )
        self._host_guarded = True

    def _image_user(self, image: dict[str, Any]) -> str:
        """The user learners get: the image's `org.labs.shell-user` label, else its USER."""
        config = image.get("Config") or {}
        return str((config.get("Labels") or {}).get(SHELL_USER_LABEL) or config.get("User") or "")

    def _storage_opts(self, spec: SessionSpec, progress: ProgressCallback) -> dict[str, str] | None:
        if self._storage_driver is None:
            info = self._call("reading engine info", self.client.info)
            backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
            self._storage_driver = (info.get("Driver", ""), backing)
        driver, backing = self._storage_driver
        if driver in _STORAGE_LIMIT_DRIVERS or (driver == "overlay2" and backing == "xfs"):
            return {"size": f"{spec.disk_mb}M"}
        progress(f"Note: disk limit not enforced by the {driver} storage driver on {backing or 'this filesystem'}")
        return None

    def _create_container(
        self, spec: SessionSpec, image: dict[str, Any], network: str, progress: ProgressCallback
    ) -> tuple[str, bool]:
        """Create the session's container; return its id and whether it already existed."""
        host: dict[str, Any] = {
            "nano_cpus": int(spec.cpu * 1e9),
            "mem_limit": f"{spec.memory_mb}m",
            "memswap_limit": f"{spec.memory_mb}m",  # equal to the memory limit: no swap
            "pids_limit": spec.pids_limit,
            "network_mode": network,
            "storage_opt": self._storage_opts(spec, progress),
        }
        create: dict[str, Any] = {
            "name": self._name(spec.session_id),
            "hostname": "lab",
            "labels": self._labels(spec),
            "detach": True,
            "working_dir": self.workspace,
            "environment": {"LAB_SESSION": spec.session_id, "TERM": "xterm-256color"},
            "command": KEEPALIVE,
        }
        if network not in ("none", "bridge"):
            create["networking_config"] = self.api.create_networking_config(
                {network: self.api.create_endpoint_config()}
            )
        if not spec.docker_access:
            host.update(
                init=True,
                cap_drop=["ALL"],
                cap_add=list(self.options.get("cap_add", DEFAULT_CAPS)),
                security_opt=["no-new-privileges:true"],
            )
            create["entrypoint"] = []
            return self._create_low_level(image["Id"], host, create)
        # Docker-in-Docker: the entrypoint starts the inner engine as root; shells use the shell user.
        create["user"] = "root"
        volume = self._call(
            "creating engine volume", self.client.volumes.create, name=f"{self._name(spec.session_id)}-docker",
            labels=self._labels(spec),
        )
        binds = {volume.name: {"bind": "/var/lib/docker", "mode": "rw"}}
        binds.update(self._preload_mounts(spec.dind_images or self.options.get("dind_preload", DEFAULT_PRELOAD),
                                          progress))
        host["binds"] = binds
        return self._create_dind(image["Id"], host, create)

    def _create_low_level(
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
                existing = self._call("adopting container", self.api.inspect_container, create["name"])
                return existing["Id"], True
            raise self._translate("creating container", exc) from exc
        except Exception as exc:
            raise self._translate("creating container", exc) from exc
        return created["Id"], False

    def _create_dind(self, image_id: str, host: dict[str, Any], create: dict[str, Any]) -> tuple[str, bool]:
        mode = self._dind_mode_found or self.options.get("dind_mode", "auto")
        modes = ["privileged", "capabilities"] if mode == "auto" else [mode]
        last_error: RunnerError | None = None
        for candidate in modes:
            attempt = dict(host)
            if candidate == "privileged":
                attempt["privileged"] = True
            else:
                attempt.update(DIND_CAPABILITY_OPTIONS)
            container_id, adopted = self._create_low_level(
                image_id, attempt, create, unmask_paths=candidate != "privileged"
            )
            if adopted:
                return container_id, True
            try:
                self._call("starting container", self.api.start, container_id)
            except RunnerError as exc:
                last_error = exc
                log.info("DinD mode %s failed here: %s", candidate, exc)
                self._call("removing failed container", self.api.remove_container, container_id, force=True)
                continue
            self._dind_mode_found = candidate
            return container_id, False
        raise RunnerError(f"cannot start a Docker-in-Docker container on this host: {last_error}", permanent=True)

    def _preload_mounts(
        self, refs: list[str] | tuple[str, ...], progress: ProgressCallback
    ) -> dict[str, dict[str, str]]:
        """Save each preload image once to a tarball cache, then bind it read-only into /preload."""
        cache = Path(self.options.get("preload_cache") or Path(settings.DATA_DIR) / "preload")
        cache.mkdir(parents=True, exist_ok=True)
        mounts: dict[str, dict[str, str]] = {}
        for ref in refs:
            image = self._call(f"looking up preload image {ref}", self.client.images.get, ref)
            tarball = cache / f"{image.id.replace(':', '_')}.tar"
            if not tarball.exists():
                progress(f"Saving {ref} for the inner engine (first time only)")
                partial = tarball.with_suffix(f".{os.getpid()}.partial")
                with partial.open("wb") as out:
                    for chunk in self._call(f"saving {ref}", image.save, named=True):
                        out.write(chunk)
                partial.replace(tarball)
            safe = ref.replace("/", "_").replace(":", "_")
            mounts[str(tarball)] = {"bind": f"/preload/{safe}.tar", "mode": "ro"}
        return mounts

    def _wait_for_inner_engine(self, state: dict[str, Any], deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._marker_exists(state, "/run/dind-ready"):
                return
            time.sleep(0.2)
        logs = self.exec(state, ["sh", "-c", "tail -n 20 /var/log/dockerd.log 2>/dev/null"], user="root", timeout=5)
        raise RunnerError("the session's Docker engine did not start in time: "
                          + logs.stdout.decode(errors="replace")[-500:])

    def _marker_exists(self, state: dict[str, Any], path: str) -> bool:
        return self.exec(state, ["test", "-e", path], user="root", timeout=5).exit_code == 0

    def _copy_starter(self, state: dict[str, Any], starter_dir: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for entry in sorted(Path(starter_dir).rglob("*")):
                archive.add(entry, arcname=str(entry.relative_to(starter_dir)), recursive=False)
        self._call("copying starter files", self.api.put_archive, state["container_id"], self.workspace,
                   buffer.getvalue())
        user = state.get("user") or "root"
        self.exec(state, ["sh", "-c", f"chown -R {user} {self.workspace} 2>/dev/null; touch /run/labs-starter-copied"],
                  user="root", timeout=15)

    def _state_of(self, info: dict[str, Any], image: dict[str, Any], spec: SessionSpec) -> dict[str, Any]:
        user = self._image_user(image).split(":")[0]
        networks = list((info.get("NetworkSettings") or {}).get("Networks") or {})
        return {
            "container_id": info["Id"],
            "name": info["Name"].lstrip("/"),
            "networks": networks,
            "user": "" if user == "root" else user,
            "docker_access": spec.docker_access,
        }

    def _endpoints(self, info: dict[str, Any]) -> dict[str, Any]:
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        for net in networks.values():
            if net.get("IPAddress"):
                return {"host": net["IPAddress"]}
        return {}

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        if is_vm_state(state):
            self.vm.power_down(state, timeout)  # the guest shuts down first; removal is the same below
        container_id = state.get("container_id")
        session_id = None
        if container_id:
            try:
                container = self.client.containers.get(container_id)
            except docker.errors.NotFound:
                container = None
            except docker.errors.DockerException as exc:
                raise RunnerError(f"Docker engine unreachable ({_short(exc)})") from exc
            if container is not None:
                session_id = container.labels.get(LABEL_SESSION)
                self._call("stopping container", container.stop, timeout=int(timeout))
                self._call("removing container", container.remove, v=True, force=True)
        if session_id is None and state.get("name", "").startswith(f"{self.instance}-"):
            session_id = state["name"][len(self.instance) + 1:]
        if session_id:
            self._remove_session_resources(session_id)

    def _remove_session_resources(self, session_id: str) -> None:
        label = [f"{LABEL_MANAGED}={self.instance}", f"{LABEL_SESSION}={session_id}"]
        for network in self._call("listing networks", self.client.networks.list, filters={"label": label}):
            self._call("removing network", network.remove)
        for volume in self._call("listing volumes", self.client.volumes.list, filters={"label": label}):
            self._call("removing volume", volume.remove, force=True)

    def poll(self, state: dict[str, Any]) -> PollStatus:
        try:
            container = self.client.containers.get(state.get("container_id", ""))
        except docker.errors.NotFound:
            return PollStatus.MISSING
        except docker.errors.DockerException as exc:
            raise RunnerError(f"Docker engine unreachable ({_short(exc)})") from exc
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
        if is_vm_state(state):
            raise RunnerError("commands cannot run inside a VM without a guest agent", permanent=True)
        exec_user = user if user is not None else (state.get("user") or "root")
        wrapped = ["sh", "-c", OOM_FIRST + 'exec "$@"', "labs-exec",
                   "timeout", "-s", "KILL", str(max(1, int(timeout + 0.999))), *command]
        created = self._call(
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
        sock = self._call("running a command", self.api.exec_start, exec_id, socket=True)
        raw: socket.socket = getattr(sock, "_sock", sock)
        started = time.monotonic()
        try:
            if stdin is not None:
                raw.sendall(stdin)
            if stdin is not None:
                try:
                    raw.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            stdout, stderr = _read_multiplexed(raw, deadline=started + timeout + 5)
        finally:
            raw.close()
        info = self._call("reading the command's result", self.api.exec_inspect, exec_id)
        exit_code = info.get("ExitCode")
        elapsed = time.monotonic() - started
        timed_out = exit_code is None or (exit_code in (124, 137) and elapsed >= timeout - 0.05)
        return ExecResult(exit_code if exit_code is not None else 124, stdout, stderr, timed_out=timed_out)

    # files ----------------------------------------------------------------------------------
    _CONFINE = (
        # The deepest existing ancestor (or the path itself, symlinks followed) must resolve inside.
        'p="$1"; d="$p"; while [ ! -e "$d" ] && [ ! -L "$d" ]; do d=$(dirname "$d"); done; '
        'r=$(realpath "$d" 2>/dev/null) || { echo "outside the workspace" >&2; exit 3; }; '
        'case "$r" in /workspace|/workspace/*) ;; *) echo "outside the workspace" >&2; exit 3;; esac; '
    )

    def _file_command(self, state: dict[str, Any], script: str, path: str, *, stdin: bytes | None = None,
                      timeout: float = 20) -> ExecResult:
        relative = clean_workspace_path(path)
        target = f"{self.workspace}/{relative}" if relative else self.workspace
        return self.exec(state, ["sh", "-c", self._CONFINE + script, "sh", target], stdin=stdin, timeout=timeout)

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        script = (
            '[ -d "$p" ] || { echo "not a directory" >&2; exit 4; }; '
            'for f in "$p"/* "$p"/.[!.]* "$p"/..?*; do [ -e "$f" ] || [ -L "$f" ] || continue; '
            "stat -c '%F|%s|%Y|%n' \"$f\"; done"
        )
        result = self._file_command(state, script, path)
        if result.exit_code != 0:
            raise RunnerError(f"{path or '.'}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        entries = []
        prefix = self.workspace + "/"
        for line in result.stdout.decode(errors="replace").splitlines():
            kind, size, mtime, name = line.split("|", 3)
            entries.append(FileEntry(name.removeprefix(prefix), kind == "directory", int(size), float(mtime)))
        return sorted(entries, key=lambda e: (not e.is_dir, e.path))

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        script = (
            '[ -f "$p" ] || { echo "no such file" >&2; exit 4; }; '
            f'[ "$(stat -c %s "$p")" -le {int(max_bytes)} ] || {{ echo "larger than {int(max_bytes)} bytes" >&2; '
            'exit 5; }; cat "$p"'
        )
        result = self._file_command(state, script, path)
        if result.exit_code != 0:
            raise RunnerError(f"{path}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return result.stdout

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        if not clean_workspace_path(path):
            raise RunnerError("Give a file name.", permanent=True)
        script = (
            '[ ! -d "$p" ] || { echo "is a directory" >&2; exit 4; }; '
            # Replace atomically, keeping the mode of a file that already exists (scripts stay executable).
            'm=$(stat -c %a "$p" 2>/dev/null); '
            'mkdir -p "$(dirname "$p")" && cat > "$p.labs-tmp" && { [ -z "$m" ] || chmod "$m" "$p.labs-tmp"; } '
            '&& mv -f "$p.labs-tmp" "$p"'
        )
        result = self._file_command(state, script, path, stdin=data)
        if result.exit_code != 0:
            raise RunnerError(f"{path}: {result.stderr.decode(errors='replace').strip()}", permanent=True)

    # files the judge reads: through the engine's archive API --------------------------------
    # No program in the container takes part: a learner who is root there (Docker-in-Docker)
    # could replace sh, stat or cat, but not what the engine reads from the container's
    # filesystem. The engine confines every path to the container's own root (never the host);
    # the walk below also refuses symlinks that lead out of the workspace.

    def _engine_lstat(self, state: dict[str, Any], absolute: str) -> dict[str, Any] | None:
        """The engine's lstat of a container path (the last component is not followed); None if absent."""
        if is_vm_state(state):
            raise RunnerError("VM labs have no file access", permanent=True)
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
        if is_vm_state(state):
            raise RunnerError("the ports of a VM lab cannot be reached from the platform", permanent=True)
        info = self._call("finding the container", self.api.inspect_container, state.get("container_id", ""))
        endpoints = self._endpoints(info)
        if not endpoints.get("host"):
            raise RunnerError("this session has no network, so its ports cannot be reached", permanent=True)
        return Endpoint(host=endpoints["host"], port=port)

    def open_terminal(self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1") -> DockerTerminal:
        if is_vm_state(state):
            return self.vm.open_terminal(state, cols, rows)  # the VM's serial console
        safe_name = "".join(c for c in name if c.isalnum() or c in "-_")[:32] or "1"
        # A per-terminal tmux session survives reconnects; plain bash where the image has no tmux.
        shell = (
            OOM_FIRST + f"if command -v tmux >/dev/null 2>&1; then exec tmux -u new-session -A -s term-{safe_name} "
            "\\; set-option -g status off; fi; "
            "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l"
        )
        created = self._call(
            "opening a terminal",
            self.api.exec_create,
            state["container_id"],
            ["sh", "-c", shell],
            stdin=True,
            tty=True,
            user=state.get("user") or "root",
            workdir=self.workspace,
            environment={"TERM": "xterm-256color", "LANG": "C.UTF-8", "HOME": self._home(state)},
        )
        sock = self._call("opening a terminal", self.api.exec_start, created["Id"], socket=True, tty=True)
        terminal = DockerTerminal(self, created["Id"], sock)
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
        containers = self._call(
            "listing containers", self.client.containers.list, all=True,
            filters={"label": f"{LABEL_MANAGED}={self.instance}"},
        )
        found = [
            ManagedEnvironment(c.labels.get(LABEL_SESSION, ""), c.id, c.status == "running", {"name": c.name})
            for c in containers
        ]
        with_container = {env.session_id for env in found}
        networks = self._call(
            "listing networks", self.client.networks.list, filters={"label": f"{LABEL_MANAGED}={self.instance}"}
        )
        for network in networks:
            session_id = (network.attrs.get("Labels") or {}).get(LABEL_SESSION, "")
            if session_id not in with_container:
                found.append(ManagedEnvironment(session_id, f"network:{network.id}", False, {"name": network.name}))
                with_container.add(session_id)
        # A failed Docker-in-Docker start in network mode none/unrestricted has no network of its
        # own, so its engine volume can be all that is left: report it, or nothing ever removes it.
        volumes = self._call(
            "listing volumes", self.client.volumes.list, filters={"label": f"{LABEL_MANAGED}={self.instance}"}
        )
        for volume in volumes:
            session_id = (volume.attrs.get("Labels") or {}).get(LABEL_SESSION, "")
            if session_id and session_id in with_container:
                continue  # removing that container or network removes the session's volumes too
            found.append(ManagedEnvironment(session_id, f"volume:{volume.name}", False, {"name": volume.name}))
            with_container.add(session_id)
        return found

    def remove_managed(self, env: ManagedEnvironment) -> None:
        kind, _, name = env.ref.partition(":")
        if kind in ("volume", "network"):
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
                self._call("removing container", container.remove, v=True, force=True)
            except docker.errors.NotFound:
                pass
        if env.session_id:
            self._remove_session_resources(env.session_id)

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        container = self._call("finding the container", self.client.containers.get, state.get("container_id", ""))
        raw = self._call("reading stats", container.stats, stream=False)
        cpu = raw.get("cpu_stats", {})
        pre = raw.get("precpu_stats", {})
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
        system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cpus = cpu.get("online_cpus") or 1
        percent = (cpu_delta / system_delta) * cpus * 100.0 if system_delta > 0 and cpu_delta > 0 else 0.0
        memory = raw.get("memory_stats", {})
        return RunnerStats(
            cpu_percent=round(percent, 2),
            memory_bytes=int(memory.get("usage", 0)),
            memory_limit_bytes=int(memory.get("limit", 0)),
            pids=int(raw.get("pids_stats", {}).get("current", 0)),
        )


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


def _read_multiplexed(raw: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    """Read Docker's multiplexed exec stream (8-byte frame headers) until EOF or the deadline."""
    buffers = {1: bytearray(), 2: bytearray()}
    pending = bytearray()
    raw.setblocking(False)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([raw], [], [], min(remaining, 1.0))
        if not ready:
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
