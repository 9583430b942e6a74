"""The QEMU runner on real QEMU (TCG): overlays, the serial console, stopping, adoption, ISO boot,
snapshots with and without memory, reconciliation, running as another user, bridge fencing.

The test VM (tests/vm_image.py) is a Debian kernel with a busybox initramfs: a root shell on
ttyS0 whose prompt is "labvm# ", acpid powering off on the ACPI power button.
"""

from __future__ import annotations

import http.server
import pwd
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from labs.models import Image, Lab
from runners import firewall, get_runner, reset_cache
from runners.base import PollStatus, RunnerError
from runners.qemu import QemuRunner
from runners.qmp import QMPClient, connect_unix
from sessions_app import actions
from sessions_app.models import State
from sessions_app.reconcile import reconcile
from tests.netns import remote_hosts
from tests.vm_image import build_boot_iso, console_until, serial_shell, sha256, vm_spec

BOOT_TIMEOUT = 240  # a loaded 2-core CI machine boots the test VM in 3-30 s under TCG


@pytest.fixture
def make_runner(tmp_path):
    """QEMU runners on a root of their own (a long path: it checks the relative socket names)."""
    made: list[QemuRunner] = []

    def make(**options) -> QemuRunner:
        runner = QemuRunner("qemu", {"root": str(tmp_path / "vm-sessions"), "accel": "tcg", "run_as": "",
                                     **options})
        made.append(runner)
        return runner

    yield make
    for runner in made:
        for env in runner.list_managed():
            runner.remove_managed(env)


def gone(pid: int) -> bool:
    """No process at all: not running and not a zombie waiting to be reaped."""
    return not Path(f"/proc/{pid}").exists()


def shell(runner, state, command: bytes, expect: bytes, timeout: float = BOOT_TIMEOUT) -> bytes:
    return serial_shell(runner, state, command, expect, timeout)


def test_a_vm_runs_on_an_overlay_of_its_base_and_stop_leaves_nothing(make_runner, vm_image, tmp_path):
    runner = make_runner(powerdown_timeout=60)
    base_before = sha256(vm_image.disk)
    steps: list[str] = []
    result = runner.start(vm_spec(vm_image.disk), progress=steps.append, timeout=BOOT_TIMEOUT)
    state = result.state
    session_dir = Path(state["dir"])
    assert steps == ["Creating overlay", "Starting VM", "VM running"]
    assert result.endpoints == {"vnc": {"unix": str(session_dir / "vnc.sock")},
                                "serial": {"unix": str(session_dir / "serial.sock")}}
    info = subprocess.run(["qemu-img", "info", "-U", state["overlay"]], capture_output=True, text=True).stdout
    assert f"backing file: {vm_image.disk}" in info
    assert "backing file format: qcow2" in info
    argv = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"-name") + 1] == f"labs-{state['session_id']}".encode()
    with QMPClient.connect(str(session_dir / "qmp.sock"), timeout=10) as qmp:
        assert qmp.execute("query-status")["status"] == "running"

    assert b"42" in shell(runner, state, b"echo $((6*7))", b"42")
    shell(runner, state, b"echo written-by-guest | dd of=/dev/vda bs=512 seek=8 conv=notrunc,fsync; echo W''ROTE",
          b"WROTE")
    differs = subprocess.run(["qemu-img", "compare", "-U", state["overlay"], str(vm_image.disk)],
                             capture_output=True, text=True)
    assert differs.returncode == 1, differs.stdout + differs.stderr  # the session's disk changed...
    assert sha256(vm_image.disk) == base_before  # ...its base did not

    # The VGA console shows something (the kernel log and the banner), so VNC is not blank.
    with QMPClient.connect(str(session_dir / "qmp.sock"), timeout=10) as qmp:
        qmp.execute("screendump", {"filename": str(tmp_path / "screen.ppm")})
    pixels = (tmp_path / "screen.ppm").read_bytes().split(b"\n", 3)[3]
    assert len(set(pixels)) > 1

    began = time.monotonic()
    runner.stop(state, timeout=60)
    assert time.monotonic() - began < 30  # acpid powered the guest off; no need to wait the full grace
    assert gone(state["pid"])
    assert not session_dir.exists()
    assert runner.poll(state) is PollStatus.MISSING
    runner.stop(state)  # idempotent


