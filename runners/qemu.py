"""QEMU runner: one virtual machine per session, on a copy-on-write overlay of a base disk.

A session's VM boots from `spec.image`, the absolute path of a base disk (qcow2 or raw) or of an
ISO. `spec.disk_format` (the image's stored, validated format) says which; only when it is empty
does an image kind "iso" or a name ending in `.iso` mean an ISO, and qemu-img probe a disk's format.
The base is never written: every session gets its own qcow2 overlay backed by it, so starting
costs the same for a 10 MB and a 100 GB base.

Image convention (what `spec.image` may point at):
    any disk file       boots from the disk alone (its bootloader, through SeaBIOS), like real images.
    <dir>/disk.qcow2    (or disk.raw, disk.img): an *image directory*. Beside the disk, optional
    <dir>/vmlinuz       a kernel booted directly (-kernel) instead of the disk's bootloader,
    <dir>/initrd.img    its initramfs (-initrd),
    <dir>/cmdline       its command line (-append; default "console=ttyS0 console=tty0").
                        Only a disk named disk.* picks these up, so a stray vmlinuz in a shared
                        upload folder cannot take over unrelated images.
    <disk>.json         a boot description beside any disk; snapshot() writes one (see below). It
                        wins over the directory files. Keys: kernel, initrd, cmdline (paths relative
                        to its folder or absolute), backing/backing_format (the only backing file the
                        disk may have), memory_state, hardware {machine, memory_mb, smp, nic, cdrom}.
    <name>.iso          booted as a CD-ROM (-boot order=cd,once=d) with an empty disk.qcow2 of
                        spec.disk_mb as the session's disk (where an installer can install to).
    deploy/images/vm/build-test-vm.sh builds an image directory for tests (kernel + busybox initramfs).
Bases must be qcow2 or raw (probed by `qemu-img info`), with no backing file unless a boot
description names it (a runner-made snapshot) and no external data file: an uploaded qcow2 that
points at a host file would otherwise hand that file to the guest.

Session directory (<root>/<session_id>/, root = OPTIONS["root"], default DATA_DIR/vm-sessions):
    session.json    the boot plan (marks the directory as ours; read back when adopting)
    overlay.qcow2   the session's disk, backed by the base (qemu-img create -b BASE -F FMT)
    qmp.sock        QMP (machine control), one client at a time; `qmp.lock` serialises our use
    vnc.sock        the VNC screen (endpoints["vnc"]["unix"])
    serial.sock     the serial console ttyS0 (endpoints["serial"]["unix"]; open_terminal)
    serial.log      everything the guest prints on ttyS0 (QEMU's chardev logfile), for staff to follow
                    (output(); runners/serial_log.py); cut to its newest part past serial_log_max_mb
    qemu.pid        written by QEMU; qemu.log its stderr; start.lock serialises starts
The directory is root's (0700; the platform's user when not root). QEMU opens everything before
it drops to run_as, and gets the overlay as two descriptors (-add-fd, /dev/fdset/1) because it
reopens its disk later (saving memory): so a QEMU running as run_as can reach no file at all.
QEMU runs in this directory and names its sockets relatively: a unix socket address holds only
~107 bytes. Clients of a longer path connect with runners.qmp.connect_unix.
QEMU runs as `qemu-system-x86_64 -name labs-<session_id> ...`, a child of the platform process in
a session of its own (start_new_session): it survives a restart of the web or worker process, and
list_managed() finds it again by that name on its command line (and its -pidfile under this
runner's root, so two installs with different roots never touch each other's VMs). While the
process that started it lives, a watcher thread waits for it, so an exited QEMU never lingers as
a zombie; after a platform restart its parent is init, which reaps it.

OPTIONS (all optional):
    root                where session directories live (default DATA_DIR/vm-sessions)
    accel               QEMU accelerator (default settings.LAB_QEMU_ACCEL: env LAB_QEMU_ACCEL, "auto"):
                        "auto" is KVM when a probe VM really runs under KVM on this host, else TCG
                        (see kvm_usable: /dev/kvm can exist while KVM guests hang); "kvm" or "tcg"
                        force one; any other -accel value is passed through
    instance            prefix of the VM name, `-name <instance>-<session_id>` (default "labs")
    qemu, qemu_img      binaries (default qemu-system-x86_64 and qemu-img on PATH)
    machine             machine type (default "pc"; snapshots record the concrete version)
    cpu                 -cpu model (default: QEMU's, portable between TCG and KVM hosts)
    run_as              user QEMU drops to with -runas after opening its files (default: labs-qemu when
                        that user exists and the platform runs as root, else none: QEMU runs as the
                        platform's user; "" for none). Create it with `useradd --system labs-qemu`.
    sandbox             QEMU's seccomp filter: true (default: -sandbox on, no spawning, no resource
                        control, no privilege changes unless run_as needs one), false, or a -sandbox value
    guard_host          bridge mode only: iptables rules (firewall.process_owner_rules) reject every
                        connection from the run_as user to the host itself (slirp's 10.0.2.2 is the
                        host's 127.0.0.1, where PostgreSQL and Redis listen), to link-local addresses
                        (the cloud metadata service) and to private networks. Default true; then bridge
                        mode needs run_as. The rules match the user, so they hold for every VM that runs
                        as it, whatever its mode.
    powerdown_timeout   seconds stop() waits for the guest to power off after an ACPI power button
                        press, before QMP quit and SIGKILL (default 10; never more than stop's timeout)
    snapshot_timeout    seconds a snapshot may take (default 600)
    serial_log_max_mb   cap of serial.log (default 8); checked whenever it is read and at every poll

Networking follows spec.network_mode, always QEMU's user-mode (slirp) NAT, never a host bridge:
none -> no NIC; isolated -> a NIC on slirp with restrict=on (nothing reachable); bridge and
unrestricted -> slirp NAT to the outside (IPv4 only). Only "bridge" is fenced off from the host
(guard_host); "unrestricted" is for trusted staff labs, as with Docker.

Snapshots (snapshot(state, dest, include_memory) -> bytes written):
    The VM is paused (QMP stop). With memory, its RAM and device state go to <dest>.state as a QEMU
    migration stream (QMP migrate to a file descriptor handed over with getfd; nothing is spawned).
    The disk goes to <dest>: a qcow2 holding only the session's changes, backed by the session's
    base (qemu-img convert -B, top layer only: size and time follow the changes, not the base).
    Then the VM resumes (cont). <dest>.json (the boot description) records the base, the kernel
    files and the virtual hardware. A new session boots from it with spec.image = <dest>: its
    overlay is backed by the snapshot, and when <dest>.state exists QEMU starts with
    `-incoming defer` and restores the memory (migrate-incoming), using the recorded machine type,
    memory, CPUs and NIC presence, which a restore must match. A snapshot depends on its base (and
    that base on its own): keep bases while snapshots need them.
    Snapshots come from live sessions: stop() removes the overlay. A session whose QEMU has exited
    (the guest powered off) still has its overlay until stop, and gets a disk-only snapshot.

Caveats: a service manager that kills a worker's whole cgroup on restart (systemd's default
KillMode=control-group) kills its VMs too; use KillMode=process for workers that start VMs, or
reconciliation marks those sessions failed. QEMU serves one client per socket, so a second
serial console or QMP client waits until the first disconnects. VMs have no guest agent: exec()
and the file calls refuse, and endpoint() refuses (no port forwarding). QEMU's stderr goes to
qemu.log (startup errors are quoted in the failure message).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from runners import firewall, serial_log
from runners.base import (
    Endpoint,
    ExecResult,
    FileEntry,
    ManagedEnvironment,
    PollStatus,
    ProgressCallback,
    Runner,
    RunnerError,
    RunnerStats,
    SessionSpec,
    StartResult,
    no_progress,
)
from runners.qmp import QMPClient, QMPCommandError, QMPError, connect_unix

SESSION_FILE = "session.json"
OVERLAY = "overlay.qcow2"
SERIAL_LOG = "serial.log"
DEFAULT_CMDLINE = "console=ttyS0 console=tty0"
DEFAULT_RUN_AS = "labs-qemu"
DISK_NAMES = ("disk.qcow2", "disk.raw", "disk.img")
BASE_FORMATS = ("qcow2", "raw")
# QMP run states of a VM that will not run again by itself (any other state counts as running:
# "paused" during a snapshot, "inmigrate" while memory is restored...).
STOPPED_STATUSES = {"shutdown", "internal-error", "io-error", "guest-panicked"}
# QEMU's seccomp filter. Left out: obsolete=deny (it kills QEMU 7.2 while it restores memory from a
# file) and, with -runas, elevateprivileges=deny (the filter is installed before QEMU drops to the
# user, so it would forbid that very setuid; once dropped to a non-root user it cannot go back).
SANDBOX = "on,spawn=deny,resourcecontrol=deny"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
QEMU_OPTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:,=-]*$")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# `qemu-img info` answers by (path, inode, size, mtime): a changed file is looked at again.
_info_cache: dict[tuple[str, int, int, int, str], dict[str, Any]] = {}
_info_lock = threading.Lock()

logger = logging.getLogger(__name__)

# "auto" accelerator: whether KVM really runs guests, probed once per QEMU binary and process.
_kvm_usable: dict[str, bool] = {}
_kvm_lock = threading.Lock()
KVM_PROBE_TIMEOUT = 5.0
KVM_PROBE_EXIT = (0x2A << 1) | 1  # isa-debug-exit turns the byte 0x2a the probe writes into status 85

# QEMU processes this process started: a watcher thread waits for each, so none stays a zombie.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _watch(process: subprocess.Popen[bytes]) -> None:
    process.wait()
    # Kept a while for its exit status (see _exit_status); forgotten when its pid may be reused.
    time.sleep(60)
    with _children_lock:
        if _children.get(process.pid) is process:
            del _children[process.pid]


def _opt(value: str | Path) -> str:
    """A value inside a QEMU option string: commas are doubled."""
    return str(value).replace(",", ",,")


# /proc ------------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (which counts as gone)."""
    fields = _proc_stat(pid)
    return fields is not None and bool(fields) and fields[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0")[:-1]]


def _arg_after(argv: list[str], flag: str) -> str | None:
    for index, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[index + 1]
    return None


def _reap(pid: int) -> None:
    with _children_lock:
        process = _children.get(pid)
    if process is not None:
        process.poll()


def _wait_gone(pid: int, deadline: float) -> bool:
    with _children_lock:
        process = _children.get(pid)
    if process is not None and process.returncode is None:
        # Ours: gone only once reaped (by its watcher thread or here), never a zombie.
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True
    while True:
        _reap(pid)
        if not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _exit_status(pid: int) -> str:
    """ " (signal SIGSYS)" or " (status 1)" for a QEMU this process started and reaped."""
    with _children_lock:
        process = _children.get(pid)
    if process is None:
        return ""
    try:
        code = process.wait(timeout=2)  # its watcher thread reaps it at once
    except subprocess.TimeoutExpired:
        return ""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f" (signal {signal.Signals(-code).name})"
    return f" (status {code})"


# accelerator ------------------------------------------------------------------------------------
def _kvm_probe_rom() -> bytes:
    """A 64 KiB BIOS that switches to 32-bit protected mode and writes 0x2a to isa-debug-exit.

    Real-mode code alone is not enough of a test: on some hosts (nested virtualisation) /dev/kvm
    opens and real-mode code runs, but a guest hangs at its first switch to protected mode, which
    every OS makes. Layout: the reset vector (0xFFFF0) jumps to F000:0000; there cli, lgdt, set
    CR0.PE, far jump into a flat 32-bit code segment that does `out 0x501, al`.
    """
    rom = bytearray(b"\xf4" * 0x10000)  # hlt everywhere else
    base = 0xF0000  # where a 64 KiB BIOS appears below 1 MiB
    real_mode = bytes([
        0xFA,                                # cli
        0x2E, 0x0F, 0x01, 0x16, 0x40, 0x00,  # lgdt cs:[0x0040]
        0x0F, 0x20, 0xC0,                    # mov eax, cr0
        0x0C, 0x01,                          # or al, 1 (PE)
        0x0F, 0x22, 0xC0,                    # mov cr0, eax
        0x66, 0xEA,                          # jmp far dword 0x08:base+0x20
    ]) + (base + 0x20).to_bytes(4, "little") + (0x08).to_bytes(2, "little")
    protected_mode = bytes([
        0x66, 0xBA, 0x01, 0x05,  # mov dx, 0x501 (isa-debug-exit)
        0xB0, 0x2A,              # mov al, 0x2a
        0xEE,                    # out dx, al: QEMU exits with status 85
        0xF4, 0xEB, 0xFD,        # hlt; jmp back
    ])
    gdtr = (23).to_bytes(2, "little") + (base + 0x48).to_bytes(4, "little")
    gdt = bytes(8) + bytes.fromhex("ffff0000009acf00") + bytes.fromhex("ffff00000092cf00")
    for offset, code in ((0x00, real_mode), (0x20, protected_mode), (0x40, gdtr), (0x48, gdt),
                         (0xFFF0, bytes([0xEA, 0x00, 0x00, 0x00, 0xF0]))):  # jmp far F000:0000
        rom[offset : offset + len(code)] = code
    return bytes(rom)


def kvm_usable(qemu: str = "qemu-system-x86_64", timeout: float = KVM_PROBE_TIMEOUT) -> bool:
    """Whether a guest really runs under KVM here: a probe VM (see _kvm_probe_rom) must exit by
    itself within `timeout`. Remembered per QEMU binary for the life of the process."""
    with _kvm_lock:  # concurrent starts wait for one probe rather than each running their own
        known = _kvm_usable.get(qemu)
        if known is not None:
            return known
        usable, why = _probe_kvm(qemu, timeout)
        _kvm_usable[qemu] = usable
    if not usable:
        logger.warning("KVM is not usable on this host (%s); VM labs with accel \"auto\" use TCG", why)
    return usable


def _probe_kvm(qemu: str, timeout: float) -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    return _probe_vm(qemu, "kvm", timeout)


def _probe_vm(qemu: str, accel: str, timeout: float) -> tuple[bool, str]:
    """Run the probe VM under `accel`: (True, "") when it exits by itself in time, else (False, why)."""
    with tempfile.NamedTemporaryFile(prefix="labs-kvm-probe-", suffix=".rom") as rom:
        rom.write(_kvm_probe_rom())
        rom.flush()
        argv = [qemu, "-accel", accel, "-machine", "pc", "-m", "16", "-nodefaults", "-no-user-config",
                "-display", "none", "-bios", rom.name, "-device", "isa-debug-exit"]
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                    env={"PATH": HOST_PATH, "LANG": "C.UTF-8"})
        except OSError as exc:
            return False, f"cannot run {qemu}: {exc.strerror or exc}"
        except subprocess.TimeoutExpired:
            return False, f"a {accel} guest did not finish within {timeout:g} s"
    if result.returncode != KVM_PROBE_EXIT:
        message = " ".join(result.stderr.decode("utf-8", "replace").split())[:300]
        return False, f"exit status {result.returncode}: {message or 'no message'}"
    return True, ""


