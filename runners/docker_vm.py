"""VM labs on a Docker engine (runner alias "docker-vm"): the session's QEMU runs in a container.

The registry sends every session whose image is a VM disk or ISO (`spec.image_kind` "vm" or
"iso") and whose lab names the Docker runner here (DockerRunner.vm_runner), so the same VM labs
the host QEMU runner boots also work wherever only a container engine is available. The runner is
composed of a DockerRunner for the engine (DockerVmRunner.engine), not a branch inside it.

One container per session, made from the runner image (option `vm_image`, default
labs/qemu:bookworm, built by deploy/scripts/build-images.sh from deploy/images/qemu):

    /vm/base/disk           the base disk (or /vm/base/cdrom.iso), bind-mounted read-only
    /vm/base/vmlinuz, initrd  the kernel files of an image directory (see qemu.py), read-only
    /var/lib/labs-vm        a per-session volume (labelled, removed on stop) holding
        overlay.qcow2       the session's disk, backed by the base (or empty, of spec.disk_mb, for an ISO)
    /run/vm/qmp.sock        QMP, only reachable with `docker exec` (flock qmp.lock serialises it)
    /run/vm/serial.sock     the serial console ttyS0; open_terminal() execs socat to it (QEMU serves
                            one client: the newest terminal takes the console over)
    /run/vm/serial.log      everything the guest prints there (the chardev's logfile, on the container's
                            writable layer): output() reads it through exec by byte offset; the
                            launcher trims it every few seconds past `vm_serial_log_max_mb` (1)

The container's command is a small launcher (LAUNCHER in vm_command.py, shared with the Kubernetes
runner's VM pods, passed with python3 -c so the image and the code never drift apart) that checks
the base with `qemu-img info` (qcow2 or raw, no backing or data file), creates the overlay once,
then execs qemu-system-x86_64: QEMU is the container's main process, so the container runs exactly
as long as the VM (a guest that powers off leaves a stopped container, `poll` says STOPPED, and
starting it again reuses its disk).
QEMU runs as the image's unprivileged user with every capability dropped, no-new-privileges and
its own seccomp sandbox; CPUs and memory come from the lab (the container's memory limit adds
`vm_memory_overhead_mb` for QEMU itself), the accelerator from settings.LAB_QEMU_ACCEL (with
"kvm", /dev/kvm is passed in).

The graphical console is QEMU's VNC server on port `vnc_port` (5900) of the container, on the
session's own Docker network only: endpoints["vnc"] = {"host": ip, "port": 5900}, as for desktop
containers; nothing is ever published on the host. A VM container always gets a network of its
own (the platform needs it for VNC): internal for "none" and "isolated" labs. The guest's own
network is QEMU's user-mode NAT inside the container: "none" gives it no NIC, "isolated" a NIC
that reaches nothing (restrict=on), "bridge" and "unrestricted" NAT through the session's network
(so the host guard rule of the Docker runner applies to the guest too).

Stopping presses the ACPI power button (QMP system_powerdown), waits up to `vm_powerdown_timeout`
(never longer than the stop's timeout) for the guest to power off, then sends QMP quit; the
Docker runner then removes the container, its network and its volume as for any session.

Docker runner OPTIONS used here (all optional):
    vm_image                the runner image (default labs/qemu:bookworm)
    vm_accel                QEMU accelerator (default settings.LAB_QEMU_ACCEL; "tcg" where KVM fails)
    vm_powerdown_timeout    seconds stop() waits for the guest after the power button (default 10)
    vm_memory_overhead_mb   added to the lab's memory for the container's limit (default 256)
    vm_tcg_cache_mb         TCG translation cache, bounded so QEMU fits that limit (default 64)
    vm_machine, vm_qemu     machine type ("pc") and QEMU binary in the image (qemu-system-x86_64)
    vnc_port                the VNC port on the session's network (default 5900; 5900-5999)

Limits: a VM has no guest agent, so exec(), the file calls and endpoint() refuse; snapshots and
booting from a snapshot need the qemu runner. The base's host path is bind-mounted, so with a
remote engine it must exist at the same path on the engine's host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

from django.conf import settings

from runners import runner_configs
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
    no_progress,
)
from runners.docker import DockerRunner
from runners.docker_terminal import DockerTerminal
from runners.qemu import QEMU_OPTION_RE, resolve_accel
from runners.vm_command import (
    BASE_DIR,
    DISK_DIR,
    LAUNCHER,
    REFUSED,
    SERIAL_ATTACH,
    SERIAL_BRIDGE,
    accel_argument,
    boot_files,
    launcher_plan,
    power_down,
    qemu_argv,
    read_serial_log,
    run_qmp,
    serial_log_limit,
    wait_until_running,
)

DEFAULT_VM_IMAGE = "labs/qemu:bookworm"


class DockerVM:
    """The VM machinery of a DockerVmRunner: QEMU's container, its monitor, its serial console."""

    def __init__(self, host: DockerVmRunner) -> None:
        self.host = host

    @property
    def runner(self) -> DockerRunner:
        """The Docker runner whose engine, naming and cleanup the VM containers share."""
        return self.host.engine

    # options ------------------------------------------------------------------------------------
    @property
    def image_ref(self) -> str:
        return str(self.host.option("vm_image") or DEFAULT_VM_IMAGE)

    def _accel(self) -> str:
        accel = str(self.host.option("vm_accel") or settings.LAB_QEMU_ACCEL or "auto")
        if not QEMU_OPTION_RE.match(accel):
            raise RunnerError(f"invalid QEMU accelerator {accel!r}", permanent=True)
        # "auto" probes this host's QEMU: the container's QEMU uses the same /dev/kvm.
        return resolve_accel(accel)

    def _vnc_port(self) -> int:
        port = int(self.host.option("vnc_port", 5900))
        if not 5900 <= port < 5900 + 100:
            raise RunnerError("vnc_port must be between 5900 and 5999 for VM labs (a QEMU display)", permanent=True)
        return port

    # start ----------------------------------------------------------------------------------------
    def start(self, spec: SessionSpec, progress: ProgressCallback, timeout: float) -> StartResult:
        deadline = time.monotonic() + timeout
        runner = self.runner
        binds, plan = self._plan(spec)
        try:
            image = runner.image_info(self.image_ref)
        except RunnerError as exc:
            raise RunnerError(f"{exc} (the VM runner image; build it with deploy/scripts/build-images.sh qemu)",
                              permanent=exc.permanent) from exc
        container_id = ""
        try:
            # The platform reaches VNC over the container's network, so even "none" gets one (internal).
            reach = "bridge" if spec.network_mode in ("bridge", "unrestricted") else "isolated"
            network = runner.ensure_network(dataclasses.replace(spec, network_mode=reach))
            progress("Creating VM container")
            volume = runner.call_engine("creating disk volume", runner.client.volumes.create,
                                  name=f"{runner.container_name(spec.session_id)}-vm", labels=runner.labels_for(spec))
            binds[volume.name] = {"bind": DISK_DIR, "mode": "rw"}
            container_id, adopted = runner.create_container(
                image["Id"], self._host_config(spec, network, binds), self._create_options(spec, network, plan)
            )
            info = runner.call_engine("inspecting container", runner.api.inspect_container, container_id)
            if adopted and info["State"]["Running"]:
                progress("Found the running VM; adopting it")
            else:
                progress("Starting VM")
                runner.call_engine("starting container", runner.api.start, container_id)
                info = runner.call_engine("inspecting container", runner.api.inspect_container, container_id)
            state = runner.state_of(info, image, spec)
            state["kind"] = "vm"
            self._wait_running(state, deadline, timeout)
            ip = runner.endpoints_of(runner.call_engine("inspecting container", runner.api.inspect_container,
                                                container_id)).get("host")
            if not ip:
                raise RunnerError("the VM container has no address on its network")
        except BaseException:
            # Nothing half-made stays behind (container, network, volume), as the contract asks.
            with contextlib.suppress(Exception):
                runner.stop({"container_id": container_id, "name": runner.container_name(spec.session_id)}, timeout=0)
            raise
        progress("VM running")
        return StartResult(state=state, endpoints={"vnc": {"host": ip, "port": self._vnc_port()}})

    def _plan(self, spec: SessionSpec) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
        """The read-only binds of the image's files and the launcher's plan (with QEMU's argv)."""
        boot = boot_files(spec, "the Docker runner")
        accel = accel_argument(self._accel(), int(self.host.option("vm_tcg_cache_mb", 64)))
        argv = qemu_argv(spec, boot, qemu=str(self.host.option("vm_qemu", "qemu-system-x86_64")),
                         name=f"{self.runner.instance}-{spec.session_id}",
                         machine=str(self.host.option("vm_machine", "pc")), accel=accel,
                         vnc=f"0.0.0.0:{self._vnc_port() - 5900}")
        binds = {str(path): {"bind": f"{BASE_DIR}/{name}", "mode": "ro"} for name, path in boot.base_files().items()}
        return binds, launcher_plan(spec, boot, argv, serial_log_limit(self.host.options))

    def _host_config(self, spec: SessionSpec, network: str, binds: dict[str, dict[str, str]]) -> dict[str, Any]:
        overhead = int(self.host.option("vm_memory_overhead_mb", 256))
        limit = max(int(spec.memory_mb), 32) + overhead  # the guest's RAM plus QEMU itself
        host: dict[str, Any] = {
            "nano_cpus": int(spec.cpu * 1e9),
            "mem_limit": f"{limit}m",
            "memswap_limit": f"{limit}m",
            # QEMU's threads (vCPUs, I/O, VNC) count here; the guest's processes do not.
            "pids_limit": max(spec.pids_limit, 128),
            "network_mode": network,
            "binds": binds,
            "init": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
        }
        if self._accel().split(",")[0] == "kvm" and os.path.exists("/dev/kvm"):
            # The device's group on the host, so the image's unprivileged user may open it.
            host["devices"] = ["/dev/kvm:/dev/kvm:rwm"]
            host["group_add"] = [str(os.stat("/dev/kvm").st_gid)]
        return host

    def _create_options(self, spec: SessionSpec, network: str, plan: dict[str, Any]) -> dict[str, Any]:
        runner = self.runner
        return {
            "name": runner.container_name(spec.session_id),
            "hostname": "lab",
            "labels": runner.labels_for(spec),
            "detach": True,
            "working_dir": DISK_DIR,
            "environment": {"LAB_SESSION": spec.session_id},
            "entrypoint": [],
            "command": ["python3", "-c", LAUNCHER, json.dumps(plan)],
            "networking_config": runner.api.create_networking_config({network: runner.api.create_endpoint_config()}),
        }

    def _wait_running(self, state: dict[str, Any], deadline: float, timeout: float) -> None:
        def status() -> str:
            info = self.runner.call_engine("inspecting container", self.runner.api.inspect_container,
                                           state["container_id"])
            if not info["State"]["Running"]:
                code = info["State"].get("ExitCode")
                raise RunnerError(f"QEMU exited while starting (status {code}): {self._log_tail(state)}",
                                  permanent=code == REFUSED)
            return str(self.qmp(state, "query-status", timeout=2)["status"])

        wait_until_running(status, deadline, timeout)

    def _log_tail(self, state: dict[str, Any]) -> str:
        with contextlib.suppress(Exception):
            raw = self.runner.api.logs(state["container_id"], stdout=True, stderr=True, tail=10)
            return " ".join(raw.decode("utf-8", "replace").split())[-600:] or "no message"
        return "no message"

    # QMP --------------------------------------------------------------------------------------------
    def output(self, state: dict[str, Any], since: float | None, max_bytes: int) -> tuple[bytes, float | None]:
        """The guest's serial console as QEMU logs it in the container (vm_command.SERIAL_LOG, on the
        container's writable layer), read through exec; the cursor is a byte offset."""
        return read_serial_log(lambda argv, seconds: self.runner.exec(self._container_state(state), argv,
                                                                      timeout=seconds, workdir="/"),
                               since, max_bytes, serial_log_limit(self.host.options))

    def qmp(self, state: dict[str, Any], command: str, arguments: dict[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
        """Run one QMP command in the VM's container and return its result."""
        return run_qmp(lambda argv, seconds: self.runner.exec(self._container_state(state), argv, timeout=seconds,
                                                              workdir="/"),
                       command, arguments, timeout)

    def _container_state(self, state: dict[str, Any]) -> dict[str, Any]:
        # The runner refuses exec for VM sessions (the learner's commands belong in the guest);
        # the platform's own commands run in the QEMU container, as the image's user.
        return {"container_id": state["container_id"], "user": state.get("user", "")}

    # stop -------------------------------------------------------------------------------------------
    def power_down(self, state: dict[str, Any], timeout: float) -> None:
        """ACPI power button, then QMP quit; the Docker runner removes the rest afterwards."""
        grace = max(min(timeout, float(self.host.option("vm_powerdown_timeout", 10))), 0.0)
        power_down(lambda command, timeout: self.qmp(state, command, timeout=timeout), lambda: self._running(state),
                   grace)

    def _running(self, state: dict[str, Any]) -> bool:
        try:
            info = self.runner.api.inspect_container(state.get("container_id", ""))
        except Exception:
            return False  # gone or unreachable: the runner's stop reports what matters
        return bool(info["State"]["Running"])

    # consoles ---------------------------------------------------------------------------------------
    def open_terminal(self, state: dict[str, Any], cols: int, rows: int) -> DockerTerminal:
        """The VM's serial console (one client at a time, as QEMU serves it), on an exec's TTY."""

        runner = self.runner
        if not self._running(state):
            raise RunnerError("the VM is not running", permanent=True)
        created = runner.call_engine(
            "opening the serial console", runner.api.exec_create, state["container_id"],
            ["sh", "-c", SERIAL_ATTACH, "labs-serial", SERIAL_BRIDGE],
            stdin=True, tty=True, user=state.get("user") or "root", workdir="/",
        )
        sock = runner.call_engine("opening the serial console", runner.api.exec_start, created["Id"],
                                  socket=True, tty=True)
        terminal = DockerTerminal(runner.api, created["Id"], sock)
        with contextlib.suppress(RunnerError):
            terminal.resize(cols, rows)  # the exec's TTY only; a serial line has no window size
        return terminal


class DockerVmRunner(Runner):
    """VM labs on a Docker engine (alias "docker-vm"): each session's QEMU in a container.

    Composed of a DockerRunner for the engine (`engine`: connection, names, labels, networks,
    cleanup), configured from the Docker runner named by the option `engine` (default "docker")
    with this runner's own options on top; the VM options (vm_image, vm_accel, vnc_port, ...) may
    stand in either. A VM has no guest agent: commands, files and ports are refused as not
    supported; its consoles are the serial line (terminal) and QEMU's VNC server.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        engine_alias = str(self.options.get("engine", "docker"))
        engine_options = (runner_configs().get(engine_alias) or {}).get("OPTIONS") or {}
        self.engine = DockerRunner(name, {**engine_options, **self.options})
        self.vm = DockerVM(self)

    def option(self, key: str, default: Any = None) -> Any:
        """A VM option: this runner's own, else the engine's (where older settings put them)."""
        return self.options[key] if key in self.options else self.engine.options.get(key, default)

    @property
    def instance(self) -> str:
        return self.engine.instance

    def container_name(self, session_id: str) -> str:
        return self.engine.container_name(session_id)

    def start(self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0) -> StartResult:
        if spec.image_kind not in VM_IMAGE_KINDS:
            raise RunnerError("the docker-vm runner boots VM disks and ISOs only", permanent=True)
        return self.vm.start(spec, progress, timeout)

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        self.vm.power_down(state, timeout)  # the guest shuts down first; removal is the engine's
        self.engine.stop(state, timeout)

    def poll(self, state: dict[str, Any]) -> PollStatus:
        return self.engine.poll(state)

    # A VM has no guest agent: the learner's commands and files belong in the guest.
    def exec(self, state: dict[str, Any], command: list[str], *, timeout: float = 15.0, stdin: bytes | None = None,
             user: str | None = None, workdir: str | None = None,
             environment: dict[str, str] | None = None) -> ExecResult:
        raise RunnerError("commands cannot run inside a VM without a guest agent", permanent=True)

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        raise RunnerError("VM labs have no file access", permanent=True)

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        raise RunnerError("VM labs have no file access", permanent=True)

    def read_file_untrusted(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        raise RunnerError("VM labs have no file access", permanent=True)

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        raise RunnerError("VM labs have no file access", permanent=True)

    def stat_file(self, state: dict[str, Any], path: str) -> FileStat | None:
        raise RunnerError("VM labs have no file access", permanent=True)

    def place_files(self, state: dict[str, Any], files: list[PlacedFile], host: str = "") -> None:
        raise RunnerError("files cannot be placed inside a VM without a guest agent", permanent=True)

    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        raise RunnerError("the ports of a VM lab cannot be reached from the platform", permanent=True)

    def open_terminal(self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1") -> DockerTerminal:
        return self.vm.open_terminal(state, cols, rows)  # the VM's serial console

    # The engine's containers, labelled alike: reconciliation sees VM and container sessions in
    # either runner's listing and keeps every environment of a live session.
    def list_managed(self) -> list[ManagedEnvironment]:
        return self.engine.list_managed()

    def list_managed_for(self, session_id: str) -> list[ManagedEnvironment]:
        return self.engine.list_managed_for(session_id)

    def remove_managed(self, env: ManagedEnvironment) -> None:
        self.engine.remove_managed(env)

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        return self.engine.stats(state)

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """The guest's serial console, as QEMU logs it in its container (the qemu runner's serial.log
        semantics: the cursor is a byte offset). What the launcher and QEMU themselves print (a refused
        base disk, QEMU's warnings) is the container's log: a failed start reports it."""
        return self.vm.output(state, since, max_bytes)

    def disk_usage(self, state: dict[str, Any]) -> DiskUsage | None:
        return self.engine.disk_usage(state)

    def available(self) -> bool:
        return self.engine.available()
