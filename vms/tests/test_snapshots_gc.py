"""`gc_snapshots`: orphans both ways, expiry, the per-user limit and the quota counters, idempotently."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from accounts.models import UserQuota
from sessions_app.models import Session, State
from vms import snapshots
from vms.models import Snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def snapshot_dir(settings, tmp_path):
    settings.LAB_SNAPSHOT_DIR = tmp_path / "snapshots"
    settings.LAB_SNAPSHOT_KEEP_PER_USER = 5
    settings.LAB_SNAPSHOT_MAX_AGE_DAYS = 30
    return settings.LAB_SNAPSHOT_DIR


def make_snapshot(owner, lab, size=4096, age=timedelta(0), status=Snapshot.Status.READY, with_file=True,
                  memory_bytes=0):
    """A snapshot as the service leaves it: files on disk, the row, and its bytes on the counter."""
    snapshot_id = uuid.uuid4()
    disk = snapshots.user_dir(owner.pk) / f"{snapshot_id}.qcow2"
    disk.parent.mkdir(parents=True, exist_ok=True)
    if with_file:
        disk.write_bytes(b"q" * size)
        if memory_bytes:
            (disk.parent / f"{snapshot_id}.qcow2.vmstate").write_bytes(b"m" * memory_bytes)
    held = size + memory_bytes
    snapshot = Snapshot.objects.create(
        id=snapshot_id, owner=owner, lab=lab, name=f"snap {snapshot_id.hex[:6]}", path=str(disk), status=status,
        size_bytes=held if status == Snapshot.Status.READY else 0,
        reserved_bytes=held if status == Snapshot.Status.CREATING else 0,
    )
    Snapshot.objects.filter(pk=snapshot.pk).update(created_at=timezone.now() - age)
    UserQuota.for_user(owner)
    if status != Snapshot.Status.FAILED:
        UserQuota.objects.filter(user=owner).update(snapshot_stored_bytes=F("snapshot_stored_bytes") + held)
    return snapshot


def stored(user) -> int:
    return UserQuota.objects.get(user=user).snapshot_stored_bytes


def gc(django_capture_on_commit_callbacks) -> snapshots.CollectionReport:
    with django_capture_on_commit_callbacks(execute=True):
        return snapshots.collect_garbage()


def test_a_row_whose_files_are_gone_is_dropped_and_its_bytes_released(owner, lab, django_capture_on_commit_callbacks):
    kept = make_snapshot(owner, lab, size=3000)
    lost = make_snapshot(owner, lab, size=5000, with_file=False)

    report = gc(django_capture_on_commit_callbacks)

    assert report.rows_without_files == 1
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [kept.pk]
    assert stored(owner) == 3000
    assert not Snapshot.objects.filter(pk=lost.pk).exists()


def test_files_without_a_row_are_removed_and_snapshot_files_are_kept(owner, lab, snapshot_dir,
                                                                      django_capture_on_commit_callbacks):
    kept = make_snapshot(owner, lab, size=3000, memory_bytes=2000)
    orphan_dir = snapshot_dir / str(owner.pk)
    orphan = orphan_dir / f"{uuid.uuid4()}.qcow2"
    orphan.write_bytes(b"x" * 100)
    orphan_state = orphan_dir / f"{orphan.stem}.qcow2.vmstate"
    orphan_state.write_bytes(b"x" * 100)
    stray = orphan_dir / "leftover.tmp"
    stray.write_bytes(b"x")
    elsewhere = snapshot_dir / "999999" / f"{kept.pk}.qcow2"  # another user's directory
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")

    report = gc(django_capture_on_commit_callbacks)

    assert report.files_without_rows == 4
    assert sorted(p.name for p in orphan_dir.iterdir()) == [f"{kept.pk}.qcow2", f"{kept.pk}.qcow2.vmstate"]
    assert not elsewhere.exists()
    assert stored(owner) == 5000


def test_expired_snapshots_are_deleted_with_their_files_and_bytes(owner, lab, django_capture_on_commit_callbacks):
    old = make_snapshot(owner, lab, size=7000, age=timedelta(days=31))
    fresh = make_snapshot(owner, lab, size=1000, age=timedelta(days=29))

    report = gc(django_capture_on_commit_callbacks)

    assert report.expired == 1
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert snapshots.snapshot_files(old) == []
    assert stored(owner) == 1000


def test_an_expired_snapshot_a_live_session_boots_from_is_kept(owner, lab, django_capture_on_commit_callbacks):
    old = make_snapshot(owner, lab, size=7000, age=timedelta(days=40))
    Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING, boot_snapshot=old)

    report = gc(django_capture_on_commit_callbacks)

    assert report.expired == 0
    assert Snapshot.objects.filter(pk=old.pk).exists()
    assert stored(owner) == 7000


def test_snapshots_beyond_the_per_user_limit_go_oldest_first(owner, other_learner, lab, settings,
                                                             django_capture_on_commit_callbacks):
    settings.LAB_SNAPSHOT_KEEP_PER_USER = 2
    oldest = make_snapshot(owner, lab, size=100, age=timedelta(days=3))
    middle = make_snapshot(owner, lab, size=200, age=timedelta(days=2))
    newest = make_snapshot(owner, lab, size=300, age=timedelta(days=1))
    others = make_snapshot(other_learner, lab, size=50, age=timedelta(days=5))

    report = gc(django_capture_on_commit_callbacks)

    assert report.over_limit == 1
    assert set(Snapshot.objects.values_list("pk", flat=True)) == {middle.pk, newest.pk, others.pk}
    assert not snapshots.snapshot_files(oldest)
    assert stored(owner) == 500
    assert stored(other_learner) == 50


def test_a_snapshot_stuck_creating_fails_and_releases_its_reservation(owner, lab, django_capture_on_commit_callbacks):
    stuck = make_snapshot(owner, lab, size=9000, status=Snapshot.Status.CREATING, age=timedelta(hours=2))
    running = make_snapshot(owner, lab, size=4000, status=Snapshot.Status.CREATING, age=timedelta(minutes=1))

    report = gc(django_capture_on_commit_callbacks)

    stuck.refresh_from_db()
    assert report.stale_failed == 1
    assert (stuck.status, stuck.reserved_bytes, stuck.size_bytes) == ("failed", 0, 0)
    assert snapshots.snapshot_files(stuck) == []
    assert Snapshot.objects.get(pk=running.pk).status == "creating"
    assert stored(owner) == 4000


def test_a_drifted_counter_is_set_back_to_what_the_rows_hold(owner, lab, django_capture_on_commit_callbacks):
    make_snapshot(owner, lab, size=3000)
    make_snapshot(owner, lab, size=1500, status=Snapshot.Status.CREATING)
    UserQuota.objects.filter(user=owner).update(snapshot_stored_bytes=123_456)

    report = gc(django_capture_on_commit_callbacks)

    assert stored(owner) == 4500
    assert report.counters_fixed == ["olivia: 123456 → 4500"]


def test_a_counter_left_without_any_snapshot_is_reset_to_zero(owner, django_capture_on_commit_callbacks):
    UserQuota.for_user(owner)
    UserQuota.objects.filter(user=owner).update(snapshot_stored_bytes=777)

    gc(django_capture_on_commit_callbacks)

    assert stored(owner) == 0


def test_a_second_collection_finds_nothing_to_do(owner, lab, snapshot_dir, django_capture_on_commit_callbacks):
    make_snapshot(owner, lab, size=3000)
    make_snapshot(owner, lab, size=5000, with_file=False)
    make_snapshot(owner, lab, size=5000, age=timedelta(days=60))
    (snapshot_dir / str(owner.pk) / f"{uuid.uuid4()}.qcow2").write_bytes(b"x")
    UserQuota.objects.filter(user=owner).update(snapshot_stored_bytes=F("snapshot_stored_bytes") + 1)
    gc(django_capture_on_commit_callbacks)
    before = (list(Snapshot.objects.values_list("pk", "size_bytes")), stored(owner),
              sorted(p.name for p in (snapshot_dir / str(owner.pk)).iterdir()))

    again = gc(django_capture_on_commit_callbacks)

    assert again.summary() == snapshots.CollectionReport().summary()
    assert (list(Snapshot.objects.values_list("pk", "size_bytes")), stored(owner),
            sorted(p.name for p in (snapshot_dir / str(owner.pk)).iterdir())) == before
    assert stored(owner) == 3000


def test_the_command_prints_what_it_did(owner, lab, snapshot_dir):
    make_snapshot(owner, lab, size=5000, with_file=False)
    out = StringIO()

    call_command("gc_snapshots", stdout=out)

    assert "1 without files" in out.getvalue()
    assert stored(owner) == 0
