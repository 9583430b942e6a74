"""VM snapshots on real QEMU (TCG): take, boot from, delete, with exact quota counters."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from accounts.models import UserQuota
from audit.models import AuditEntry
from labs.models import Lab
from labs.vm_images import register_file
from runners import get_runner, reset_cache
from runners.base import Runner
from sessions_app import actions
from sessions_app.models import Session, State
from tests.vm_image import console_until, vm_image  # noqa: F401 - vm_image is a fixture
from vms import actions as vm_actions
from vms import snapshots
from vms.models import Snapshot

pytestmark = pytest.mark.django_db

PROMPT = b"labvm# "


@pytest.fixture
def qemu_runner(settings, tmp_path):
    """The real QEMU runner under TCG; every VM it made is removed after the test."""
    root = Path(tempfile.mkdtemp(prefix="lvm-"))  # short: QEMU's unix socket paths must fit in 108 bytes
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "qemu": {
        "BACKEND": "runners.qemu.QemuRunner",
        "OPTIONS": {"root": str(root), "accel": "tcg", "powerdown_timeout": 1},
    }}
    settings.LAB_SNAPSHOT_DIR = tmp_path / "snapshots"
    settings.LAB_START_TIMEOUT_SECONDS = 120
    reset_cache()
    runner = get_runner("qemu")
    yield runner
    for env in runner.list_managed():
        runner.remove_managed(env)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def vm_lab(db, qemu_runner, vm_image, settings, tmp_path):  # noqa: F811 - the fixture
    """A VM lab whose base image came in the way staff bring one: `register_image` of the test VM."""
    settings.LAB_VM_IMAGE_DIR = tmp_path / "vm-images"
    disk = register_file("test-vm", vm_image.disk).image
    return Lab.objects.create(slug="vm-lab", title="VM lab", image=disk, runner="qemu", published=True,
                              memory_mb=128, network_mode="none", consoles=["terminal"])


def start_vm_session(user, lab, capture) -> Session:
    """Start a session of `lab`; its VM is running (the guest may still be booting)."""
    with capture(execute=True):
        session = actions.start_session(user, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    return session


def serial_run(runner: Runner, session: Session, command: str, expect: str | None = "", timeout: float = 120) -> str:
    """Run `command` in the guest's root shell on ttyS0 and return what it printed.

    With expect=None, only send it (for commands after which the shell does not come back).
    """
    session.refresh_from_db()
    terminal = runner.open_terminal(session.runner_state)
    try:
        console_until(terminal, PROMPT, send=b"\n", timeout=timeout)  # the guest has booted
        if expect is None:
            terminal.write(command.encode() + b"\n")
            time.sleep(0.5)
            return ""
        # The marker is split in the typed line, so only the command's own output contains it whole.
        terminal.write(command.encode() + b"; echo __DO''NE__\n")
        return console_until(terminal, b"__DONE__", timeout=timeout).decode("utf-8", "replace")
    finally:
        terminal.close()


def files_total(snapshot: Snapshot) -> int:
    return sum(p.stat().st_size for p in snapshots.snapshot_files(snapshot))


def stored(user) -> int:
    return UserQuota.objects.get(user=user).snapshot_stored_bytes


def stop(session: Session, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    session.refresh_from_db()
    assert session.is_ended


def test_a_running_vm_is_saved_with_its_memory_booted_again_and_deleted(
    owner, owner_client, vm_lab, django_capture_on_commit_callbacks
):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    runner = get_runner(session.runner_name)
    written = serial_run(runner, session, "echo labvm-marker-$((40+1)) > /tmp/marker; cat /tmp/marker")
    assert "labvm-marker-41" in written

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/sessions/snapshots/create/{session.pk}/", {"name": "checkpoint"},
                                     HTTP_HX_REQUEST="true")

    snapshot = Snapshot.objects.get(owner=owner)
    assert response.status_code == 200
    assert "checkpoint" in response.content.decode()
    assert (snapshot.status, snapshot.error, snapshot.includes_memory) == ("ready", "", True), snapshot.error
    assert sorted(p.name.removeprefix(str(snapshot.pk)) for p in snapshots.snapshot_files(snapshot)) == [
        ".qcow2", ".qcow2.json", ".qcow2.state"
    ]
    assert snapshot.reserved_bytes == 0
    assert snapshot.size_bytes == files_total(snapshot) > 0
    assert stored(owner) == snapshot.size_bytes
    (audited,) = AuditEntry.objects.filter(action="snapshot.create")
    assert (audited.actor, audited.address, audited.target_id) == (owner, "127.0.0.1", str(snapshot.pk))

    stop(session, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/sessions/snapshots/{snapshot.pk}/boot/")
    booted = Session.objects.get(boot_snapshot=snapshot)
    assert response["Location"] == booted.get_absolute_url()
    assert booted.state == State.RUNNING, booted.error
    # The memory came back: the file written to the guest's RAM-backed /tmp is still there.
    assert "labvm-marker-41" in serial_run(runner, booted, "cat /tmp/marker")

    refused = owner_client.post(f"/sessions/snapshots/{snapshot.pk}/delete/", follow=True)
    assert "stop it first" in refused.content.decode()
    assert stored(owner) == snapshot.size_bytes

    stop(booted, django_capture_on_commit_callbacks)
    files = snapshots.snapshot_files(snapshot)
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(f"/sessions/snapshots/{snapshot.pk}/delete/")
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert not any(p.exists() for p in files)
    assert stored(owner) == 0


def test_the_counter_is_the_sum_of_the_snapshot_files_across_snapshots(
    owner, vm_lab, django_capture_on_commit_callbacks
):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    serial_run(get_runner(session.runner_name), session, "dd if=/dev/urandom of=/dev/vda bs=64k count=16 seek=8")

    with django_capture_on_commit_callbacks(execute=True):
        first = snapshots.create_snapshot(owner, session, "first")
        second = snapshots.create_snapshot(owner, session, "second")

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("ready", "ready"), (first.error, second.error)
    assert stored(owner) == files_total(first) + files_total(second) == first.size_bytes + second.size_bytes


def test_a_snapshot_whose_vm_vanishes_before_it_is_taken_fails_and_leaves_the_counter_unchanged(
    owner, vm_lab, django_capture_on_commit_callbacks
):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    before = stored(owner)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        snapshot = snapshots.create_snapshot(owner, session, "doomed")
    assert stored(owner) == before + snapshot.reserved_bytes > before
    get_runner(session.runner_name).stop(session.runner_state)  # the VM goes away underneath
    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:  # now the job runs
            callback()

    snapshot.refresh_from_db()
    assert snapshot.status == "failed"
    assert "disk no longer exists" in snapshot.error
    assert (snapshot.size_bytes, snapshot.reserved_bytes) == (0, 0)
    assert snapshots.snapshot_files(snapshot) == []
    assert stored(owner) == before


def test_a_stopped_session_whose_disk_was_removed_is_refused_clearly(
    owner, vm_lab, django_capture_on_commit_callbacks
):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    stop(session, django_capture_on_commit_callbacks)

    with pytest.raises(snapshots.SnapshotError, match="disk was removed when it stopped"):
        snapshots.create_snapshot(owner, session)

    assert not Snapshot.objects.exists()
    assert stored(owner) == 0


def test_a_vm_whose_guest_powered_off_is_saved_disk_only(owner, vm_lab, django_capture_on_commit_callbacks):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    runner = get_runner(session.runner_name)
    serial_run(runner, session, "poweroff -f", expect=None)
    deadline = time.monotonic() + 30
    while runner.poll(session.runner_state).value != "stopped" and time.monotonic() < deadline:
        time.sleep(0.2)

    with django_capture_on_commit_callbacks(execute=True):
        snapshot = snapshots.create_snapshot(owner, session, "after power-off")

    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.includes_memory) == ("ready", False), snapshot.error
    assert sorted(p.name.removeprefix(str(snapshot.pk)) for p in snapshots.snapshot_files(snapshot)) == [
        ".qcow2", ".qcow2.json"
    ]
    assert stored(owner) == snapshot.size_bytes == files_total(snapshot)


def test_a_snapshot_over_the_quota_is_refused_before_anything_is_written(
    owner, vm_lab, django_capture_on_commit_callbacks
):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    UserQuota.objects.filter(user=owner).update(snapshot_capacity_bytes=32 * 1024 * 1024)

    with pytest.raises(snapshots.SnapshotQuotaExceeded, match="Snapshot quota exceeded"):
        snapshots.create_snapshot(owner, session, "too big")

    assert not Snapshot.objects.exists()
    assert stored(owner) == 0


def test_a_new_snapshot_beyond_the_per_user_limit_replaces_the_oldest(
    owner, vm_lab, settings, django_capture_on_commit_callbacks
):
    settings.LAB_SNAPSHOT_KEEP_PER_USER = 2
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        names = [snapshots.create_snapshot(owner, session, name).name for name in ("one", "two", "three")]

    assert names == ["one", "two", "three"]
    kept = list(Snapshot.objects.filter(owner=owner).order_by("created_at"))
    assert [s.name for s in kept] == ["two", "three"]
    assert stored(owner) == sum(files_total(s) for s in kept)
    assert sorted(p.name.split(".")[0] for p in snapshots.user_dir(owner.pk).iterdir()) == sorted(
        [str(s.pk) for s in kept] * 3
    )


def test_a_snapshot_that_another_is_built_on_cannot_be_deleted_first(
    owner, owner_client, vm_lab, django_capture_on_commit_callbacks
):
    session = start_vm_session(owner, vm_lab, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        parent = snapshots.create_snapshot(owner, session, "parent")
    stop(session, django_capture_on_commit_callbacks)
    parent.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        child_session = vm_actions.start_session_from_snapshot(owner, parent)
    child_session.refresh_from_db()
    assert child_session.state == State.RUNNING, child_session.error
    with django_capture_on_commit_callbacks(execute=True):
        child = snapshots.create_snapshot(owner, child_session, "child")
    stop(child_session, django_capture_on_commit_callbacks)

    with pytest.raises(snapshots.SnapshotError, match="“child” was taken from a session booted from this one"):
        snapshots.delete_snapshot(owner, parent)

    with django_capture_on_commit_callbacks(execute=True):
        snapshots.delete_snapshot(owner, child)
        snapshots.delete_snapshot(owner, parent)
    assert not Snapshot.objects.exists()
    assert stored(owner) == 0
