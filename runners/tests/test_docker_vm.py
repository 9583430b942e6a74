"""VM labs through the Docker runner, on the real engine and real QEMU (TCG) inside labs/qemu.

The test VM (tests/vm_image.py) is a Debian kernel with a busybox initramfs: a root shell on
ttyS0 whose prompt is "labvm# ", acpid powering off on the ACPI power button. A missing engine,
runner image or QEMU fails these tests; they never skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import docker
import pytest

from runners import docker_vm, get_runner, reset_cache
from runners.base import PollStatus, RunnerError
from runners.docker import LABEL_MANAGED, LABEL_SESSION
from runners.docker_vm import DEFAULT_VM_IMAGE, DockerVmRunner
from sessions_app import actions
from sessions_app.models import State
from tests.vm_image import build_boot_iso, console_until, serial_shell, sha256, vm_lab, vm_spec

pytestmark = pytest.mark.docker
BOOT_TIMEOUT = 240  # a loaded 2-core CI machine boots the test VM in 3-30 s under TCG
INSTANCE = os.environ.get("LAB_TEST_DOCKER_INSTANCE", "labstest")


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # a missing engine must fail the run, not skip it
        pytest.fail(f"the Docker engine is required for these tests: {exc}")
    try:
        client.images.get(DEFAULT_VM_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{DEFAULT_VM_IMAGE} is missing: run deploy/scripts/build-images.sh")
    return client


@pytest.fixture
def runner(engine, settings, tmp_path):
    """A docker-vm runner on a label of its own; whatever a test leaves is removed afterwards."""
    settings.DATA_DIR = tmp_path
    settings.LAB_QEMU_ACCEL = "tcg"  # KVM guests hang on these machines
    made = DockerVmRunner("docker-vm-test", {"instance": f"{INSTANCE}vm{uuid.uuid4().hex[:6]}"})
    yield made
    for env in made.list_managed():
        made.remove_managed(env)


def shell(runner, state, command: bytes, expect: bytes, timeout: float = BOOT_TIMEOUT) -> bytes:
    return serial_shell(runner, state, command, expect, timeout)


def qemu_argv(engine, state) -> list[str]:
    """QEMU's command line, read inside its container."""
    container = engine.containers.get(state["container_id"])
    code, output = container.exec_run(["sh", "-c", "cat /proc/$(pgrep -o qemu-system)/cmdline"])
    assert code == 0, output
    return output.decode().split("\0")[:-1]


def leftovers(engine, instance: str, session_id: str) -> list[str]:
    label = {"label": [f"{LABEL_MANAGED}={instance}", f"{LABEL_SESSION}={session_id}"]}
    return ([c.name for c in engine.containers.list(all=True, filters=label)]
            + [n.name for n in engine.networks.list(filters=label)]
            + [v.name for v in engine.volumes.list(filters=label)])


def rfb_greeting(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10) as vnc:
        return vnc.recv(12)


def test_a_vm_boots_in_a_runner_container_and_stop_leaves_nothing(engine, runner, vm_image, monkeypatch):
    base_before = sha256(vm_image.disk)
    spec = vm_spec(vm_image.disk, cpu=1.5, memory_mb=160)
    steps: list[str] = []
    result = runner.start(spec, progress=steps.append, timeout=BOOT_TIMEOUT)
    state = result.state
    assert steps == ["Creating VM container", "Starting VM", "VM running"]
    assert state["kind"] == "vm"
    assert runner.poll(state) is PollStatus.RUNNING

    # QMP answers, inside the container only.
    assert runner.vm.qmp(state, "query-status")["status"] == "running"

    # The lab's CPUs and memory reach QEMU; the container holds the guest plus QEMU itself.
    argv = qemu_argv(engine, state)
    assert argv[argv.index("-smp") + 1] == "2"  # 1.5 CPUs: two vCPUs, capped at 1.5 by the container
    assert argv[argv.index("-m") + 1] == "160"
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    assert argv[argv.index("-nic") + 1] == "none"  # network_mode "none": the guest has no NIC
    attrs = engine.containers.get(state["container_id"]).attrs
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == (160 + 256) << 20
    assert host["CapDrop"] == ["ALL"]
    assert not host["Privileged"]
    assert attrs["Config"]["User"] == "learner"

    # VNC: on the session's own network, from the platform's side; nothing published on the host.
    vnc = result.endpoints["vnc"]
    assert vnc["port"] == 5900
    assert rfb_greeting(vnc["host"], vnc["port"]) == b"RFB 003.008\n"
    assert not host.get("PortBindings")
    assert not any(attrs["NetworkSettings"]["Ports"].values())
    assert list(attrs["NetworkSettings"]["Networks"]) == [runner.container_name(spec.session_id)]
    network = engine.networks.get(runner.container_name(spec.session_id))
    assert network.attrs["Internal"]  # "none" labs still get a network for VNC, with no way out

    # The serial console is the terminal; the guest writes its disk, the base stays as it was.
    assert b"42" in shell(runner, state, b"echo $((6*7))", b"42")
    shell(runner, state, b"echo written-by-guest | dd of=/dev/vda bs=512 seek=8 conv=notrunc,fsync; echo W''ROTE",
          b"WROTE")
    assert b"written-by-guest" in shell(runner, state, b"dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null; echo",
                                        b"written-by-guest", timeout=60)
    assert sha256(vm_image.disk) == base_before

    # Staff follow the serial console: the guest's boot and what the terminal typed, by byte offset.
    boot, cursor = runner.output(state)
    assert b"Linux version" in boot or b"labvm# " in boot, boot[-400:]
    assert b"WROTE" in boot and cursor is not None
    assert runner.output(state, cursor) == (b"", cursor)
    shell(runner, state, b"echo MARK-$((6*7))", b"MARK-42", timeout=60)
    later, at = b"", cursor
    deadline = time.monotonic() + 10  # QEMU logs what the guest printed just after serving it to the terminal
    while b"MARK-42" not in later and time.monotonic() < deadline:
        piece, at = runner.output(state, at)
        later += piece
    assert b"MARK-42" in later and b"WROTE" not in later

    # A second terminal takes the console over from one still open (QEMU serves one client);
    # without socat in the image, python3 bridges it.
    first = runner.open_terminal(state)
    try:
        monkeypatch.setattr(docker_vm, "SERIAL_ATTACH", docker_vm.SERIAL_ATTACH.replace("command -v socat", "false"))
        assert b"taken-over" in shell(runner, state, b"echo taken-$((0))ver | tr 0 o", b"taken-over", timeout=60)
    finally:
        first.close()
        monkeypatch.undo()

    # A VM has no guest agent: commands, files and ports are refused, not run in the QEMU container.
    for call in (lambda: runner.exec(state, ["true"]), lambda: runner.list_files(state),
                 lambda: runner.read_file(state, "a"), lambda: runner.endpoint(state, 80)):
        with pytest.raises(RunnerError) as refused:
            call()
        assert refused.value.permanent

    # A repeated start adopts the running VM.
    steps.clear()
    again = runner.start(spec, progress=steps.append, timeout=BOOT_TIMEOUT)
    assert again.state == state
    assert steps == ["Creating VM container", "Found the running VM; adopting it", "VM running"]

    began = time.monotonic()
    runner.stop(state, timeout=60)
    assert time.monotonic() - began < 30  # acpid powered the guest off; no need to wait the full grace
    assert leftovers(engine, runner.instance, spec.session_id) == []
    assert runner.poll(state) is PollStatus.MISSING
    assert sha256(vm_image.disk) == base_before
    runner.stop(state)  # idempotent


