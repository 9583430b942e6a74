"""QEMU in a container: what the VM runners that run QEMU inside a container share.

The Docker VM runner (docker_vm.py) and the Kubernetes runner's VM sessions (k8s_vm.py) both run
the session's QEMU as the main process of a container made from the runner image (labs/qemu,
deploy/images/qemu), and reach its monitor and serial console only by running a program inside
that container (docker exec, pods/exec). The container is laid out alike on both:

    /vm/base/disk           the base disk (or /vm/base/cdrom.iso), read-only
    /vm/base/vmlinuz, initrd  the kernel files of an image directory (see qemu.py), read-only
    /var/lib/labs-vm        the session's own volume, holding
        overlay.qcow2       the session's disk, backed by the base (or empty, of spec.disk_mb, for an ISO)
    /run/vm/qmp.sock        QMP (flock qmp.lock serialises its clients)
    /run/vm/serial.sock     the serial console ttyS0 (one client: the newest terminal takes it over)

Here: that layout, the checks of an image on the platform's side (`boot_files`), QEMU's command
line (`qemu_argv`) and the launcher's plan, the programs run inside the container (LAUNCHER, the
QMP client, the serial bridge), one QMP command through any runner's exec (`run_qmp`), the wait for
the guest to run (`wait_until_running`) and the power-down sequence (`power_down`). How files and
sockets get there is each runner's own business.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners import serial_log
from runners.base import ExecResult, RunnerError, SessionSpec
from runners.qemu import DEFAULT_CMDLINE, DISK_NAMES, SANDBOX, STOPPED_STATUSES

SOCKET_DIR = "/run/vm"
DISK_DIR = "/var/lib/labs-vm"
BASE_DIR = "/vm/base"
QMP_SOCKET = f"{SOCKET_DIR}/qmp.sock"
SERIAL_SOCKET = f"{SOCKET_DIR}/serial.sock"
# The serial console's log (the chardev's logfile): what Runner.output returns, trimmed as the qemu
# runner's serial.log is. In /run/vm: only QEMU's user writes there, and the learner is in the guest.
SERIAL_LOG = f"{SOCKET_DIR}/serial.log"
SERIAL_LOG_MAX_MB = 1  # the default cap (option vm_serial_log_max_mb): on Kubernetes it is pod memory
TRIM_EVERY = 5  # seconds between the container's own trims, whether or not anyone reads the log
OVERLAY = f"{DISK_DIR}/overlay.qcow2"
REFUSED = 2  # the launcher's exit status when the image itself is unusable (retrying cannot help)

# The container's main process: check the base, create the overlay once, become QEMU.
LAUNCHER = r"""
import json, os, subprocess, sys
plan = json.loads(sys.argv[1])
def refuse(message):
    print("labs-vm: " + message, file=sys.stderr, flush=True)
    sys.exit(2)
def qemu_img(*args):
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if done.returncode != 0:
        refuse(" ".join((done.stderr or done.stdout).split())[:400] or "qemu-img failed")
    return done.stdout
for name in ("qmp.sock", "serial.sock"):
    try:
        os.unlink(os.path.join(plan["socket_dir"], name))
    except FileNotFoundError:
        pass
overlay = plan["overlay"]
if not os.path.exists(overlay):
    partial = overlay + ".part"
    if plan["base"] is None:
        qemu_img("create", "-q", "-f", "qcow2", partial, "%dM" % plan["disk_mb"])
    else:
        if not os.access(plan["base"], os.R_OK):
            refuse("cannot read the base disk (check its permissions on the host)")
        info = json.loads(qemu_img("info", "--output=json", plan["base"]))
        if info.get("format") not in ("qcow2", "raw"):
            refuse("%s disks are not supported; convert it to qcow2" % info.get("format"))
        if info.get("backing-filename"):
            refuse("disk images with a backing file are not accepted")
        if ((info.get("format-specific") or {}).get("data") or {}).get("data-file"):
            refuse("disk images with an external data file are not accepted")
        qemu_img("create", "-q", "-f", "qcow2", "-b", plan["base"], "-F", info["format"], partial)
    os.rename(partial, overlay)
if plan.get("serial_trim"):
    # The serial log's trimmer, for as long as the container runs (a guest may print without end).
    subprocess.Popen(["sh", "-c", 'while sleep "$0"; do python3 -c "$@"; done', *plan["serial_trim"]])
