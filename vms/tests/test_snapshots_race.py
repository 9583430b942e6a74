"""Two snapshot requests racing for the last bytes of the quota, on real PostgreSQL and QEMU."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from accounts.models import UserQuota
from runners import get_runner
from sessions_app import actions
from sessions_app.models import Session, State
from vms import snapshots
from vms.models import Snapshot
from vms.tests.test_snapshots import qemu_runner, vm_image, vm_lab  # noqa: F401 - fixtures


@pytest.mark.django_db(transaction=True)
def test_two_snapshots_at_the_quota_edge_cannot_both_be_taken(owner, vm_lab):  # noqa: F811 - the fixture
    """Both requests reserve at once on two connections; the CHECK constraint lets exactly one through."""
    if connection.vendor != "postgresql":
        pytest.fail("this race test must run on PostgreSQL (set DATABASE_URL)")
    session = actions.start_session(owner, vm_lab)  # committed: provisioning has run
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    bound = snapshots.upper_bound(get_runner(session.runner_name), session, include_memory=True)
    # Room for one reservation, not for a second one next to it or next to a finished snapshot.
    UserQuota.for_user(owner)
    UserQuota.objects.filter(user=owner).update(snapshot_capacity_bytes=bound + 1000)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def request(name: str) -> None:
        try:
            barrier.wait(timeout=30)
            snapshots.create_snapshot(owner, Session.objects.select_related("lab__image").get(pk=session.pk), name)
            outcomes.append("taken")
        except snapshots.SnapshotQuotaExceeded as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert len(outcomes) == 2
    assert outcomes.count("taken") == 1
    refusal = next(o for o in outcomes if o != "taken")
    assert refusal.startswith("Snapshot quota exceeded")
    (snapshot,) = Snapshot.objects.filter(owner=owner)
    assert snapshot.status == "ready", snapshot.error
    files = sum(p.stat().st_size for p in snapshots.snapshot_files(snapshot))
    assert UserQuota.objects.get(user=owner).snapshot_stored_bytes == snapshot.size_bytes == files
