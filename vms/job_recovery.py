"""Snapshots whose job failed (its worker died): failed, with their reservation given back.
Registered with the reaper's recovery pass (sessions_app/job_recovery.py) by VmsConfig.ready."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from sessions_app.job_recovery import RECOVER_AFTER_SECONDS, Recovered, statuses_by_pk
from sessions_app.row_claims import claim_in_batches
from vms import snapshots
from vms.models import Snapshot

SNAPSHOT_ABANDONED = "The snapshot was interrupted: the worker taking it stopped. Take it again."


def recover_snapshots(now: datetime) -> Recovered:
    waiting = Snapshot.objects.filter(
        status=Snapshot.Status.CREATING, created_at__lte=now - timedelta(seconds=RECOVER_AFTER_SECONDS)
    )

    def repair(ids: list[UUID]) -> int:
        statuses = statuses_by_pk(ids, lambda pk: f"snapshot-{pk}")
        abandoned = [pk for pk in ids if statuses[pk] == "failed"]
        for snapshot in Snapshot.objects.filter(pk__in=abandoned):
            snapshots.fail(snapshot, SNAPSHOT_ABANDONED)
        return len(abandoned)

    return Recovered(failed=claim_in_batches(waiting, repair))
