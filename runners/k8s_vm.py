"""VM labs on the Kubernetes runner: the session's QEMU in a pod (kubernetes.py hands VM sessions here).

A VM session is what a container session is (the anchor ConfigMap `lab-<session>`, a Pod of the same
name owned by it, the same labels, so stop, reconciliation and "stop all" treat both alike), with a
pod made for QEMU: its container `main` runs the Docker VM runner's image (option `vm_image`, default
labs/qemu:bookworm, built by deploy/scripts/build-images.sh from deploy/images/qemu; push it to the
cluster's registry under that name or name yours) with the launcher shared with docker_vm.py
(vm_command.py), so QEMU is the container's main process and a guest that powers off ends the pod
(restartPolicy Never: `poll` says STOPPED). The layout inside is docker_vm.py's:

    /vm/base/...        the base disk (or cdrom.iso) and an image directory's vmlinuz/initrd, read-only:
        vm_disk_source "claim": files of the PersistentVolumeClaim `vm_disks_claim`, each mounted by
                        subPath (the image's path below `vm_disks_root`), the claim mounted read-only.
                        The chart's vm-images storage, through a claim in the sessions namespace
                        (ReadOnlyMany or ReadWriteMany: sessions on many nodes read it at once).
        vm_disk_source "init": an emptyDir filled by the init container `base-disk`, which copies the
                        files from the image `vm_disk_image` (any image with sh and cp, e.g. FROM
                        busybox, holding the same tree below `vm_disk_image_root`, default /disks:
                        KubeVirt's containerDisk idea), then mounted read-only in `main`. A copy that
                        fails fails the session at once with the copy's own words (Init:Error).
    /var/lib/labs-vm    an emptyDir with a sizeLimit of the lab's disk size: the qcow2 overlay
    /run/vm             a small in-memory emptyDir: QMP and the serial console's unix sockets, and
                        serial.log, the console's log that output() reads through exec; the launcher
                        trims it every few seconds past `vm_serial_log_max_mb` (1), and the volume's
                        sizeLimit and the pod's memory leave room for twice that

Security, as for container pods wherever QEMU allows, and tighter where it can: no service account
token, no service links, seccomp RuntimeDefault (and QEMU's own -sandbox), every capability dropped,
no privilege escalation, the image's unprivileged user (runAsNonRoot, `vm_run_as_user`, default 1000),
a read-only root filesystem, requests = limits (the guest's memory plus `vm_memory_overhead_mb` for
QEMU), an ephemeral-storage limit. Never privileged. KVM comes from a device plugin's resource
(`kvm_resource`, e.g. "devices.kubevirt.io/kvm", one per pod in limits; `kvm_group` adds the group
that may open the device node); without it QEMU runs TCG (a translation cache of `vm_tcg_cache_mb`).

Reaching the VM (no guest agent, as on docker-vm: exec, files and ports other than VNC are refused):
- the terminal is the serial console: an exec in `main` joins /run/vm/serial.sock (socat, python3 as a
  fallback); the newest terminal takes the console over (QEMU serves one client);
- QMP through exec (`qmp()`, flock-serialised): the start waits for the guest to run, stop presses the
  ACPI power button and waits up to `vm_powerdown_timeout` before QMP quit and the pod's deletion;
- VNC: endpoints["vnc"] is the pod IP and `vnc_port` in endpoint_mode "pod-ip"; in "proxy" it names
  the port only ({"port": 5900, "through": "runner"}) and `endpoint()` hands the asking process a
  loopback listener that reaches QEMU's WebSocket VNC (`vnc_websocket_port`, 5700) through the API
  server's pods/proxy (k8s_vnc.py). The consoles' VNC bridge asks the runner for such records.
Not supported, as on docker-vm: snapshots and booting from one (the qemu runner's), re-attaching a
terminal by name (there is one console). Images must lie below `vm_disks_root` (a learner's ISO upload
lies in the media directory, outside it, and is refused with a clear error).

OPTIONS (the Kubernetes runner's, all optional but a disk source):
    vm_image             the QEMU image ("labs/qemu:bookworm")
    vm_disk_source       "claim" (default) or "init"
    vm_disks_claim       the claim holding the VM images (source "claim")
    vm_disks_root        where the platform sees that tree (default settings.LAB_VM_IMAGE_DIR)
    vm_disk_image        the image holding it (source "init"); vm_disk_image_root its directory ("/disks")
    kvm_resource         extended resource that gives /dev/kvm; none: TCG
    kvm_group            supplemental group id for the device node (default none)
    vm_run_as_user       QEMU's uid (1000: labs/qemu's learner)
    vm_memory_overhead_mb, vm_tcg_cache_mb, vm_machine, vm_qemu, vm_powerdown_timeout: as on docker-vm
    vnc_port (5900), vnc_websocket_port (5700)
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from runners.base import Endpoint, PollStatus, ProgressCallback, RunnerError, SessionSpec
from runners.k8s_objects import K8sTerminal, PodRunner, permanent_failure
from runners.vm_command import (
    BASE_DIR,
    DISK_DIR,
    QMP_SOCKET,
    SERIAL_ATTACH,
    SERIAL_BRIDGE,
    SOCKET_DIR,
    BootFiles,
    MonitorUnavailable,
    accel_argument,
    boot_files,
    launcher_command,
    launcher_plan,
    power_down,
    qemu_argv,
    read_serial_log,
    run_qmp,
    serial_log_limit,
    wait_until_running,
)

DEFAULT_VM_IMAGE = "labs/qemu:bookworm"  # the Docker VM runner's (docker_vm.DEFAULT_VM_IMAGE)
DISK_SOURCES = ("claim", "init")
BASE_VOLUME, DISK_VOLUME, RUN_VOLUME, IMAGES_VOLUME = "vm-base", "vm-disk", "vm-run", "vm-images"
INIT_CONTAINER = "base-disk"
MIB = 1024 * 1024
# The init container's copy: pairs of (file in the disk image, name under /vm/base). A missing file
# ends it with a message that becomes the session's failure (terminationMessagePolicy).
COPY_BASE = (
    'while [ "$#" -ge 2 ]; do '
    '[ -f "$1" ] || { echo "labs-vm: $1 is not in the VM disk image" >&2; exit 2; }; '
    'cp "$1" "$2.part" && mv "$2.part" "$2" || exit 1; shift 2; done'
)


class KubernetesVM:
    """The VM side of a KubernetesRunner: QEMU's pod, its monitor, its serial console and VNC."""

    def __init__(self, runner: PodRunner) -> None:
        self.runner = runner
        self._tunnels: Any = None  # k8s_vnc.VncTunnels, made on first use in proxy mode

    def option(self, key: str, default: Any = None) -> Any:
        return self.runner.options.get(key, default)

    # options ------------------------------------------------------------------------------------------
    def vnc_port(self) -> int:
        port = int(self.option("vnc_port", 5900))
        if not 5900 <= port < 5900 + 100:
            raise RunnerError("vnc_port must be between 5900 and 5999 for VM labs (a QEMU display)", permanent=True)
        return port

    def websocket_port(self) -> int:
        port = int(self.option("vnc_websocket_port", 5700))
        if not 0 < port < 65536 or port == self.vnc_port():
            raise RunnerError("vnc_websocket_port must be a port other than vnc_port", permanent=True)
        return port

    def accel(self) -> str:
        """KVM when the operator named the device plugin resource that gives it, TCG otherwise (the
        platform's own host says nothing about the cluster's nodes, so LAB_QEMU_ACCEL does not apply)."""
        return "kvm" if self.option("kvm_resource") else "tcg"

    def disk_source(self) -> str:
        source = str(self.option("vm_disk_source") or "claim")
        if source not in DISK_SOURCES:
            raise RunnerError(f'unknown vm_disk_source {source!r} (use "claim" or "init")', permanent=True)
        if source == "claim" and not self.option("vm_disks_claim"):
            raise RunnerError('VM labs on the Kubernetes runner need their base disks: set the runner\'s '
                              '`vm_disks_claim` (a PersistentVolumeClaim in the sessions namespace holding the VM '
                              'images) or `vm_disk_source: "init"` with `vm_disk_image`', permanent=True)
        if source == "init" and not self.option("vm_disk_image"):
            raise RunnerError('vm_disk_source "init" needs `vm_disk_image`, the image holding the VM images',
                              permanent=True)
        return source

    def _relative(self, path: Path) -> str:
        """A boot file's path below vm_disks_root: the claim's subPath, or the disk image's path."""
        from django.conf import settings

        root = Path(str(self.option("vm_disks_root") or settings.LAB_VM_IMAGE_DIR))
        try:
            relative = path.relative_to(root)
        except ValueError:
            raise RunnerError(f"the Kubernetes runner boots VM images from below {root} (vm_disks_root) only, "
                              f"not {path}", permanent=True) from None
        if not relative.parts or ".." in relative.parts:
            raise RunnerError(f"{path} is not a file below {root}", permanent=True)
        return relative.as_posix()

    # the pod ------------------------------------------------------------------------------------------
    def pod_manifest(self, spec: SessionSpec, anchor: dict[str, Any]) -> dict[str, Any]:
        """QEMU's pod (see the module docstring); permanent RunnerError for an unusable image or setup."""
        source = self.disk_source()
        boot = boot_files(spec, "the Kubernetes runner")
        files = {name: self._relative(path) for name, path in boot.base_files().items()}
        base_mb = math.ceil(sum(path.stat().st_size for path in boot.base_files().values()) / MIB) + 16
        uid = int(self.option("vm_run_as_user", 1000))
        argv = qemu_argv(spec, boot, qemu=str(self.option("vm_qemu", "qemu-system-x86_64")),
                         name=f"{self.runner.instance}-{spec.session_id}", machine=str(self.option("vm_machine", "pc")),
                         accel=accel_argument(self.accel(), int(self.option("vm_tcg_cache_mb", 64))),
                         vnc=f"0.0.0.0:{self.vnc_port() - 5900},websocket={self.websocket_port()}")
        cpu = f"{max(1, round(spec.cpu * 1000))}m"
        serial_max = serial_log_limit(self.runner.options)
        # /run/vm is in memory: its sockets, and the serial log up to twice its cap (between two trims).
        run_mb = 1 + math.ceil(2 * serial_max / MIB)
        memory = f"{max(int(spec.memory_mb), 32) + int(self.option('vm_memory_overhead_mb', 256)) + run_mb}Mi"
        disk_mb = max(int(spec.disk_mb), 1)
        # The overlay and (with "init") the copied base live in emptyDirs, which count against the pod's
        # ephemeral storage, bounded by its containers' limits: both, plus room for QEMU's log.
        storage = f"{disk_mb + (base_mb if source == 'init' else 0) + 64}Mi"
        limits: dict[str, str] = {"cpu": cpu, "memory": memory, "ephemeral-storage": storage}
        if self.option("kvm_resource"):
            limits[str(self.option("kvm_resource"))] = "1"
        context = self._security_context(uid)
        pull = str(self.option("image_pull_policy", "IfNotPresent"))
        mounts: list[dict[str, Any]] = [{"name": DISK_VOLUME, "mountPath": DISK_DIR},
                                        {"name": RUN_VOLUME, "mountPath": SOCKET_DIR}]
        volumes: list[dict[str, Any]] = [
            {"name": DISK_VOLUME, "emptyDir": {"sizeLimit": f"{disk_mb}Mi"}},
            {"name": RUN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{run_mb}Mi"}}]
        init_containers: list[dict[str, Any]] = []
        if source == "claim":
            volumes.append({"name": IMAGES_VOLUME, "persistentVolumeClaim": {
                "claimName": str(self.option("vm_disks_claim")), "readOnly": True}})
            mounts += [{"name": IMAGES_VOLUME, "mountPath": f"{BASE_DIR}/{name}", "subPath": relative,
                        "readOnly": True} for name, relative in files.items()]
        else:
            volumes.append({"name": BASE_VOLUME, "emptyDir": {"sizeLimit": f"{base_mb}Mi"}})
            mounts.append({"name": BASE_VOLUME, "mountPath": BASE_DIR, "readOnly": True})
            root = str(self.option("vm_disk_image_root", "/disks")).rstrip("/")
            pairs = [item for name, relative in files.items() for item in (f"{root}/{relative}", f"{BASE_DIR}/{name}")]
            copy_limits = {"cpu": "250m", "memory": "64Mi", "ephemeral-storage": "16Mi"}
            init_containers.append({
                "name": INIT_CONTAINER, "image": str(self.option("vm_disk_image")), "imagePullPolicy": pull,
                "command": ["/bin/sh", "-c", COPY_BASE, "labs-base-disk", *pairs],
                "resources": {"requests": dict(copy_limits), "limits": copy_limits},
                "securityContext": context, "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": BASE_VOLUME, "mountPath": BASE_DIR}],
            })
        main: dict[str, Any] = {
            "name": "main", "image": str(self.option("vm_image") or DEFAULT_VM_IMAGE), "imagePullPolicy": pull,
            "command": launcher_command(launcher_plan(spec, boot, argv, serial_max)), "workingDir": DISK_DIR,
            "env": [{"name": "LAB_SESSION", "value": spec.session_id}],
            "resources": {"requests": dict(limits), "limits": limits},
            "securityContext": context,
            # The launcher's refusals ("labs-vm: ...") and QEMU's last words become the failure's message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "ports": [{"name": "vnc", "containerPort": self.vnc_port(), "protocol": "TCP"},
                      {"name": "vnc-ws", "containerPort": self.websocket_port(), "protocol": "TCP"}],
            # QMP's socket exists once QEMU has set up the machine; the start then asks QMP itself.
            "startupProbe": {"exec": {"command": ["test", "-S", QMP_SOCKET]}, "periodSeconds": 1,
                             "failureThreshold": 120, "timeoutSeconds": 5},
            "volumeMounts": mounts,
        }
        pod_spec = self.runner._pod_spec([main], volumes)  # what every session pod has, and its placement
        if init_containers:
            pod_spec["initContainers"] = init_containers
        pod_spec["securityContext"]["runAsNonRoot"] = True
        if self.option("kvm_group") is not None:
            pod_spec["securityContext"]["supplementalGroups"] = [int(self.option("kvm_group"))]
        return self.runner.pod_object(spec, anchor, pod_spec)

    def _security_context(self, uid: int) -> dict[str, Any]:
        return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                "runAsUser": uid, "runAsGroup": uid, "capabilities": {"drop": ["ALL"]}}

    def boot(self, spec: SessionSpec) -> BootFiles:
        """The image's boot files, checked (before any object is made)."""
        self.disk_source()
        boot = boot_files(spec, "the Kubernetes runner")
        for path in boot.base_files().values():
            self._relative(path)
        return boot

    # after the pod is ready ---------------------------------------------------------------------------
    def wait_running(self, state: dict[str, Any], progress: ProgressCallback, deadline: float,
                     timeout: float) -> None:
        """Until QMP says the guest runs; a pod that ended meanwhile fails the start with its reason."""

        progress("Starting VM")

        def status() -> str:
            try:
                return str(self.qmp(state, "query-status", timeout=2)["status"])
            except MonitorUnavailable:
                raise
            except RunnerError as exc:  # the exec itself failed: QEMU's container may have ended
                pod = self.runner._read("pods", state["pod"])
                failure = permanent_failure(pod) if pod is not None else "the session's pod is gone"
                if failure:
                    raise RunnerError(f"QEMU ended while starting: {failure}", permanent=True) from exc
                raise MonitorUnavailable(str(exc)) from exc

        wait_until_running(status, deadline, timeout)

    # QMP ------------------------------------------------------------------------------------------------
    def qmp(self, state: dict[str, Any], command: str, arguments: dict[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
        """Run one QMP command in the VM's pod (through exec) and return its result."""
        return run_qmp(lambda argv, seconds: self.runner.exec_in_pod(state, argv, timeout=seconds, workdir="/",
                                                                      user=""),
                       command, arguments, timeout)

    def output(self, state: dict[str, Any], since: float | None, max_bytes: int) -> tuple[bytes, float | None]:
        """The guest's serial console as QEMU logs it in the pod (vm_command.SERIAL_LOG), read through exec;
        the cursor is a byte offset."""
        return read_serial_log(lambda argv, seconds: self.runner.exec_in_pod(state, argv, timeout=seconds, workdir="/",
                                                                            user=""),
                               since, max_bytes, serial_log_limit(self.runner.options))

    def power_down(self, state: dict[str, Any], timeout: float) -> None:
        """ACPI power button, then QMP quit; the runner deletes the pod afterwards."""
        grace = max(min(timeout, float(self.option("vm_powerdown_timeout", 10))), 0.0)
        power_down(lambda command, timeout: self.qmp(state, command, timeout=timeout), lambda: self._running(state),
                   grace, wait_off=lambda seconds: self.runner.wait_pod_ended(state, seconds))

    def _running(self, state: dict[str, Any]) -> bool:
        try:
            return self.runner.poll(state) is PollStatus.RUNNING
        except RunnerError:
            return False  # unreachable: the runner's deletion reports what matters

    # consoles -------------------------------------------------------------------------------------------
    def open_terminal(self, state: dict[str, Any], cols: int, rows: int) -> K8sTerminal:
        """The VM's serial console (one client at a time, as QEMU serves it), on an exec's TTY."""

        if self.runner.poll(state) is not PollStatus.RUNNING:
            raise RunnerError("the VM is not running", permanent=True)
        ws = self.runner._open_exec(state, ["sh", "-c", SERIAL_ATTACH, "labs-serial", SERIAL_BRIDGE], stdin=True,
                                    tty=True)
        terminal = K8sTerminal(ws)
        with contextlib.suppress(RunnerError):
            terminal.resize(cols, rows)  # the exec's TTY only; a serial line has no window size
        return terminal

    def endpoints(self, ip: str) -> dict[str, Any]:
        """What the start records: the pod's VNC address, or (proxy mode) that the runner must be asked."""
        if str(self.option("endpoint_mode", "pod-ip")) == "proxy":
            return {"vnc": {"port": self.vnc_port(), "through": "runner"}}
        return {"vnc": {"host": ip, "port": self.vnc_port()}}

    def check_port(self, port: int) -> None:
        if int(port) != self.vnc_port():
            raise RunnerError("the ports of a VM lab cannot be reached from the platform (only its VNC console)",
                              permanent=True)

    def vnc_through_proxy(self, namespace: str, pod: str) -> Endpoint:
        """A loopback listener of this process speaking plain RFB, tunnelled to QEMU's WebSocket VNC."""
        from runners.k8s_vnc import VncTunnels

        forwarder = self.runner.pod_forwarder()
        if self._tunnels is None:
            self._tunnels = VncTunnels(forwarder.address)
        try:
            host, port = self._tunnels.address(namespace, pod, self.websocket_port())
        except OSError as exc:
            raise RunnerError(f"cannot reach the VM's screen through the API server: {exc}") from exc
        return Endpoint(host=host, port=port)

    def close_pod(self, pod: str | None) -> None:
        if self._tunnels is not None:
            self._tunnels.close_pod(pod)