def resolve_accel(accel: str, qemu: str = "qemu-system-x86_64") -> str:
    """The -accel value to use for a configured one: "auto" becomes "kvm" or "tcg" (kvm_usable)."""
    if accel == "auto":
        return "kvm" if kvm_usable(qemu) else "tcg"
    return accel


# files and locks ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _flock(path: Path, deadline: float | None, what: str) -> Iterator[None]:
    """An exclusive lock across threads and processes; None as deadline means try once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    raise RunnerError(f"{what}: busy (another operation on this VM is running)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode), "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(temp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path, limit: int = 600) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - limit, 0))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " ".join(text.split())


# terminals ----------------------------------------------------------------------------------------
class SerialTerminal:
    """The VM's serial console (ttyS0) through QEMU's chardev socket. It has no window size."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            return b""
        try:
            return self._sock.recv(max_bytes)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        if self._closed:
            raise RunnerError("the serial console is closed", permanent=True)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise RunnerError(f"the serial console has closed ({exc.strerror or exc})", permanent=True) from exc

    def resize(self, cols: int, rows: int) -> None:
        return None  # a serial line carries no window size; the guest uses its own (stty)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class MonitorUnavailable(RunnerError):
    """QMP cannot be reached right now (not up yet, or another client holds it)."""


