"""VM start latency: request → VNC ready, through the platform and the QEMU runner, against raw QEMU.

"VNC ready" means the session's vnc.sock accepts a connection and sends the RFB greeting. Three
ways of starting the same image are measured in the same run, interleaved:

    platform    start_session (the provisioning job runs inline) for a VM lab on the qemu runner,
                then the VNC endpoint it recorded
    runner      QemuRunner.start() alone (overlay, QEMU, QMP handshake), then its VNC endpoint
    raw QEMU    qemu-system-x86_64 on the base with -drive ...,snapshot=on (QEMU's own throwaway
                overlay), polling its VNC socket: the floor any runner pays

for three bases that differ only in size: the test VM's own disk (64 MiB qcow2), a 10 MiB raw disk
(whole sectors, as registration requires) full of data and a sparse 10 GiB raw disk, each booted
with the test kernel and initramfs. The runner's start must not grow with the base: it never
copies it. Prints medians and the runner's ratio to raw QEMU.

    .venv/bin/python bench/vm_start.py [--rounds 5] [--accel tcg]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: Path, accel: str) -> None:
    os.environ["LAB_DATA_DIR"] = str(data_dir)
    os.environ["LAB_QEMU_ACCEL"] = accel
    os.environ["LAB_RUNNERS"] = json.dumps({"qemu": {
        "BACKEND": "runners.qemu.QemuRunner",
        "OPTIONS": {"root": str(data_dir / "vms"), "run_as": "", "powerdown_timeout": 0},
    }})
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["LAB_EMBEDDED_JOBS"] = "inline"  # measure the job itself, not a thread hand-off
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def vnc_ready(path: str, deadline: float) -> None:
    from runners.qmp import connect_unix

    while True:
        try:
            with connect_unix(path, timeout=2) as sock:
                if sock.recv(12).startswith(b"RFB "):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no VNC greeting on {path}")
        time.sleep(0.005)


def make_bases(work: Path, test_vm: Path) -> dict[str, Path]:
    """Image directories (disk + the test kernel files) for each base size."""
    bases = {"test VM disk (64 MiB qcow2)": test_vm / "disk.qcow2"}
    for label, name, make in (
        ("10 MiB raw, full of data", "small", lambda disk: disk.write_bytes(os.urandom(10 * 1024 * 1024))),
        ("10 GiB raw, sparse", "big", lambda disk: subprocess.run(
            ["qemu-img", "create", "-q", "-f", "raw", str(disk), "10G"], check=True)),
    ):
        folder = work / name
        folder.mkdir()
        for part in ("vmlinuz", "initrd.img", "cmdline"):
            shutil.copy(test_vm / part, folder / part)
        make(folder / "disk.raw")
        bases[label] = folder / "disk.raw"
    return bases


class PlatformCase:
    def __init__(self, disk: Path) -> None:
        from django.contrib.auth.models import User

        from labs.models import Image, Lab

        self.user, _ = User.objects.get_or_create(username="bench-vm")
        image = Image.objects.create(name=f"bench-{uuid.uuid4().hex[:8]}", kind=Image.Kind.VM, reference=str(disk))
        self.lab = Lab.objects.create(slug=f"bench-{uuid.uuid4().hex[:8]}", title="bench", image=image, runner="qemu",
                                      memory_mb=128, network_mode="none", consoles=["vnc"], published=True)

    def once(self) -> float:
        from sessions_app import actions
        from sessions_app.models import Session, State

        began = time.perf_counter()
        session = actions.start_session(self.user, self.lab)  # not in a transaction: the job runs inline
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        vnc_ready(session.endpoints["vnc"]["unix"], time.monotonic() + 60)
        elapsed = time.perf_counter() - began
        actions.stop_session(session)
        Session.objects.filter(pk=session.pk).delete()
        return elapsed


class RunnerCase:
    def __init__(self, disk: Path) -> None:
        from runners import get_runner

        self.disk = disk
        self.runner = get_runner("qemu")

    def once(self) -> float:
        from runners.base import SessionSpec

        spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="bench", lab_slug="bench",
                           image=str(self.disk), image_kind="vm", memory_mb=128, network_mode="none")
        began = time.perf_counter()
        result = self.runner.start(spec, timeout=60)
        vnc_ready(result.endpoints["vnc"]["unix"], time.monotonic() + 60)
        elapsed = time.perf_counter() - began
        self.runner.stop(result.state, timeout=0)
        return elapsed


class RawQemuCase:
    def __init__(self, disk: Path, work: Path, accel: str) -> None:
        self.disk = disk
        self.work = work
        self.accel = accel
        self.format = "qcow2" if disk.suffix == ".qcow2" else "raw"

    def once(self) -> float:
        folder = Path(tempfile.mkdtemp(dir=self.work))
        vnc = folder / "vnc.sock"
        boot = self.disk.parent
        began = time.perf_counter()
        process = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", self.accel, "-m", "128", "-nodefaults", "-display", "none",
             "-vga", "std", "-vnc", f"unix:{vnc}", "-kernel", str(boot / "vmlinuz"), "-initrd",
             str(boot / "initrd.img"), "-append", (boot / "cmdline").read_text().strip(), "-nic", "none",
             "-drive", f"file={self.disk},format={self.format},if=virtio,snapshot=on"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not vnc.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("raw QEMU did not start")
                time.sleep(0.002)
            vnc_ready(str(vnc), deadline)
            return time.perf_counter() - began
        finally:
            process.kill()
            process.wait()
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accel", default=os.environ.get("LAB_QEMU_ACCEL", "tcg"))
    args = parser.parse_args()
    built = subprocess.run(["bash", str(ROOT / "deploy/images/vm/build-test-vm.sh"), "--print-dir"],
                           capture_output=True, text=True, check=True)
    test_vm = Path(built.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="vm-bench-") as temp:
        work = Path(temp)
        setup_django(work / "data", args.accel)
        bases = make_bases(work, test_vm)
        cases = {
            (label, kind): case
            for label, disk in bases.items()
            for kind, case in (("raw QEMU", RawQemuCase(disk, work, args.accel)), ("runner", RunnerCase(disk)),
                               ("platform", PlatformCase(disk)))
        }
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
        for round_number in range(args.rounds + 1):
            for key, case in cases.items():  # interleaved, so machine load hits every case alike
                elapsed = case.once()
                if round_number >= 1:  # one warm-up round (page cache, imports)
                    samples[key].append(elapsed)
        host = socket.gethostname()
        print(f"VM start → VNC ready, accel {args.accel}, {args.rounds} rounds after 1 warm-up, median ms "
              f"(host {host}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
        print(f"{'base':<30} {'file size':>14} {'raw QEMU':>9} {'runner':>9} {'platform':>9} "
              f"{'runner/raw':>11} {'platform/raw':>13}")
        for label, disk in bases.items():
            raw, runner, platform = (statistics.median(samples[(label, kind)]) * 1000
                                     for kind in ("raw QEMU", "runner", "platform"))
            size = disk.stat().st_size
            shown = f"{size / 2**30:.0f} GiB" if size >= 2**30 else f"{size / 1e6:.1f} MB"
            print(f"{label:<30} {shown:>14} {raw:9.0f} {runner:9.0f} {platform:9.0f} "
                  f"{runner / raw:10.2f}× {platform / raw:12.2f}×")
        print("Spread (min-max ms): " + "; ".join(
            f"{label.split(',')[0]} {kind} {min(values) * 1000:.0f}-{max(values) * 1000:.0f}"
            for (label, kind), values in samples.items()))


if __name__ == "__main__":
    main()