sys.stdout.flush()
os.execvp(plan["argv"][0], plan["argv"])
"""

# serial_log.py itself, run by the VM image's python3 in the container (which has none of our code).
_SERIAL_LOG_CODE = inspect.getsource(serial_log)
# Argv: the log, its cap in bytes.
SERIAL_TRIM = _SERIAL_LOG_CODE + """
import sys
trim(Path(sys.argv[1]), int(sys.argv[2]))
"""
# Argv: the log, its cap, the cursor ("" for none), max_bytes. Prints the new cursor's line, then the bytes.
SERIAL_READ = _SERIAL_LOG_CODE + """
import sys
trim(Path(sys.argv[1]), int(sys.argv[2]))
data, cursor = read(Path(sys.argv[1]), float(sys.argv[3]) if sys.argv[3] else None, int(sys.argv[4]))
sys.stdout.buffer.write(("" if cursor is None else repr(cursor)).encode() + b"\\n" + data)
"""

# One QMP conversation inside the container; prints the commands' return values as a JSON list.
# Exit 2: the monitor cannot be reached (not up yet, or gone); 3: QEMU answered with an error.
QMP_CLIENT = r"""
import json, socket, sys
path, timeout, commands = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(timeout)
try:
    sock.connect(path)
except OSError as exc:
    print("cannot connect to QMP: %s" % (exc.strerror or exc), file=sys.stderr)
    sys.exit(2)
replies = sock.makefile("rb")
def read():
    while True:
        line = replies.readline()
        if not line:
            print("QEMU closed the QMP connection", file=sys.stderr)
            sys.exit(2)
        message = json.loads(line)
        if "event" not in message:
            return message
read()
results = []
for name, arguments in [["qmp_capabilities", None]] + commands:
    request = {"execute": name}
    if arguments:
        request["arguments"] = arguments
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply = read()
    if "error" in reply:
        print("%s: %s" % (name, reply["error"].get("desc", reply["error"])), file=sys.stderr)
        sys.exit(3)
    results.append(reply.get("return"))
print(json.dumps(results[1:]))
"""

# The serial console on the exec's TTY, made raw so the guest alone echoes and sees ^C.
# socat is in the runner image; python3 serves images built without it.
SERIAL_BRIDGE = r"""
import os, select, socket, sys, tty
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
if os.isatty(0):
    tty.setraw(0)
while True:
    ready = select.select([0, sock], [], [])[0]
    if 0 in ready:
        data = os.read(0, 65536)
        if not data:
            break
        sock.sendall(data)
    if sock in ready:
        data = sock.recv(65536)
        if not data:
            break
        os.write(1, data)
"""
# QEMU serves one console client at a time, and an exec outlives the connection that attached it:
# the newest terminal takes the console over from the previous attacher (its pid is kept in
# serial.pid, checked by its command line, so a reused pid is never killed). Run as
# ["sh", "-c", SERIAL_ATTACH, "labs-serial", SERIAL_BRIDGE].
SERIAL_ATTACH = (
    f"old=$(cat {SOCKET_DIR}/serial.pid 2>/dev/null); "
    'if [ -n "$old" ] && grep -qa -e UNIX-CONNECT -e labs-serial-attach "/proc/$old/cmdline" 2>/dev/null; then '
    'kill "$old" 2>/dev/null; fi; '
    f"echo $$ > {SOCKET_DIR}/serial.pid; "
    f"if command -v socat >/dev/null 2>&1; then exec socat STDIO,rawer UNIX-CONNECT:{SERIAL_SOCKET}; fi; "
    f'exec python3 -c "$1" {SERIAL_SOCKET} labs-serial-attach'
)


class MonitorUnavailable(RunnerError):
    """QMP did not answer (QEMU not up yet, busy, or gone)."""


@dataclass(frozen=True)
class BootFiles:
    """A VM image as the platform sees it: the files QEMU reads (read-only) and how it boots them."""

    image: Path
    iso: bool
    kernel: Path | None = None  # an image directory's vmlinuz: booted with -kernel
    initrd: Path | None = None
    cmdline: str = ""

    def base_files(self) -> dict[str, Path]:
        """Name under BASE_DIR in the container → the platform's file."""
        if self.iso:
            return {"cdrom.iso": self.image}
        files = {"disk": self.image}
        if self.kernel is not None:
            files["vmlinuz"] = self.kernel
        if self.initrd is not None:
            files["initrd"] = self.initrd
        return files


