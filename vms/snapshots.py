"""VM snapshots with quota accounting, and booting VM labs from a snapshot or a learner's ISO.

Accounting. `UserQuota.snapshot_stored_bytes` always equals the bytes of the user's ready
snapshots plus the reservations of those still being created, and the database refuses
any value outside [0, snapshot_capacity_bytes] (CHECK constraints). Every change to the
counter happens in the same transaction as the matching change to the Snapshot row:

1. create: reserve an upper bound for the snapshot (`F()` update; a concurrent request that
   would go over the capacity fails the CHECK → `SnapshotQuotaExceeded`), insert the row
   `creating` with `reserved_bytes`, queue the job;
2. job done: the counter moves by (actual − reserved) and the row becomes `ready` with
   `size_bytes` = the bytes of its files (the disk, and the memory state when saved);
3. job failed: the whole reservation is released and the row becomes `failed` (0 bytes), so a
   failed snapshot leaves the counter where it was;
4. delete: the row goes and its bytes are released; the files are removed after commit (a
   crash in between leaves an orphan file, which `gc_snapshots` removes).

Policy. A user keeps at most LAB_SNAPSHOT_KEEP_PER_USER snapshots: when a new one is ready
the oldest ready ones beyond the limit are deleted (friendlier than refusing; the quota is
still a hard limit at creation). Snapshots expire LAB_SNAPSHOT_MAX_AGE_DAYS after they were
taken (`gc_snapshots` deletes them). A snapshot a live session is booted from is never
deleted, by the learner, the rotation or the collector; it goes once that session ends.

A snapshot's disk holds only the changes over the disk its session booted from (the lab's
base image, or an earlier snapshot when the session was booted from one), and a snapshot
with memory needs the ISO that was inserted. So a snapshot that another of the user's
snapshots is built on, or an ISO one needs, cannot be deleted until that one is gone; the
rotation and the collector skip it too.

Which sessions can be snapshotted: a running VM, with its memory; a VM whose QEMU has exited
but whose disk the runner still holds (runner.poll says STOPPED), disk only. The QEMU runner
removes a session's disk when the session stops, so an ended session is refused with a
message saying so (a runner that keeps disks of stopped sessions gets them snapshotted).

Files live in LAB_SNAPSHOT_DIR/<user id>/<snapshot id>.qcow2; everything in that directory
whose name starts with "<snapshot id>." belongs to the snapshot (the QEMU runner writes
<disk>.state, the memory, and <disk>.json, the boot description, beside the disk), which is
how sizes are measured (all of them count) and orphans recognised.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet, Sum
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from accounts.models import UserQuota
from audit.records import record
from jobqueue.queueing import QUEUE_UNAVAILABLE, QueueUnavailable, enqueue_on_commit, require_queue, retry_once
from labs.models import Image, Lab
from labs.vm_images import qcow2_backing_file
from runners.base import PollStatus, Runner, RunnerError
from sessions_app import actions
from sessions_app.models import ENDED_STATES, Session, State
from vms.models import Snapshot

log = logging.getLogger(__name__)

# A snapshot still `creating` this long after it was requested lost its job; the collector fails it.
STALE_CREATING_AFTER = timedelta(hours=1)
DISK_SUFFIX = ".qcow2"
MEMORY_SUFFIX = ".state"  # the QEMU runner's memory state file, <disk>.state
MIB = 1024 * 1024
# Beyond guest RAM a saved VM holds its devices' memory (16 MiB of VGA RAM, firmware ROMs) and
# the migration stream's framing; this is a generous bound for all of it.
DEVICE_STATE_BOUND = 64 * MIB


class SnapshotError(actions.SessionActionError):
    """A snapshot request the learner can understand; the message is shown to them."""


class SnapshotQuotaExceeded(SnapshotError):
    pass


# -- files ----------------------------------------------------------------------------------


def user_dir(user_id: int) -> Path:
    return Path(settings.LAB_SNAPSHOT_DIR) / str(user_id)


def snapshot_files(snapshot: Snapshot) -> list[Path]:
    """Every file that belongs to the snapshot: its disk and whatever the runner wrote beside it."""
    if not snapshot.path:
        return []
    disk = Path(snapshot.path)
    if not disk.parent.is_dir():
        return []
    prefix = f"{snapshot.pk}."
    return sorted(p for p in disk.parent.iterdir() if p.name.startswith(prefix) and p.is_file())


def measure(snapshot: Snapshot) -> int:
    return sum(p.stat().st_size for p in snapshot_files(snapshot))


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("could not remove snapshot file %s", path)


def _owned_snapshot_id(path: Path) -> uuid.UUID | None:
    try:
        return uuid.UUID(path.name.split(".", 1)[0])
    except ValueError:
        return None


# -- what the runner offers ----------------------------------------------------------------------


def _snapshot_runner(session: Session) -> Runner:
    try:
        runner = session.runner()
    except RunnerError as exc:
        raise SnapshotError(f"Cannot snapshot this session: {exc}") from None
    if not runner.can_snapshot:
        raise SnapshotError("This lab’s environment cannot be snapshotted (its runner does not support snapshots).")
    return runner


def _vm_status(runner: Runner, session: Session) -> PollStatus:
    if not session.runner_state:
        return PollStatus.MISSING
    try:
        return runner.poll(session.runner_state)
    except RunnerError:
        return PollStatus.MISSING


def upper_bound(runner: Runner, session: Session, include_memory: bool) -> int:
    """The most bytes this snapshot can take: the session's own disk layer as it is now on the
    host (the snapshot copies its clusters), and the VM's whole memory when that is saved too."""
    disk = runner.snapshot_disk_bytes(session.runner_state)
    memory = 0
    if include_memory:
        memory_mb = session.lab.memory_mb
        try:  # the VM's real size: a session restored from a snapshot runs with the recorded memory
            memory_mb = max(memory_mb, runner.stats(session.runner_state).memory_limit_bytes // MIB)
        except (RunnerError, NotImplementedError):
            pass
        memory = memory_mb * MIB + DEVICE_STATE_BOUND
    return disk + memory + MIB  # 1 MiB for the copy's qcow2 metadata and the boot description


# -- create ---------------------------------------------------------------------------------


def _quota_message(user: Any, needed: int) -> str:
    quota = UserQuota.for_user(user)
    return (
        f"Snapshot quota exceeded: this snapshot needs up to {filesizeformat(needed)} and "
        f"{filesizeformat(quota.snapshot_stored_bytes)} of your {filesizeformat(quota.snapshot_capacity_bytes)} "
        "are in use. Delete a snapshot to make room."
    )


def reserve(user: Any, nbytes: int) -> None:
    """Add `nbytes` to the user's stored bytes, or raise SnapshotQuotaExceeded if that would pass the capacity.

    The database's CHECK constraint is the judge, so two reservations racing for the last
    bytes cannot both succeed: the second UPDATE waits for the first's row lock and then fails.
    """
    UserQuota.for_user(user)
    try:
        with transaction.atomic():
            UserQuota.objects.filter(user=user).update(snapshot_stored_bytes=F("snapshot_stored_bytes") + nbytes)
    except IntegrityError:
        raise SnapshotQuotaExceeded(_quota_message(user, nbytes)) from None


def _adjust(user_id: int, delta: int) -> None:
    if delta:
        UserQuota.objects.filter(user_id=user_id).update(snapshot_stored_bytes=F("snapshot_stored_bytes") + delta)


def default_name(session: Session) -> str:
    return f"{session.lab.title} – {timezone.localtime():%Y-%m-%d %H:%M}"[:100]


def create_snapshot(user: Any, session: Session, name: str = "", *, address: str = "") -> Snapshot:
    """Reserve quota for a snapshot of `session` and queue the job that takes it (audit-logged
    with the client's `address`).

    A running VM is saved with its memory; a stopped one disk only, and only if its runner
    kept the disk.
    """
    if not session.is_learner(user):
        raise SnapshotError("Only the learner who owns this session can snapshot it.")
    if session.lab.image.kind != Image.Kind.VM:
        raise SnapshotError("Only virtual machine labs can be snapshotted.")
    if session.state != State.RUNNING and session.state not in ENDED_STATES:
        raise SnapshotError(f"The session is {session.get_state_display().lower()}; try again once it is running.")
    try:
        require_queue()  # before asking the VM anything
    except QueueUnavailable as exc:
        raise SnapshotError(str(exc)) from exc
    runner = _snapshot_runner(session)
    status = _vm_status(runner, session)
    if status == PollStatus.MISSING:
        raise SnapshotError(
            "This session’s disk was removed when it stopped, so there is nothing left to snapshot. "
            "Take snapshots while the session is running."
            if session.is_ended else "This session’s virtual machine is gone; there is nothing to snapshot."
        )
    # Memory only from a VM that is running; one whose guest powered off keeps just its disk.
    include_memory = session.state == State.RUNNING and status == PollStatus.RUNNING

    needed = upper_bound(runner, session, include_memory)
    with transaction.atomic():
        reserve(user, needed)
        snapshot = Snapshot(
            owner=user, lab=session.lab, source_session=session, name=(name.strip() or default_name(session))[:100],
            reserved_bytes=needed, includes_memory=include_memory, status=Snapshot.Status.CREATING,
        )
        snapshot.path = str(user_dir(user.pk) / f"{snapshot.pk}{DISK_SUFFIX}")
        snapshot.save(force_insert=True)
        session.log(f"Snapshot “{snapshot.name}” requested ({'disk and memory' if include_memory else 'disk'}).")
        record("snapshot.create", actor=user, target=snapshot, label=snapshot.name, address=address,
               extra={"session": str(session.pk), "with_memory": include_memory})
        enqueue_on_commit("vms.jobs.take_snapshot", str(snapshot.pk), job_id=f"snapshot-{snapshot.pk}",
                          retry=retry_once(), if_unavailable=lambda: fail(snapshot, QUEUE_UNAVAILABLE))
    return snapshot


def take(snapshot_id: str) -> None:
    """Run a `creating` snapshot through the runner and settle its accounting. Idempotent."""
    snapshot = Snapshot.objects.select_related("source_session", "lab").filter(pk=snapshot_id).first()
    if snapshot is None or snapshot.status != Snapshot.Status.CREATING:
        return
    session = snapshot.source_session
    if session is None:
        fail(snapshot, "The session this snapshot was taken from no longer exists.")
        return
    try:
        runner = _snapshot_runner(session)
    except SnapshotError as exc:
        fail(snapshot, str(exc))
        return
    disk = Path(snapshot.path)
    disk.parent.mkdir(parents=True, exist_ok=True)
    remove_files(snapshot_files(snapshot))  # a retried job starts clean
    try:
        runner.snapshot(session.runner_state, str(disk), include_memory=snapshot.includes_memory)
    except RunnerError as exc:
        fail(snapshot, f"The snapshot could not be taken: {exc}")
        return
    except Exception as exc:
        log.exception("snapshot %s of session %s", snapshot.pk, session.pk)
        fail(snapshot, f"The snapshot could not be taken (internal error: {type(exc).__name__}).")
        return
    finish(snapshot)


def finish(snapshot: Snapshot) -> None:
    """Record a taken snapshot: its real size replaces the reservation."""
    actual = measure(snapshot)
    if actual <= 0 or not Path(snapshot.path).is_file():
        fail(snapshot, "The snapshot produced no disk file.")
        return
    with_memory = Path(snapshot.path + MEMORY_SUFFIX).is_file()
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().filter(pk=snapshot.pk).first()
        if locked is None or locked.status != Snapshot.Status.CREATING:
            # Failed by the collector meanwhile (its reservation already released): drop the files.
            transaction.on_commit(lambda: remove_files(snapshot_files(snapshot)))
            return
        try:
            with transaction.atomic():
                _adjust(locked.owner_id, actual - locked.reserved_bytes)
        except IntegrityError:
            over = True
        else:
            over = False
            Snapshot.objects.filter(pk=locked.pk).update(
                status=Snapshot.Status.READY, size_bytes=actual, reserved_bytes=0, error="",
                includes_memory=with_memory,
            )
    if over:
        fail(snapshot, f"The snapshot came out at {filesizeformat(actual)}, more than your free snapshot space.")
        return
    if snapshot.source_session_id:
        Session.objects.get(pk=snapshot.source_session_id).log(
            f"Snapshot “{snapshot.name}” saved ({filesizeformat(actual)})."
        )
    enforce_keep_limit(snapshot.owner_id)


def fail(snapshot: Snapshot, message: str) -> None:
    """Mark a `creating` snapshot failed, release its whole reservation and remove its files."""
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().filter(pk=snapshot.pk).first()
        if locked is None or locked.status != Snapshot.Status.CREATING:
            return
        _adjust(locked.owner_id, -locked.reserved_bytes)
        Snapshot.objects.filter(pk=locked.pk).update(
            status=Snapshot.Status.FAILED, reserved_bytes=0, size_bytes=0, error=message[:2000]
        )
        files = snapshot_files(locked)
        transaction.on_commit(lambda: remove_files(files))
    if snapshot.source_session_id:
        session = Session.objects.filter(pk=snapshot.source_session_id).first()
        if session is not None:
            session.log(f"Snapshot “{snapshot.name}” failed: {message}", level="error")


# -- delete and policy ----------------------------------------------------------------------


def in_use(snapshot: Snapshot) -> bool:
    return Session.objects.live().filter(boot_snapshot=snapshot).exists()


def needed_files(snapshot: Snapshot) -> set[str]:
    """Files the snapshot cannot boot without: the disk it is layered on and the ISO it had inserted."""
    if not snapshot.path:
        return set()
    disk = Path(snapshot.path)
    needs = set()
    backing = qcow2_backing_file(disk)
    if backing:
        needs.add(str(disk.parent / backing))  # an absolute name replaces the folder
    try:
        description = json.loads(Path(snapshot.path + ".json").read_text())
        cdrom = (description.get("hardware") or {}).get("cdrom")
    except (OSError, ValueError, AttributeError):
        cdrom = None
    if isinstance(cdrom, str) and cdrom:
        needs.add(cdrom)
    return needs


def snapshots_needing(owner_id: int, path: str, exclude: Any = None) -> list[Snapshot]:
    """The owner's snapshots that need the file at `path` (see needed_files)."""
    candidates = Snapshot.objects.filter(owner_id=owner_id).exclude(status=Snapshot.Status.FAILED)
    if exclude is not None:
        candidates = candidates.exclude(pk=exclude)
    return [s for s in candidates.order_by("created_at") if path in needed_files(s)]


def why_kept(snapshot: Snapshot) -> str:
    """Why a snapshot cannot be deleted now ("" if it can)."""
    if snapshot.status == Snapshot.Status.CREATING:
        return "This snapshot is still being taken; delete it once it is ready."
    if in_use(snapshot):
        return "A live session is running from this snapshot; stop it first."
    if snapshot.status == Snapshot.Status.READY and snapshot.path:
        needing = snapshots_needing(snapshot.owner_id, snapshot.path, exclude=snapshot.pk)
        if needing:
            return (f"Your snapshot “{needing[0].name}” was taken from a session booted from this one and is "
                    "built on it; delete that one first.")
    return ""


def delete_snapshot(user: Any, snapshot: Snapshot, *, address: str = "") -> None:
    """Delete one of the user's snapshots and release its bytes (audit-logged with the client's `address`)."""
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().filter(pk=snapshot.pk, owner_id=user.pk).first()
        if locked is None:
            return
        reason = why_kept(locked)
        if reason:
            raise SnapshotError(reason)
        record("snapshot.delete", actor=user, target=locked, label=locked.name, address=address)
        _drop(locked)


def _drop(locked: Snapshot) -> None:
    """Delete a locked, not-creating snapshot row, release its bytes and remove its files after commit."""
    files = snapshot_files(locked)
    _adjust(locked.owner_id, -(locked.size_bytes + locked.reserved_bytes))
    locked.delete()
    transaction.on_commit(lambda: remove_files(files))


def _delete_unless_busy(snapshot_id: Any, why: str) -> bool:
    """The system deletes a snapshot (`why`: "expired", "keep limit") unless something still needs it."""
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().filter(pk=snapshot_id).first()
        if locked is None or why_kept(locked):
            return False
        record("snapshot.delete", target=locked, label=locked.name, extra={"why": why, "owner": locked.owner_id})
        _drop(locked)
        return True


def enforce_keep_limit(user_id: int) -> int:
    """Delete the user's oldest ready snapshots beyond LAB_SNAPSHOT_KEEP_PER_USER; return how many went."""
    keep = settings.LAB_SNAPSHOT_KEEP_PER_USER
    ready = list(
        Snapshot.objects.filter(owner_id=user_id, status=Snapshot.Status.READY)
        .order_by("-created_at", "-pk").values_list("pk", flat=True)
    )
    removed = 0
    for snapshot_id in ready[keep:]:
        removed += _delete_unless_busy(snapshot_id, "keep limit")
    return removed


def visible_snapshots(user: Any) -> QuerySet[Snapshot]:
    return Snapshot.objects.filter(owner_id=user.pk).select_related("lab", "source_session")


# -- booting from a snapshot or an ISO ---------------------------------------------------------


def vm_labs_for(user: Any) -> QuerySet[Lab]:
    """VM labs the user may start (published, or any for staff)."""
    labs = Lab.objects.filter(image__kind=Image.Kind.VM, image__active=True).select_related("image")
    return labs if user.is_staff else labs.filter(published=True)


# -- garbage collection ----------------------------------------------------------------------


@dataclass
class CollectionReport:
    stale_failed: int = 0
    expired: int = 0
    rows_without_files: int = 0
    over_limit: int = 0
    files_without_rows: int = 0
    counters_fixed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.stale_failed} stale snapshot(s) failed, {self.expired} expired, "
            f"{self.rows_without_files} without files, {self.over_limit} over the per-user limit, "
            f"{self.files_without_rows} orphan file(s) removed, {len(self.counters_fixed)} counter(s) fixed"
        )