def test_starting_again_adopts_the_running_vm_even_from_a_new_runner(make_runner, vm_image):
    runner = make_runner()
    spec = vm_spec(vm_image.disk)
    first = runner.start(spec, timeout=BOOT_TIMEOUT)
    restarted = make_runner()  # as after a restart of the platform: only the session's state is known
    steps: list[str] = []
    again = restarted.start(spec, progress=steps.append, timeout=BOOT_TIMEOUT)
    assert again.state == first.state
    assert steps == ["Found the running VM; adopting it", "VM running"]
    assert [env.session_id for env in restarted.list_managed()] == [spec.session_id]
    assert restarted.poll(first.state) is PollStatus.RUNNING

    stats = restarted.stats(first.state)
    assert stats.memory_bytes > 0
    assert stats.memory_limit_bytes == 128 << 20
    with connect_unix(first.endpoints["vnc"]["unix"], timeout=10) as vnc:  # a path too long for connect()
        assert vnc.recv(12).startswith(b"RFB ")

    restarted.stop(first.state, timeout=0)
    assert gone(first.state["pid"])
    assert restarted.list_managed() == []


def test_stop_forces_a_vm_that_ignores_the_power_button(make_runner, tmp_path):
    runner = make_runner(powerdown_timeout=1)  # the ISO's boot loop has no ACPI at all
    iso = build_boot_iso(tmp_path / "loop.iso")
    state = runner.start(vm_spec(iso), timeout=BOOT_TIMEOUT).state
    began = time.monotonic()
    runner.stop(state, timeout=30)
    assert 1 <= time.monotonic() - began < 15
    assert gone(state["pid"])
    assert not Path(state["dir"]).exists()