# the runner --------------------------------------------------------------------------------------
class QemuRunner(Runner):
    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.instance = str(self.options.get("instance", "labs"))
        self._guarded_uids: set[int] = set()

    # configuration --------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.options.get("root") or Path(settings.DATA_DIR) / "vm-sessions").absolute()

    @property
    def qemu(self) -> str:
        return str(self.options.get("qemu", "qemu-system-x86_64"))

    @property
    def qemu_img(self) -> str:
        return str(self.options.get("qemu_img", "qemu-img"))

    def _accel(self) -> str:
        accel = str(self.options.get("accel") or settings.LAB_QEMU_ACCEL or "auto")
        if not QEMU_OPTION_RE.match(accel):
            raise RunnerError(f"invalid QEMU accelerator {accel!r}", permanent=True)
        return resolve_accel(accel, self.qemu)

    def _run_as(self) -> pwd.struct_passwd | None:
        """The user QEMU drops to, or None when it keeps the platform's user."""
        wanted = self.options.get("run_as")
        if wanted is None:
            if os.geteuid() != 0:
                return None  # only root can switch users; the default then stays as it is
            try:
                wanted_entry = pwd.getpwnam(DEFAULT_RUN_AS)
            except KeyError:
                return None
        elif wanted in ("", False):
            return None
        else:
            try:
                wanted_entry = pwd.getpwnam(str(wanted))
            except KeyError:
                raise RunnerError(f"run_as: no user named {wanted!r} on this host", permanent=True) from None
        if wanted_entry.pw_uid == os.geteuid():
            return None
        if os.geteuid() != 0:
            raise RunnerError(f"run_as={wanted_entry.pw_name!r} needs the platform to run as root", permanent=True)
        return wanted_entry

    def available(self) -> bool:
        return bool(shutil.which(self.qemu) and shutil.which(self.qemu_img))

    def _session_dir(self, session_id: str) -> Path:
        if not _SESSION_ID_RE.match(session_id or ""):
            raise RunnerError(f"invalid session id {session_id!r}", permanent=True)
        return self.root / session_id

    def _vm_name(self, session_id: str) -> str:
        return f"{self.instance}-{session_id}"

    def _state_dir(self, state: dict[str, Any]) -> tuple[str, Path]:
        session_id = str(state.get("session_id") or Path(str(state.get("dir", ""))).name)
        session_dir = self._session_dir(session_id)
        recorded = state.get("dir")
        if recorded and Path(recorded).name == session_id and Path(recorded).parent != self.root:
            # Started under another root (the option changed since): still ours if it says so.
            candidate = Path(recorded)
            if (candidate / SESSION_FILE).is_file() and not candidate.is_symlink():
                session_dir = candidate
        return session_id, session_dir

    # processes ----------------------------------------------------------------------------
    def _is_our_qemu(self, pid: int, session_id: str, session_dir: Path) -> bool:
        if pid <= 0 or not _alive(pid):
            return False
        argv = _cmdline(pid)
        return (
            _arg_after(argv, "-name") == self._vm_name(session_id)
            and _arg_after(argv, "-pidfile") == str(session_dir / "qemu.pid")
        )

    def _find_pid(self, session_dir: Path, session_id: str, hint: Any = None) -> int | None:
        candidates = []
        if isinstance(hint, int):
            candidates.append(hint)
        try:
            candidates.append(int((session_dir / "qemu.pid").read_text().strip() or 0))
        except (OSError, ValueError):
            pass
        for pid in candidates:
            if self._is_our_qemu(pid, session_id, session_dir):
                return pid
        return None

    @contextlib.contextmanager
    def _qmp(self, session_dir: Path, deadline: float | None, timeout: float = 10.0) -> Iterator[QMPClient]:
        """One QMP conversation, serialised with every other user of this VM's socket."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(_flock(session_dir / "qmp.lock", deadline, "QEMU monitor"))
                remaining = timeout if deadline is None else max(min(timeout, deadline - time.monotonic()), 0.5)
                client = QMPClient.connect(str(session_dir / "qmp.sock"), timeout=remaining)
            except (RunnerError, QMPError, OSError) as exc:
                raise MonitorUnavailable(f"QEMU monitor: {exc}") from exc
            stack.callback(client.close)
            try:
                yield client
            except QMPError as exc:
                raise RunnerError(f"QEMU monitor: {exc}") from exc

    def _tell(self, session_dir: Path, command: str) -> None:
        """Send one command if the monitor answers; used where failing is fine (stopping)."""
        with contextlib.suppress(RunnerError), self._qmp(session_dir, time.monotonic() + 2, timeout=2) as qmp:
            qmp.execute(command)

    def _status(self, session_dir: Path, deadline: float | None, timeout: float = 5.0) -> str | None:
        """The VM's run state from QMP, or None when the monitor cannot answer now."""
        try:
            with self._qmp(session_dir, deadline, timeout) as qmp:
                return str(qmp.execute("query-status")["status"])
        except RunnerError:
            return None

    # start ----------------------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        deadline = time.monotonic() + timeout
        session_dir = self._session_dir(spec.session_id)
        session_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A second start of the same session waits for the first, then adopts what it made.
        with _flock(session_dir / "start.lock", deadline, "starting the VM"):
            return self._start_or_clean_up(spec, session_dir, progress, deadline, timeout)

    def _start_or_clean_up(
        self, spec: SessionSpec, session_dir: Path, progress: ProgressCallback, deadline: float, timeout: float
    ) -> StartResult:
        try:
            return self._start_locked(spec, session_dir, progress, deadline, timeout)
        except RunnerError:
            self._destroy(session_dir, spec.session_id, None, grace=0)
            raise
        except Exception as exc:
            self._destroy(session_dir, spec.session_id, None, grace=0)
            raise RunnerError(f"could not start the VM ({type(exc).__name__}: {exc})") from exc

    def _start_locked(
        self, spec: SessionSpec, session_dir: Path, progress: ProgressCallback, deadline: float, timeout: float
    ) -> StartResult:
        pid = self._find_pid(session_dir, spec.session_id)
        plan = _read_json(session_dir / SESSION_FILE) if pid else None
        if pid and plan:
            progress("Found the running VM; adopting it")
        else:
            plan = self._plan(spec, session_dir)
            overlay = session_dir / OVERLAY
            if overlay.exists():
                progress("Reusing the session's disk")
            else:
                progress("Creating overlay")
                self._create_overlay(plan, overlay, deadline)
            _write_json(session_dir / SESSION_FILE, plan)
            if plan["network"] == "bridge":
                self._guard_host(plan)
            progress("Starting VM")
            pid = self._launch(plan, session_dir)
        self._wait_running(plan, session_dir, pid, deadline, timeout)
        progress("VM running")
        state = {
            "session_id": spec.session_id,
            "dir": str(session_dir),
            "pid": pid,
            "overlay": str(session_dir / OVERLAY),
            "base": plan["base"],
            "name": self._vm_name(spec.session_id),
        }
        endpoints = {
            "vnc": {"unix": str(session_dir / "vnc.sock")},
            "serial": {"unix": str(session_dir / "serial.sock")},
        }
        return StartResult(state=state, endpoints=endpoints)

    def _plan(self, spec: SessionSpec, session_dir: Path) -> dict[str, Any]:
        """Everything QEMU is started with, from the spec and the image's files."""
        image = Path(spec.image or "")
        if not image.is_absolute():
            raise RunnerError(f"a VM image must be an absolute file path, not {spec.image!r}", permanent=True)
        if not image.is_file():
            raise RunnerError(f"VM image not found: {image}", permanent=True)
        user = self._run_as()
        plan: dict[str, Any] = {
            "session_id": spec.session_id,
            "name": self._vm_name(spec.session_id),
            "base": str(image),
            "base_format": "raw",
            "iso": False,
            "kernel": None,
            "initrd": None,
            "cmdline": None,
            "cdrom": None,
            "boot": None,
            "incoming": None,
            "machine": str(self.options.get("machine", "pc")),
            "memory_mb": max(int(spec.memory_mb), 32),
            "smp": max(1, math.ceil(spec.cpu)),
            "network": spec.network_mode,
            "nic": spec.network_mode != "none",
            "disk_mb": max(int(spec.disk_mb), 1),
            "run_as": user.pw_name if user else None,
        }
        declared = spec.disk_format or ""
        if declared and declared not in (*BASE_FORMATS, "iso"):
            raise RunnerError(f"{image}: unknown image format {declared!r}", permanent=True)
        # The stored, validated format decides; only an image of unknown format goes by kind and name.
        if declared == "iso" or (not declared and (spec.image_kind == "iso" or image.suffix.lower() == ".iso")):
            plan.update(iso=True, cdrom=str(image), boot="order=cd,once=d")
            return plan
        info = self._image_info(image, declared or None)
        plan["base_format"] = info["format"]
        described = _read_json(image.with_name(image.name + ".json"))
        backing = info.get("backing-filename")
        data_file = ((info.get("format-specific") or {}).get("data") or {}).get("data-file")
        if data_file:
            raise RunnerError(f"{image}: disk images with an external data file are not accepted", permanent=True)
        if backing and not (described and described.get("backing") == backing):
            raise RunnerError(f"{image}: disk images with a backing file are not accepted", permanent=True)
        if described is not None:
            self._apply_description(plan, image, described)
        elif image.name in DISK_NAMES:
            folder = image.parent
            if (folder / "vmlinuz").is_file():
                plan["kernel"] = str(folder / "vmlinuz")
                if (folder / "initrd.img").is_file():
                    plan["initrd"] = str(folder / "initrd.img")
                cmdline = folder / "cmdline"
                plan["cmdline"] = cmdline.read_text().strip() if cmdline.is_file() else DEFAULT_CMDLINE
        return plan

    def _apply_description(self, plan: dict[str, Any], image: Path, described: dict[str, Any]) -> None:
        folder = image.parent
        for key in ("kernel", "initrd"):
            if described.get(key):
                path = folder / str(described[key])  # absolute paths replace the folder
                if not path.is_file():
                    raise RunnerError(f"{image}: its {key} {path} is missing", permanent=True)
                plan[key] = str(path)
        if plan["kernel"]:
            plan["cmdline"] = str(described.get("cmdline") or DEFAULT_CMDLINE)
        hardware = described.get("hardware") or {}
        cdrom = hardware.get("cdrom")
        if cdrom and Path(cdrom).is_file():
            plan.update(cdrom=str(cdrom), boot="order=cd")
        memory_state = described.get("memory_state")
        if not memory_state:
            return
        state_file = folder / str(memory_state)
        if not state_file.is_file():
            raise RunnerError(f"{image}: its memory state {state_file} is missing", permanent=True)
        if cdrom and not plan["cdrom"]:
            raise RunnerError(f"{image}: the ISO {cdrom} it had inserted is gone; the memory cannot be restored",
                              permanent=True)
        # The restored OS sees the hardware it was saved with.
        plan.update(
            incoming=str(state_file),
            machine=str(hardware.get("machine") or plan["machine"]),
            memory_mb=int(hardware.get("memory_mb") or plan["memory_mb"]),
            smp=int(hardware.get("smp") or plan["smp"]),
            nic=bool(hardware.get("nic", plan["nic"])),
        )

    def _image_info(self, image: Path, disk_format: str | None = None) -> dict[str, Any]:
        """`qemu-img info` of a base, remembered while the file stays the same (every start needs it).
        With `disk_format` the file is opened as that format, never probed."""
        stat = image.stat()
        key = (str(image), stat.st_ino, stat.st_size, stat.st_mtime_ns, disk_format or "")
        with _info_lock:
            cached = _info_cache.get(key)
        if cached is not None:
            return dict(cached)
        forced = ["-f", disk_format] if disk_format else []
        result = self._qemu_img(["info", "--output=json", *forced, str(image)], timeout=30, what=f"reading {image}")
        try:
            info = json.loads(result.stdout)
        except ValueError as exc:
            raise RunnerError(f"qemu-img info {image}: unreadable answer") from exc
        if info.get("format") not in BASE_FORMATS:
            raise RunnerError(
                f"{image}: {info.get('format')} disks are not supported; convert it to qcow2", permanent=True
            )
        with _info_lock:
            if len(_info_cache) > 256:
                _info_cache.clear()
            _info_cache[key] = info
        return dict(info)

    def _qemu_img(self, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [self.qemu_img, *args], capture_output=True, text=True, timeout=max(timeout, 1.0),
                env={"PATH": HOST_PATH, "LANG": "C.UTF-8"},
            )
        except FileNotFoundError as exc:
            raise RunnerError(f"{what}: {self.qemu_img} is not installed", permanent=True) from exc
        except subprocess.TimeoutExpired as exc:
            raise RunnerError(f"{what}: qemu-img took longer than {timeout:g} s") from exc
        if result.returncode != 0:
            message = " ".join((result.stderr or result.stdout).split())[:500]
            raise RunnerError(f"{what}: {message or 'qemu-img failed'}", permanent=True)
        return result

    def _create_overlay(self, plan: dict[str, Any], overlay: Path, deadline: float) -> None:
        partial = overlay.with_name(overlay.name + ".part")
        if plan["iso"]:
            args = ["create", "-q", "-f", "qcow2", str(partial), f"{plan['disk_mb']}M"]
        else:
            args = ["create", "-q", "-f", "qcow2", "-b", plan["base"], "-F", plan["base_format"], str(partial)]
        self._qemu_img(args, timeout=deadline - time.monotonic(), what="creating the session's disk")
        os.chmod(partial, 0o600)
        os.replace(partial, overlay)

    def _guard_host(self, plan: dict[str, Any]) -> None:
        """Keep a bridge-mode guest from the host's own services (see guard_host)."""
        if not self.options.get("guard_host", True):
            return
        if not plan["run_as"]:
            raise RunnerError(
                "bridge networking for VM labs needs QEMU to run as a user of its own (create the user "
                f"{DEFAULT_RUN_AS} or set the qemu runner's run_as option), so that connections from the VM "
                "to the host's own services can be refused; or set guard_host=false to accept that risk",
                permanent=True,
            )
        uid = pwd.getpwnam(plan["run_as"]).pw_uid
        if uid in self._guarded_uids:
            return
        firewall.ensure(firewall.process_owner_rules(uid),
                        "fences VMs off the host, link-local addresses and private networks")
        self._guarded_uids.add(uid)

    def _command(self, plan: dict[str, Any], session_dir: Path, disk_fds: tuple[int, int]) -> list[str]:
        argv = [
            self.qemu,
            "-name", plan["name"],
            "-machine", plan["machine"],
            "-accel", self._accel(),
            "-smp", str(plan["smp"]),
            "-m", str(plan["memory_mb"]),
            "-nodefaults", "-no-user-config",
            "-display", "none",
            "-vga", "std",
            # Sockets by relative name (QEMU runs in the session directory): a unix socket
            # address holds ~107 bytes, less than a deep DATA_DIR needs. See connect_unix.
            "-vnc", "unix:vnc.sock",
            "-qmp", "unix:qmp.sock,server=on,wait=off",
            # Also logged to serial.log (appended across restarts), attached or not: output().
            "-chardev", f"socket,id=serial0,path=serial.sock,server=on,wait=off,logfile={SERIAL_LOG},logappend=on",
            "-serial", "chardev:serial0",
            "-pidfile", str(session_dir / "qemu.pid"),
            # The overlay comes as two descriptors (read-write and read-only) in fd set 1: QEMU
            # reopens its disk when a snapshot saves memory, and by then it may run as run_as,
            # which cannot (and need not) reach the session directory. No image locking on it:
            # the set keeps both descriptors open, so locks taken through one would outlive the
            # reopen and refuse the next (only this QEMU ever opens the overlay; start.lock).
            "-add-fd", f"fd={disk_fds[0]},set=1,opaque=overlay-rw",
            "-add-fd", f"fd={disk_fds[1]},set=1,opaque=overlay-ro",
            "-drive", "file=/dev/fdset/1,format=qcow2,if=virtio,id=disk0,discard=unmap,file.locking=off",
        ]
        if self.options.get("cpu"):
            argv += ["-cpu", str(self.options["cpu"])]
        if plan["cdrom"]:
            argv += ["-drive", f"file={_opt(plan['cdrom'])},format=raw,media=cdrom,readonly=on,if=ide,index=2"]
        if plan["boot"]:
            argv += ["-boot", plan["boot"]]
        if plan["kernel"]:
            argv += ["-kernel", plan["kernel"], "-append", plan["cmdline"] or DEFAULT_CMDLINE]
            if plan["initrd"]:
                argv += ["-initrd", plan["initrd"]]
        argv += ["-nic", self._nic(plan)]
        if plan["incoming"]:
            argv += ["-incoming", "defer"]
        sandbox = self.options.get("sandbox", True)
        if sandbox:
            default = SANDBOX if plan["run_as"] else f"{SANDBOX},elevateprivileges=deny"
            argv += ["-sandbox", sandbox if isinstance(sandbox, str) else default]
        if plan["run_as"]:
            argv += ["-runas", plan["run_as"]]
        return argv

    def _nic(self, plan: dict[str, Any]) -> str:
        if not plan["nic"]:
            return "none"
        nic = "user,model=virtio-net-pci,ipv6=off"
        if plan["network"] in ("none", "isolated"):
            nic += ",restrict=on"  # "none" only gets a NIC when a restored snapshot had one
        return nic

    def _launch(self, plan: dict[str, Any], session_dir: Path) -> int:
        for stale in ("qmp.sock", "vnc.sock", "serial.sock", "qemu.pid"):
            with contextlib.suppress(FileNotFoundError):
                (session_dir / stale).unlink()
        overlay = session_dir / OVERLAY
        disk_fds = (os.open(overlay, os.O_RDWR | os.O_CLOEXEC), os.open(overlay, os.O_RDONLY | os.O_CLOEXEC))
        argv = self._command(plan, session_dir, disk_fds)
        with contextlib.ExitStack() as cleanup:
            for fd in disk_fds:
                cleanup.callback(os.close, fd)
            log = cleanup.enter_context(open(session_dir / "qemu.log", "ab"))
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=session_dir, close_fds=True,
                    pass_fds=disk_fds, start_new_session=True, env={"PATH": HOST_PATH, "LANG": "C.UTF-8"},
                )
            except OSError as exc:
                raise RunnerError(f"cannot run {self.qemu}: {exc.strerror or exc}", permanent=True) from exc
        with _children_lock:
            _children[process.pid] = process
        threading.Thread(target=_watch, args=(process,), name=f"qemu-{process.pid}", daemon=True).start()
        return process.pid

    def _wait_running(
        self, plan: dict[str, Any], session_dir: Path, pid: int, deadline: float, timeout: float
    ) -> None:
        """Wait until QMP answers and the VM runs, restoring saved memory on the way if asked."""
        while True:
            # Only "gone" counts: just after Popen returns, the new program's command line may
            # not be readable yet, so a mismatch is not yet a reason to fail.
            if not _alive(pid):
                log = _tail(session_dir / "qemu.log")
                raise RunnerError(f"QEMU exited while starting{_exit_status(pid)}: {log or 'no message'}")
            if time.monotonic() >= deadline:
                raise RunnerError(f"the VM did not start within {timeout:g} s")
            try:
                with self._qmp(session_dir, deadline, timeout=2.0) as qmp:
                    while True:
                        status = str(qmp.execute("query-status")["status"])
                        if status == "running":
                            return
                        if status == "inmigrate" and plan["incoming"]:
                            self._restore_memory(qmp, plan["incoming"])
                        elif status == "paused" and plan["incoming"]:
                            # Snapshots are saved from a paused VM, so a restored one starts paused.
                            qmp.execute("cont")
                        elif status in STOPPED_STATUSES:
                            raise RunnerError(f"the VM stopped while starting ({status})")
                        if time.monotonic() >= deadline:
                            raise RunnerError(f"the VM did not start within {timeout:g} s (state {status})")
                        time.sleep(0.05)
            except MonitorUnavailable:
                time.sleep(0.01)  # the socket is not there yet, or QEMU is still setting up

    def _restore_memory(self, qmp: QMPClient, state_file: str) -> None:
        migration = qmp.execute("query-migrate") or {}
        if migration.get("status") not in (None, "", "none"):
            if migration.get("status") == "failed":
                raise RunnerError(f"restoring the VM's memory failed: {migration.get('error-desc', 'no reason')}")
            return  # already under way
        fd = os.open(state_file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            qmp.execute("getfd", {"fdname": "labs-restore"}, fds=[fd])
        finally:
            os.close(fd)
        qmp.execute("migrate-incoming", {"uri": "fd:labs-restore"})

    # stop -----------------------------------------------------------------------------------
    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        session_id, session_dir = self._state_dir(state)
        grace = max(min(timeout, float(self.options.get("powerdown_timeout", 10))), 0.0)
        self._destroy(session_dir, session_id, state.get("pid"), grace)

    def _destroy(self, session_dir: Path, session_id: str, pid_hint: Any, grace: float) -> None:
        pid = self._find_pid(session_dir, session_id, pid_hint)
        if pid is not None:
            self._terminate(pid, session_dir, grace)
        if session_dir.is_symlink():
            session_dir.unlink()
        elif session_dir.exists():
            shutil.rmtree(session_dir, ignore_errors=True)
            if session_dir.exists():
                raise RunnerError(f"could not remove {session_dir}")

    def _terminate(self, pid: int, session_dir: Path, grace: float) -> None:
        """ACPI power button, then QMP quit, then SIGKILL; returns once the process is gone."""
        if grace > 0:
            self._tell(session_dir, "system_powerdown")
            if _wait_gone(pid, time.monotonic() + grace):
                return
        self._tell(session_dir, "quit")
        if _wait_gone(pid, time.monotonic() + 3):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, time.monotonic() + 10):
            raise RunnerError(f"QEMU (pid {pid}) did not exit after SIGKILL")

    def poll(self, state: dict[str, Any]) -> PollStatus:
        session_id, session_dir = self._state_dir(state)
        # The reconciler polls every running session: the serial log's cap holds even unread.
        self._trim_serial_log(session_dir)
        if self._find_pid(session_dir, session_id, state.get("pid")) is not None:
            # A busy monitor (a snapshot under way) means the VM exists: running for our purposes.
            status = self._status(session_dir, deadline=None, timeout=3)
            return PollStatus.STOPPED if status in STOPPED_STATUSES else PollStatus.RUNNING
        return PollStatus.STOPPED if (session_dir / SESSION_FILE).is_file() else PollStatus.MISSING

    # commands and files: a VM has no agent ------------------------------------------------------
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
        raise RunnerError("commands cannot run inside a VM without a guest agent", permanent=True)

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        raise RunnerError("VM labs have no file access", permanent=True)

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        raise RunnerError("VM labs have no file access", permanent=True)

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        raise RunnerError("VM labs have no file access", permanent=True)

    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        raise RunnerError("the ports of a VM lab cannot be reached from the platform", permanent=True)

    def open_terminal(
        self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1"
    ) -> SerialTerminal:
        """The serial console. There is one: every `name` attaches to it, one client at a time."""
        session_id, session_dir = self._state_dir(state)
        if self._find_pid(session_dir, session_id, state.get("pid")) is None:
            raise RunnerError("the VM is not running", permanent=True)
        try:
            sock = connect_unix(str(session_dir / "serial.sock"), timeout=10)
        except OSError as exc:
            raise RunnerError(f"cannot reach the serial console: {exc.strerror or exc}") from exc
        sock.settimeout(None)
        return SerialTerminal(sock)

    # supervision ------------------------------------------------------------------------------
    def list_managed(self) -> list[ManagedEnvironment]:
        root = self.root
        found: dict[str, ManagedEnvironment] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            argv = _cmdline(int(entry))
            name = _arg_after(argv, "-name") or ""
            if not name.startswith(f"{self.instance}-"):
                continue
            session_id = name[len(self.instance) + 1 :]
            if not _SESSION_ID_RE.match(session_id) or not _alive(int(entry)):
                continue
            if _arg_after(argv, "-pidfile") != str(root / session_id / "qemu.pid"):
                continue  # another install's VM (another root), or not one of ours
            # A guest powered off (QEMU kept for snapshots) is not running: reconciliation ends it.
            status = self._status(root / session_id, deadline=None, timeout=1)
            found[session_id] = ManagedEnvironment(
                session_id, str(root / session_id), status not in STOPPED_STATUSES, {"pid": int(entry)}
            )
        if root.is_dir():
            for path in sorted(root.iterdir()):
                if path.name in found or not path.is_dir() or path.is_symlink():
                    continue
                if _SESSION_ID_RE.match(path.name):
                    found[path.name] = ManagedEnvironment(path.name, str(path), False, {})
        return list(found.values())

    def remove_managed(self, env: ManagedEnvironment) -> None:
        session_dir = self._session_dir(env.session_id)
        if Path(env.ref) != session_dir:
            raise RunnerError(f"refusing to remove {env.ref}: not under {self.root}", permanent=True)
        self._destroy(session_dir, env.session_id, env.detail.get("pid"), grace=0)

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        session_id, session_dir = self._state_dir(state)
        pid = self._find_pid(session_dir, session_id, state.get("pid"))
        if pid is None:
            raise RunnerError("the VM is not running", permanent=True)
        plan = _read_json(session_dir / SESSION_FILE) or {}
        before = _proc_stat(pid)
        began = time.monotonic()
        time.sleep(0.1)
        after = _proc_stat(pid)
        elapsed = time.monotonic() - began
        if not before or not after:
            raise RunnerError("the VM is not running", permanent=True)
        ticks = (int(after[11]) + int(after[12])) - (int(before[11]) + int(before[12]))
        cpu = 100.0 * ticks / _CLK_TCK / elapsed if elapsed > 0 else 0.0
        return RunnerStats(
            cpu_percent=round(cpu, 1),
            memory_bytes=int(after[21]) * _PAGE_SIZE,
            memory_limit_bytes=int(plan.get("memory_mb") or 0) << 20,
            pids=1,
        )

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """The serial console's log (serial.log); the cursor is a byte offset into it."""
        _, session_dir = self._state_dir(state)
        if not session_dir.is_dir():
            raise RunnerError("the VM is gone", permanent=True)
        self._trim_serial_log(session_dir)
        try:
            return serial_log.read(session_dir / SERIAL_LOG, since, max_bytes)
        except OSError as exc:
            raise RunnerError(f"cannot read the serial log: {exc.strerror or exc}") from exc

    def _trim_serial_log(self, session_dir: Path) -> None:
        limit = int(float(self.options.get("serial_log_max_mb", 8)) * 1024 * 1024)
        try:
            serial_log.trim(session_dir / SERIAL_LOG, limit)
        except OSError as exc:
            logger.warning("cannot trim the serial log in %s: %s", session_dir, exc)

    # snapshots --------------------------------------------------------------------------------
    can_snapshot = True

    def snapshot_disk_bytes(self, state: dict[str, Any]) -> int:
        try:
            _, session_dir = self._state_dir(state)
            return (session_dir / OVERLAY).stat().st_size
        except (RunnerError, OSError):
            return 0

    def snapshot(self, state: dict[str, Any], dest_path: str, include_memory: bool) -> int:
        """Save the session's disk (and memory) as <dest>, <dest>.state and <dest>.json; see the
        module docstring. Returns the bytes written. Leaves nothing behind when it fails."""
        session_id, session_dir = self._state_dir(state)
        plan = _read_json(session_dir / SESSION_FILE)
        overlay = session_dir / OVERLAY
        if plan is None or not overlay.is_file():
            raise RunnerError("the session's disk no longer exists", permanent=True)
        dest = Path(dest_path)
        if not dest.is_absolute():
            raise RunnerError("a snapshot needs an absolute path", permanent=True)
        memory = dest.with_name(dest.name + ".state")
        described = dest.with_name(dest.name + ".json")
        for path in (dest, memory, described):
            if path.exists():
                raise RunnerError(f"{path} already exists", permanent=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + float(self.options.get("snapshot_timeout", 600))
        pid = self._find_pid(session_dir, session_id, state.get("pid"))
        machine = plan["machine"]
        try:
            if pid is None:
                if include_memory:
                    raise RunnerError("the VM is not running, so there is no memory to save", permanent=True)
                self._copy_disk(plan, overlay, dest, deadline)
            else:
                with self._qmp(session_dir, deadline) as qmp:
                    status = str(qmp.execute("query-status")["status"])
                    machine = self._machine_type(qmp) or machine
                    qmp.execute("stop")
                    try:
                        if include_memory:
                            self._save_memory(qmp, memory, deadline)
                        self._copy_disk(plan, overlay, dest, deadline)
                    finally:
                        if status == "running":
                            qmp.execute("cont")
            description = {
                "format": 1,
                "kind": "labs-vm-snapshot",
                "session_id": session_id,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "backing": None if plan["iso"] else plan["base"],
                "backing_format": None if plan["iso"] else plan["base_format"],
                "kernel": plan["kernel"],
                "initrd": plan["initrd"],
                "cmdline": plan["cmdline"],
                "memory_state": memory.name if include_memory else None,
                "hardware": {
                    "machine": machine,
                    "memory_mb": plan["memory_mb"],
                    "smp": plan["smp"],
                    "nic": plan["nic"],
                    "cdrom": plan["cdrom"],
                },
            }
            _write_json(described, description, mode=0o600)
        except BaseException:
            for path in (dest, memory, described, dest.with_name(dest.name + ".part")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            raise
        return sum(path.stat().st_size for path in (dest, memory, described) if path.exists())

    def _machine_type(self, qmp: QMPClient) -> str | None:
        """The versioned machine type ("pc-i440fx-7.2"): what a memory restore must use."""
        try:
            value = str(qmp.execute("qom-get", {"path": "/machine", "property": "type"}))
        except QMPCommandError:
            return None
        return value.removesuffix("-machine") or None

    def _save_memory(self, qmp: QMPClient, path: Path, deadline: float) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # The VM is paused: no reason to throttle (the default is 128 MiB/s).
            qmp.execute("migrate-set-parameters", {"max-bandwidth": 8 << 30})
            qmp.execute("getfd", {"fdname": "labs-snapshot"}, fds=[fd])
        finally:
            os.close(fd)
        qmp.execute("migrate", {"uri": "fd:labs-snapshot"})
        while True:
            migration = qmp.execute("query-migrate") or {}
            status = migration.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise RunnerError(f"saving the VM's memory failed: {migration.get('error-desc', status)}")
            if time.monotonic() >= deadline:
                with contextlib.suppress(QMPError):
                    qmp.execute("migrate_cancel")
                raise RunnerError("saving the VM's memory took too long")
            time.sleep(0.05)
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())

    def _copy_disk(self, plan: dict[str, Any], overlay: Path, dest: Path, deadline: float) -> None:
        """Copy the overlay's own clusters. The overlay is opened with its backing given explicitly,
        never from its header, so a tampered header cannot make us read another file."""
        partial = dest.with_name(dest.name + ".part")
        source: dict[str, Any] = {"driver": "qcow2", "file": {"driver": "file", "filename": str(overlay)}}
        args = ["convert", "-U", "-q", "-O", "qcow2"]
        if plan["iso"]:
            source["backing"] = None
        else:
            source["backing"] = {"driver": plan["base_format"], "file": {"driver": "file", "filename": plan["base"]}}
            args += ["-B", plan["base"], "-F", plan["base_format"]]
        args += [f"json:{json.dumps(source)}", str(partial)]
        try:
            self._qemu_img(args, timeout=deadline - time.monotonic(), what="copying the session's disk")
            os.chmod(partial, 0o600)
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(partial, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