def boot_files(spec: SessionSpec, runner_label: str) -> BootFiles:
    """Check `spec.image` on the platform's side and find what boots it (permanent RunnerError
    otherwise). `runner_label` names the runner in the refusal of snapshots ("the Docker runner")."""
    image = Path(spec.image or "")
    if not image.is_absolute():
        raise RunnerError(f"a VM image must be an absolute file path, not {spec.image!r}", permanent=True)
    if not image.is_file():
        raise RunnerError(f"VM image not found: {image}", permanent=True)
    if image.with_name(image.name + ".json").exists():
        raise RunnerError(f"booting a VM snapshot needs the qemu runner, not {runner_label}", permanent=True)
    # The stored format decides; the file name only when none was stored.
    iso = spec.image_kind == "iso" or spec.disk_format == "iso" or (
        not spec.disk_format and image.suffix.lower() == ".iso")
    if iso:
        return BootFiles(image, iso=True)
    folder = image.parent
    if image.name in DISK_NAMES and (folder / "vmlinuz").is_file():
        # An image directory (see qemu.py): boot its kernel directly.
        cmdline = folder / "cmdline"
        initrd = folder / "initrd.img"
        return BootFiles(image, iso=False, kernel=folder / "vmlinuz",
                         initrd=initrd if initrd.is_file() else None,
                         cmdline=cmdline.read_text().strip() if cmdline.is_file() else DEFAULT_CMDLINE)
    return BootFiles(image, iso=False)


def accel_argument(accel: str, tcg_cache_mb: int) -> str:
    """QEMU's -accel value: TCG's translation cache defaults to 1 GiB, so it is bounded to keep QEMU
    inside its container's memory limit."""
    return f"{accel},tb-size={int(tcg_cache_mb)}" if accel == "tcg" else accel


def qemu_argv(spec: SessionSpec, boot: BootFiles, *, qemu: str, name: str, machine: str, accel: str,
              vnc: str) -> list[str]:
    """QEMU's command line in the container: the lab's CPUs and memory, QMP and the serial console on
    unix sockets, the overlay as the disk, the base's boot files, the guest's user-mode network."""
    argv = [
        qemu,
        "-name", name,
        "-machine", machine,
        "-accel", accel,
        "-smp", str(max(1, math.ceil(spec.cpu))),
        "-m", str(max(int(spec.memory_mb), 32)),
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-vga", "std",
        "-vnc", vnc,
        "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off",
        "-chardev", f"socket,id=serial0,path={SERIAL_SOCKET},server=on,wait=off,logfile={SERIAL_LOG},logappend=on",
        "-serial", "chardev:serial0",
        "-drive", f"file={OVERLAY},format=qcow2,if=virtio,id=disk0,discard=unmap",
    ]
    if boot.iso:
        argv += ["-drive", f"file={BASE_DIR}/cdrom.iso,format=raw,media=cdrom,readonly=on,if=ide,index=2",
                 "-boot", "order=cd,once=d"]
    elif boot.kernel is not None:
        argv += ["-kernel", f"{BASE_DIR}/vmlinuz", "-append", boot.cmdline]
        if boot.initrd is not None:
            argv += ["-initrd", f"{BASE_DIR}/initrd"]
    if spec.network_mode == "none":
        argv += ["-nic", "none"]
    else:
        restrict = ",restrict=on" if spec.network_mode == "isolated" else ""
        argv += ["-nic", f"user,model=virtio-net-pci,ipv6=off{restrict}"]
    argv += ["-sandbox", f"{SANDBOX},elevateprivileges=deny"]
    return argv


def serial_log_limit(options: dict[str, Any]) -> int:
    """The serial log's cap in bytes, from a runner's option vm_serial_log_max_mb."""
    megabytes = float(options.get("vm_serial_log_max_mb", SERIAL_LOG_MAX_MB))
    if not 0 < megabytes <= 64:
        raise RunnerError(f"vm_serial_log_max_mb must be more than 0 and at most 64, not {megabytes}", permanent=True)
    return int(megabytes * 1024 * 1024)