def test_an_iso_boots_from_the_cdrom_with_an_empty_disk_of_the_labs_size(make_runner, tmp_path):
    runner = make_runner()
    iso = build_boot_iso(tmp_path / "hello.iso", message=b"HELLO FROM THE ISO\r\n")
    state = runner.start(vm_spec(iso, disk_mb=300), timeout=BOOT_TIMEOUT).state
    argv = [part.decode() for part in Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")]
    assert f"file={iso},format=raw,media=cdrom,readonly=on,if=ide,index=2" in argv
    assert argv[argv.index("-boot") + 1] == "order=cd,once=d"
    info = subprocess.run(["qemu-img", "info", "-U", state["overlay"]], capture_output=True, text=True).stdout
    assert "virtual size: 300 MiB" in info
    assert "backing file" not in info
    terminal = runner.open_terminal(state)
    try:
        console_until(terminal, b"HELLO FROM THE ISO", timeout=BOOT_TIMEOUT)
    finally:
        terminal.close()
    runner.stop(state, timeout=0)


@pytest.mark.django_db
def test_a_staff_uploaded_iso_boots_from_the_cdrom_whatever_its_file_is_called(
    settings, tmp_path, client, staff_user, owner, django_capture_on_commit_callbacks
):
    """The stored, validated format decides, not the name: an ISO uploaded as installer.img is
    still a CD-ROM (booted as a raw disk it would find no boot sector)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "upload-tmp").mkdir()
    settings.LAB_RUNNERS = {
        **settings.LAB_RUNNERS,
        "qemu": {"BACKEND": "runners.qemu.QemuRunner",
                 "OPTIONS": {"root": str(tmp_path / "vms"), "accel": "tcg", "run_as": "", "powerdown_timeout": 0}},
    }
    settings.LAB_START_TIMEOUT_SECONDS = BOOT_TIMEOUT
    reset_cache()
    iso = build_boot_iso(tmp_path / "installer.img", message=b"BOOTED FROM THE CDROM\r\n")
    client.force_login(staff_user)
    with open(iso, "rb") as fh:
        response = client.post("/admin/labs/image/add/", {
            "name": "installer", "kind": "vm", "active": "on", "description": "", "reference": "",
            "disk_format": "iso", "file": fh})
    assert response.status_code == 302, response.content.decode()[:2000]
    image = Image.objects.get(name="installer")
    assert (image.disk_format, Path(image.file.path).suffix) == ("iso", ".img")
    lab = Lab.objects.create(slug="installer-lab", title="Install", image=image, runner="qemu", memory_mb=128,
                             network_mode="none", consoles=["vnc", "terminal"], published=True, disk_mb=64)
    runner = get_runner("qemu")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        state = session.runner_state
        argv = [part.decode() for part in Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")]
        assert f"file={image.file.path},format=raw,media=cdrom,readonly=on,if=ide,index=2" in argv
        terminal = runner.open_terminal(state)
        try:
            console_until(terminal, b"BOOTED FROM THE CDROM", timeout=BOOT_TIMEOUT)
        finally:
            terminal.close()
        with django_capture_on_commit_callbacks(execute=True):
            actions.stop_session(session)
        assert gone(state["pid"])
    finally:
        for env in runner.list_managed():
            runner.remove_managed(env)
        reset_cache()


def test_a_disk_whose_name_ends_in_iso_boots_as_the_disk_its_format_says(make_runner, vm_image, tmp_path):
    runner = make_runner()
    disk = tmp_path / "not-a-cd.iso"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(vm_image.disk), str(disk)], check=True)
    state = runner.start(vm_spec(disk, disk_format="raw"), timeout=BOOT_TIMEOUT).state
    argv = [part.decode() for part in Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")]
    assert not any("media=cdrom" in arg for arg in argv)
    assert "-boot" not in argv
    info = subprocess.run(["qemu-img", "info", "-U", state["overlay"]], capture_output=True, text=True).stdout
    assert f"backing file: {disk}" in info
    assert "backing file format: raw" in info
    runner.stop(state, timeout=0)


def test_a_memory_snapshot_starts_a_new_session_where_the_old_one_was(make_runner, vm_image, tmp_path):
    runner = make_runner()
    source = runner.start(vm_spec(vm_image.disk), timeout=BOOT_TIMEOUT).state
    shell(runner, source, b"REMEMBERED=still-in-memory; echo S''ET", b"SET")
    dest = tmp_path / "snapshots" / "snap.qcow2"

    size = runner.snapshot(source, str(dest), include_memory=True)

    written = [dest, Path(f"{dest}.state"), Path(f"{dest}.json")]
    assert size == sum(path.stat().st_size for path in written)
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(p.name for p in written)
    assert runner.poll(source) is PollStatus.RUNNING
    shell(runner, source, b"echo $((6*8))", b"48", timeout=60)  # the source VM carries on

    restored = runner.start(vm_spec(dest), timeout=BOOT_TIMEOUT).state
    info = subprocess.run(["qemu-img", "info", "-U", restored["overlay"]], capture_output=True, text=True).stdout
    assert f"backing file: {dest}" in info
    # A shell variable survives only if the memory was restored (a fresh boot has none).
    shell(runner, restored, b"echo got-$REMEMBERED", b"got-still-in-memory", timeout=60)
    runner.stop(restored, timeout=0)
    runner.stop(source, timeout=0)
    assert all(path.exists() for path in written)  # snapshots outlive the sessions


def test_a_disk_snapshot_of_a_powered_off_vm_cold_boots_with_its_changes(make_runner, vm_image, tmp_path):
    runner = make_runner()
    source = runner.start(vm_spec(vm_image.disk), timeout=BOOT_TIMEOUT).state
    shell(runner, source, b"echo changed-by-guest | dd of=/dev/vda bs=512 seek=8 conv=notrunc,fsync; echo W''ROTE",
          b"WROTE")
    terminal = runner.open_terminal(source)
    try:
        terminal.write(b"poweroff -f\n")
        deadline = time.monotonic() + 60
        while terminal.read(4096) and time.monotonic() < deadline:
            pass  # the console closes when QEMU exits
    finally:
        terminal.close()
    deadline = time.monotonic() + 10
    while not gone(source["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(source["pid"])
    assert runner.poll(source) is PollStatus.STOPPED  # the disk is still there until stop
    dest = tmp_path / "disk-only.qcow2"
    with pytest.raises(RunnerError) as refused:
        runner.snapshot(source, str(dest), include_memory=True)
    assert refused.value.permanent
    assert not dest.exists()

    size = runner.snapshot(source, str(dest), include_memory=False)

    assert size == dest.stat().st_size + Path(f"{dest}.json").stat().st_size
    assert not Path(f"{dest}.state").exists()
    runner.stop(source)
    booted = runner.start(vm_spec(dest), timeout=BOOT_TIMEOUT).state
    shell(runner, booted, b"dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null | head -c 16 | tr a-z A-Z; echo",
          b"CHANGED-BY-GUEST")
    runner.stop(booted, timeout=0)


def test_reconcile_kills_an_orphaned_vm_and_keeps_a_live_sessions_vm(settings, tmp_path, vm_image, owner,
                                                                     django_capture_on_commit_callbacks):
    settings.DATA_DIR = tmp_path
    settings.LAB_RUNNERS = {
        **settings.LAB_RUNNERS,
        "qemu": {"BACKEND": "runners.qemu.QemuRunner",
                 "OPTIONS": {"root": str(tmp_path / "vms"), "accel": "tcg", "run_as": ""}},
        # reconcile() visits every runner: keep the Docker one off other installs' containers.
        "docker": {"BACKEND": "runners.docker.DockerRunner",
                   "OPTIONS": {"instance": f"labst{uuid.uuid4().hex[:6]}"}},
    }
    settings.LAB_START_TIMEOUT_SECONDS = BOOT_TIMEOUT
    reset_cache()
    runner = get_runner("qemu")
    try:
        image = Image.objects.create(name="test-vm", kind=Image.Kind.VM, reference=str(vm_image.disk),
                                     disk_format=Image.DiskFormat.QCOW2)
        lab = Lab.objects.create(slug="vm-lab", title="A VM", image=image, runner="qemu", memory_mb=128,
                                 network_mode="none", consoles=["vnc", "terminal"], published=True)
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        assert session.endpoints["vnc"]["unix"].endswith("/vnc.sock")
        orphan = runner.start(vm_spec(vm_image.disk), timeout=BOOT_TIMEOUT).state  # no session row

        report = reconcile()

        assert report.orphans_removed == 1, report.errors
        assert gone(orphan["pid"])
        assert not Path(orphan["dir"]).exists()
        assert runner.poll(session.runner_state) is PollStatus.RUNNING
        with django_capture_on_commit_callbacks(execute=True):
            actions.stop_session(session)
        session.refresh_from_db()
        assert session.state == State.STOPPED
        assert gone(session.runner_state["pid"])
        assert runner.list_managed() == []
    finally:
        for env in runner.list_managed():
            runner.remove_managed(env)
        reset_cache()


def test_qemu_drops_to_the_run_as_user_and_still_saves_memory(make_runner, vm_image, tmp_path):
    runner = make_runner(run_as="nobody")
    state = runner.start(vm_spec(vm_image.disk), timeout=BOOT_TIMEOUT).state
    status = Path(f"/proc/{state['pid']}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(pwd.getpwnam("nobody").pw_uid)] * 4
    # Saving memory makes QEMU reopen its disk as that user: the overlay must be theirs.
    size = runner.snapshot(state, str(tmp_path / "as-nobody.qcow2"), include_memory=True)
    assert size > 0
    with QMPClient.connect(str(Path(state["dir"]) / "qmp.sock"), timeout=10) as qmp:
        assert qmp.execute("query-status")["status"] == "running"
    runner.stop(state, timeout=0)
    assert gone(state["pid"])


def test_a_disk_image_with_a_backing_file_is_refused(make_runner, tmp_path):
    runner = make_runner()
    sneaky = tmp_path / "sneaky.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(sneaky)],
                   check=True)
    spec = vm_spec(sneaky)
    with pytest.raises(RunnerError) as refused:
        runner.start(spec, timeout=30)
    assert refused.value.permanent
    assert "backing file" in str(refused.value)
    assert runner.list_managed() == []


def test_a_failed_start_reports_qemus_message_and_leaves_nothing(make_runner, vm_image):
    runner = make_runner(accel="no-such-accelerator")
    with pytest.raises(RunnerError) as failed:
        runner.start(vm_spec(vm_image.disk), timeout=30)
    assert "no-such-accelerator" in str(failed.value)
    assert runner.list_managed() == []


def test_bridge_mode_needs_qemu_to_run_as_a_user_of_its_own(make_runner, vm_image):
    runner = make_runner(run_as="")
    with pytest.raises(RunnerError) as refused:
        runner.start(vm_spec(vm_image.disk, network_mode="bridge"), timeout=30)
    assert refused.value.permanent
    assert "labs-qemu" in str(refused.value)
    assert runner.list_managed() == []


def _serve(body: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(scope="module")
def host_service():
    """An HTTP server on the host's loopback, like PostgreSQL and Redis: (slirp address, port)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _serve(b"loopback-service-reached"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "10.0.2.2", server.server_address[1]  # slirp's 10.0.2.2 is the host's 127.0.0.1
    server.shutdown()


@pytest.fixture
def host_guard_rules():
    """The iptables rules bridge mode adds for QEMU's user (nobody here); removed afterwards if the
    test added them."""
    rules = firewall.process_owner_rules(pwd.getpwnam("nobody").pw_uid)
    added = [rule for rule in rules if not firewall.rule_present(rule)]
    firewall.forget()
    yield rules
    for rule in added:
        subprocess.run(["iptables", "-w", "10", "-D", *rule], capture_output=True)
    firewall.forget()


@pytest.fixture(scope="module")
def remote():
    """Machines elsewhere on the network (tests/netns.py): the internet, a private network, metadata."""
    with remote_hosts() as hosts:
        yield hosts


# mode: (QEMU's user, the -nic QEMU gets, reaches the host's loopback, reaches a server outside the host,
#        reaches the cloud metadata address and a private network)
NETWORK_MODES = {
    "none": ("", "none", False, False, False),
    "isolated": ("", "user,model=virtio-net-pci,ipv6=off,restrict=on", False, False, False),
    # NAT to the outside, fenced off the host's own services, link-local addresses and private
    # networks (guard_host needs a user of QEMU's own).
    "bridge": ("nobody", "user,model=virtio-net-pci,ipv6=off", False, True, False),
    # staff's trusted labs: NAT and no fence (QEMU runs as the platform here), so everything answers
    # (the control for the others).
    "unrestricted": ("", "user,model=virtio-net-pci,ipv6=off", True, True, True),
}


@pytest.mark.parametrize("mode", list(NETWORK_MODES))
def test_each_network_mode_gives_the_guest_the_network_the_lab_asks_for(
    mode, make_runner, vm_image, host_service, host_guard_rules, remote
):
    run_as, nic, reaches_host, reaches_outside, reaches_fenced = NETWORK_MODES[mode]
    runner = make_runner(run_as=run_as)
    state = runner.start(vm_spec(vm_image.disk, network_mode=mode), timeout=BOOT_TIMEOUT).state
    argv = [part.decode() for part in Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")]
    assert argv[argv.index("-nic") + 1] == nic

    # The guest's own view of its network interfaces.
    listing = shell(runner, state, b"echo NI''CS=$(ls /sys/class/net | tr '\\n' ,) E''ND", b" END")
    found = re.search(rb"NICS=([a-z0-9,]*) END", listing)
    assert found, listing[-400:]
    assert found[1].decode().strip(",").split(",") == (["lo"] if mode == "none" else ["eth0", "lo"])
    if mode == "none":
        runner.stop(state, timeout=0)
        return

    # Static addressing (the test VM runs no DHCP client), then one HTTP GET to each server.
    (host_addr, host_port), (outside_addr, outside_port) = host_service, (remote.public, remote.port)
    get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {} {} 2>&1 | tail -c 40; echo ' <-{}'"
    fetch = ("ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0 2>/dev/null; "
             "ip route add default via 10.0.2.2 2>/dev/null; "
             + get.format(host_addr, host_port, "host") + "; "
             + get.format(outside_addr, outside_port, "outside") + "; "
             + get.format(remote.metadata, remote.port, "metadata") + "; "
             + get.format(remote.private, remote.port, "private") + "; echo ' E''ND'")
    if mode == "bridge":
        assert all(firewall.rule_present(rule) for rule in host_guard_rules)
    output = shell(runner, state, fetch.encode(), b" END")
    assert (b"loopback-service-reached" in output) is reaches_host, output[-600:]
    assert (f"reached {remote.public}".encode() in output) is reaches_outside, output[-600:]
    assert (f"reached {remote.metadata}".encode() in output) is reaches_fenced, output[-600:]
    assert (f"reached {remote.private}".encode() in output) is reaches_fenced, output[-600:]
    runner.stop(state, timeout=0)
    assert gone(state["pid"])


def test_the_labs_cpus_and_memory_reach_qemu_and_the_guest(make_runner, vm_image):
    runner = make_runner()
    state = runner.start(vm_spec(vm_image.disk, cpu=1.5, memory_mb=200), timeout=BOOT_TIMEOUT).state
    argv = [part.decode() for part in Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")]
    assert argv[argv.index("-smp") + 1] == "2"  # whole vCPUs: 1.5 CPUs round up
    assert argv[argv.index("-m") + 1] == "200"

    output = shell(runner, state, b"echo CPUS=$(nproc) MEM=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo) E''ND",
                   b" END")
    found = re.search(rb"CPUS=(\d+) MEM=(\d+) END", output)
    assert found, output[-400:]
    assert int(found[1]) == 2
    # MemTotal is the RAM less what the firmware and the kernel image keep: most of 200 MiB, never more.
    assert 0.8 * 200 * 1024 < int(found[2]) <= 200 * 1024
    assert runner.stats(state).memory_limit_bytes == 200 << 20
    runner.stop(state, timeout=0)


def test_commands_files_and_ports_are_refused_permanently(make_runner, vm_image):
    """Even with the VM up: there is no guest agent and no port forwarding, so retrying cannot help,
    and refusing leaves the running VM alone."""
    runner = make_runner()
    state = runner.start(vm_spec(vm_image.disk), timeout=BOOT_TIMEOUT).state
    calls = [
        ("guest agent", lambda: runner.exec(state, ["true"])),
        ("no file access", lambda: runner.list_files(state)),
        ("no file access", lambda: runner.read_file(state, "a")),
        ("no file access", lambda: runner.write_file(state, "a", b"")),
        ("cannot be reached", lambda: runner.endpoint(state, 80)),
    ]
    for reason, call in calls:
        with pytest.raises(RunnerError) as refused:
            call()
        assert refused.value.permanent
        assert reason in str(refused.value)
    assert runner.poll(state) is PollStatus.RUNNING
    assert sorted(p.name for p in Path(state["dir"]).iterdir() if not p.name.endswith(".lock")) == [
        "overlay.qcow2", "qemu.log", "qemu.pid", "qmp.sock", "serial.log", "serial.sock", "session.json", "vnc.sock",
    ]  # nothing written for the refused calls (serial.log is the guest's console, for staff's output panel)
    runner.stop(state, timeout=0)
