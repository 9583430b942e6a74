"""Verbs that start a VM session from a learner's own things: a snapshot, or an uploaded ISO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from labs.models import Image, Lab
from sessions_app import actions
from sessions_app.models import Session
from vms.models import Snapshot
from vms.snapshots import SnapshotError


def start_session_from_snapshot(user: Any, snapshot: Snapshot, *, address: str = "") -> Session:
    """Start a new session of the snapshot's lab that boots the snapshot's disk (and memory)."""
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update().select_related("lab", "lab__image").filter(
            pk=snapshot.pk, owner_id=user.pk
        ).first()
        if locked is None:
            raise SnapshotError("No such snapshot.")
        if locked.status != Snapshot.Status.READY:
            raise SnapshotError("Only a ready snapshot can be booted.")
        if not Path(locked.path).is_file():
            raise SnapshotError("This snapshot’s files are missing; delete it.")
        # start_session's provisioning job is queued on commit of this outer transaction, so it
        # sees boot_snapshot already set.
        session = actions.start_session(user, locked.lab, address=address)
        Session.objects.filter(pk=session.pk).update(boot_snapshot=locked)
        session.boot_snapshot = locked
        session.log(f"Booting from snapshot “{locked.name}”.")
    return session


def start_session_from_iso(user: Any, iso: Image, lab: Lab, *, address: str = "") -> Session:
    """Start a VM lab that boots the learner's own ISO instead of the lab's disk."""
    if iso.owner_id != user.pk or iso.disk_format != Image.DiskFormat.ISO:
        raise SnapshotError("No such ISO.")
    if lab.image.kind != Image.Kind.VM:
        raise SnapshotError("This lab does not run a virtual machine, so it cannot boot an ISO.")
    with transaction.atomic():
        session = actions.start_session(user, lab, address=address)
        Session.objects.filter(pk=session.pk).update(boot_iso=iso)
        session.boot_iso = iso
        session.log(f"Booting from your ISO {iso.description}.")
    return session