def collect_garbage(now: Any = None) -> CollectionReport:
    """Bring rows, files and counters back in line. Idempotent: a second run finds nothing."""
    now = now or timezone.now()
    report = CollectionReport()

    for snapshot in Snapshot.objects.filter(status=Snapshot.Status.CREATING, created_at__lt=now - STALE_CREATING_AFTER):
        fail(snapshot, "The snapshot job did not finish.")
        report.stale_failed += 1

    cutoff = now - timedelta(days=settings.LAB_SNAPSHOT_MAX_AGE_DAYS)
    # Newest first: a snapshot built on an older one goes before it, so both go in one pass.
    for snapshot_id in Snapshot.objects.filter(created_at__lt=cutoff).exclude(
        status=Snapshot.Status.CREATING
    ).order_by("-created_at").values_list("pk", flat=True):
        report.expired += _delete_unless_busy(snapshot_id, "expired")

    for snapshot in Snapshot.objects.filter(status=Snapshot.Status.READY):
        if not Path(snapshot.path).is_file():
            with transaction.atomic():
                locked = Snapshot.objects.select_for_update().filter(
                    pk=snapshot.pk, status=Snapshot.Status.READY
                ).first()
                if locked is not None and not Path(locked.path).is_file():
                    _drop(locked)
                    report.rows_without_files += 1

    for owner_id in Snapshot.objects.filter(status=Snapshot.Status.READY).values_list("owner_id", flat=True).distinct():
        report.over_limit += enforce_keep_limit(owner_id)

    report.files_without_rows = _remove_orphan_files()
    report.counters_fixed = _fix_counters()
    return report


