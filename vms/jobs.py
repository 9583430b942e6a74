"""RQ entry points for snapshots. Each takes a primary key and is idempotent."""

from __future__ import annotations

from vms import snapshots


def take_snapshot(snapshot_id: str) -> None:
    snapshots.take(snapshot_id)


def collect_snapshot_garbage() -> str:
    return snapshots.collect_garbage().summary()