def test_an_iso_that_ignores_the_power_button_boots_and_is_stopped_anyway(engine, runner, tmp_path):
    runner.options["vm_powerdown_timeout"] = 1  # the ISO's boot loop has no ACPI at all
    iso = build_boot_iso(tmp_path / "hello.iso", message=b"HELLO FROM THE ISO\r\n")
    spec = vm_spec(iso, image_kind="iso", network_mode="isolated", disk_mb=300)
    state = runner.start(spec, timeout=BOOT_TIMEOUT).state
    argv = qemu_argv(engine, state)
    assert argv[argv.index("-boot") + 1] == "order=cd,once=d"
    assert argv[argv.index("-nic") + 1].endswith("restrict=on")  # isolated: a NIC that reaches nothing
    info = engine.containers.get(state["container_id"]).exec_run(["qemu-img", "info", "-U",
                                                                  "/var/lib/labs-vm/overlay.qcow2"])
    assert b"virtual size: 300 MiB" in info.output
    terminal = runner.open_terminal(state)
    try:
        console_until(terminal, b"HELLO FROM THE ISO", timeout=BOOT_TIMEOUT)
    finally:
        terminal.close()
    began = time.monotonic()
    runner.stop(state, timeout=30)
    assert 1 <= time.monotonic() - began < 15
    assert leftovers(engine, runner.instance, spec.session_id) == []


def test_unusable_images_fail_with_a_reason_and_leave_nothing(engine, runner, vm_image, tmp_path):
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(vm_image.disk), "-F", "qcow2",
                    str(backed)], check=True)
    spec = vm_spec(backed)
    with pytest.raises(RunnerError, match="backing file") as refused:
        runner.start(spec, timeout=BOOT_TIMEOUT)
    assert refused.value.permanent
    assert leftovers(engine, runner.instance, spec.session_id) == []

    snapshot = tmp_path / "snap.qcow2"
    snapshot.write_bytes(vm_image.disk.read_bytes())
    snapshot.with_name("snap.qcow2.json").write_text("{}")
    with pytest.raises(RunnerError, match="qemu runner"):
        runner.start(vm_spec(snapshot), timeout=BOOT_TIMEOUT)

    runner.options["vm_image"] = "labs/no-such-qemu:latest"
    spec = vm_spec(vm_image.disk)
    with pytest.raises(RunnerError, match=r"build-images\.sh") as missing:
        runner.start(spec, timeout=BOOT_TIMEOUT)
    assert missing.value.permanent
    assert leftovers(engine, runner.instance, spec.session_id) == []


def test_a_vm_lab_on_the_docker_runner_runs_as_a_session(engine, settings, vm_image, owner,
                                                          django_capture_on_commit_callbacks):
    settings.LAB_QEMU_ACCEL = "auto"  # the shipped default: probes KVM, falls back to TCG where it hangs
    settings.LAB_START_TIMEOUT_SECONDS = BOOT_TIMEOUT
    reset_cache()
    runner = get_runner("docker-vm")  # where the Docker runner sends its VM labs
    lab = vm_lab(vm_image, "docker")
    session = None
    try:
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        assert session.runner_state["kind"] == "vm"
        vnc = session.endpoints["vnc"]
        assert rfb_greeting(vnc["host"], vnc["port"]) == b"RFB 003.008\n"
        argv = qemu_argv(engine, session.runner_state)
        assert argv[argv.index("-nic") + 1] == "user,model=virtio-net-pci,ipv6=off"  # bridge: NAT
        assert b"42" in shell(runner, session.runner_state, b"echo $((6*7))", b"42")
        with django_capture_on_commit_callbacks(execute=True):
            actions.stop_session(session)
        session.refresh_from_db()
        assert session.state == State.STOPPED, session.error
        assert leftovers(engine, runner.instance, str(session.pk)) == []
    finally:
        if session is not None and session.runner_state:
            runner.stop(session.runner_state, timeout=0)
        reset_cache()