def _remove_orphan_files() -> int:
    root = Path(settings.LAB_SNAPSHOT_DIR)
    if not root.is_dir():
        return 0
    removed = 0
    for owner_dir in root.iterdir():
        if not owner_dir.is_dir():
            continue
        for path in owner_dir.iterdir():
            snapshot_id = _owned_snapshot_id(path)
            known = snapshot_id is not None and Snapshot.objects.filter(
                pk=snapshot_id, owner_id=int(owner_dir.name) if owner_dir.name.isdigit() else -1
            ).exclude(status=Snapshot.Status.FAILED).exists()
            if not known and path.is_file():
                remove_files([path])
                removed += 1
    return removed


def _fix_counters() -> list[str]:
    """Set each user's stored bytes to what their snapshot rows hold (ready sizes + reservations)."""
    fixed = []
    candidates = UserQuota.objects.filter(Q(snapshot_stored_bytes__gt=0) | Q(user__snapshots__isnull=False))
    for quota_id in candidates.values_list("pk", flat=True).distinct():
        with transaction.atomic():
            quota = UserQuota.objects.select_for_update().select_related("user").get(pk=quota_id)
            held = Snapshot.objects.filter(owner_id=quota.user_id).filter(
                Q(status=Snapshot.Status.READY) | Q(status=Snapshot.Status.CREATING)
            ).aggregate(size=Sum("size_bytes"), reserved=Sum("reserved_bytes"))
            expected = (held["size"] or 0) + (held["reserved"] or 0)
            if quota.snapshot_stored_bytes == expected:
                continue
            try:
                with transaction.atomic():
                    UserQuota.objects.filter(pk=quota.pk).update(snapshot_stored_bytes=expected)
            except IntegrityError:
                log.error("snapshot counter of %s: rows hold %d bytes, more than the capacity %d",
                          quota.user, expected, quota.snapshot_capacity_bytes)
                continue
            fixed.append(f"{quota.user}: {quota.snapshot_stored_bytes} → {expected}")
    return fixed