def launcher_plan(spec: SessionSpec, boot: BootFiles, argv: list[str], serial_log_max: int) -> dict[str, Any]:
    """LAUNCHER's argument (as JSON): QEMU's argv, how to make the overlay, how to trim the serial log."""
    return {
        "argv": argv,
        "base": None if boot.iso else f"{BASE_DIR}/disk",
        "disk_mb": max(int(spec.disk_mb), 1),
        "overlay": OVERLAY,
        "socket_dir": SOCKET_DIR,
        "serial_trim": [str(TRIM_EVERY), SERIAL_TRIM, SERIAL_LOG, str(serial_log_max)],
    }


def read_serial_log(run: ExecInContainer, since: float | None, max_bytes: int, limit: int
                    ) -> tuple[bytes, float | None]:
    """Runner.output for a VM in a container: the serial log after byte offset `since`, read by
    `run(argv, timeout)` (serial_log.read's semantics, trimmed to `limit` first)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    result = run(["python3", "-c", SERIAL_READ, SERIAL_LOG, str(limit), "" if since is None else repr(since),
                  str(max_bytes)], 15)
    head, newline, data = result.stdout.partition(b"\n")
    if result.exit_code != 0 or not newline:
        message = " ".join(result.stderr.decode("utf-8", "replace").split())[-300:]
        raise RunnerError(f"cannot read the serial log: {message or f'exit status {result.exit_code}'}")
    return data, float(head) if head else None


def launcher_command(plan: dict[str, Any]) -> list[str]:
    """The container's command: LAUNCHER passed inline, so the image and the code never drift apart."""
    return ["python3", "-c", LAUNCHER, json.dumps(plan)]


ExecInContainer = Callable[[list[str], float], ExecResult]


def run_qmp(run: ExecInContainer, command: str, arguments: dict[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
    """One QMP command through `run(argv, timeout)` (a runner's exec in the QEMU container); its
    result. MonitorUnavailable when QMP does not answer, RunnerError when QEMU refuses the command."""
    wait = max(1, int(timeout))
    result = run(["flock", "-w", str(wait), f"{SOCKET_DIR}/qmp.lock",
                  "python3", "-c", QMP_CLIENT, QMP_SOCKET, str(timeout), json.dumps([[command, arguments]])],
                 2 * wait + 2)
    message = " ".join(result.stderr.decode("utf-8", "replace").split())[:300]
    if result.exit_code == 3:
        raise RunnerError(f"QEMU monitor: {message}")
    if not result.ok:
        raise MonitorUnavailable(f"QEMU monitor: {message or f'exit status {result.exit_code}'}")
    try:
        return json.loads(result.stdout)[0]
    except (ValueError, IndexError) as exc:
        raise MonitorUnavailable(f"QEMU monitor: unreadable answer {result.stdout[:200]!r}") from exc


def wait_until_running(status: Callable[[], str], deadline: float, timeout: float) -> None:
    """Ask `status()` (QMP query-status's run state; MonitorUnavailable while QEMU cannot answer yet)
    every 0.2 s until the guest runs. RunnerError when it stopped, or still does not run at `deadline`
    (`timeout` is that many seconds, for the message)."""
    last = "no answer yet"
    while True:
        try:
            state = status()
        except MonitorUnavailable as exc:
            last = str(exc)
        else:
            if state == "running":
                return
            if state in STOPPED_STATUSES:
                raise RunnerError(f"the VM stopped while starting ({state})")
            last = f"state {state}"
        if time.monotonic() >= deadline:
            raise RunnerError(f"the VM did not start within {timeout:g} s ({last})")
        time.sleep(0.2)


def power_down(qmp: Callable[..., Any], running: Callable[[], bool], grace: float,
               wait_off: Callable[[float], bool] | None = None) -> None:
    """ACPI power button, up to `grace` seconds for the guest to power off, then QMP quit. `qmp(command,
    timeout=...)` runs one QMP command; `wait_off(seconds)` says whether QEMU ended within them (by
    default `running` is asked every 0.2 s)."""
    if not running():
        return
    if grace > 0:
        with contextlib.suppress(RunnerError):
            qmp("system_powerdown", timeout=2)
            if wait_off is not None:
                if wait_off(grace):
                    return
            else:
                end = time.monotonic() + grace
                while time.monotonic() < end:
                    if not running():
                        return
                    time.sleep(0.2)
    with contextlib.suppress(RunnerError):
        qmp("quit", timeout=2)
