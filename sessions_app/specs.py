"""What a session asks of its runner: the SessionSpec built from the session row and its lab."""

from __future__ import annotations

from pathlib import Path

from runners.base import SessionSpec
from sessions_app.models import Session


def spec_for(session: Session) -> SessionSpec:
    lab = session.lab
    image = lab.image
    starter = None
    if lab.source_path and (Path(lab.source_path) / "files").is_dir():
        starter = str(Path(lab.source_path) / "files")
    image_path = image.reference or (image.file.path if image.file else "")
    disk_format = image.disk_format or ""
    # An ISO is "iso" by its validated format, not by its file name (an upload may be called
    # anything); runners that only know image_kind then boot it from the CD-ROM too.
    image_kind = "iso" if disk_format == "iso" else image.kind
    # A VM session may boot a learner's snapshot or own ISO instead of the lab's disk.
    boot_snapshot, boot_iso = session.boot_snapshot, session.boot_iso
    if boot_snapshot is not None and boot_snapshot.status == "ready" and boot_snapshot.path:
        # Snapshots are always qcow2 disks (an ISO session's snapshot records its CD-ROM beside it).
        image_path, image_kind, disk_format = boot_snapshot.path, "vm", "qcow2"
    elif boot_iso is not None and boot_iso.file:
        image_path, image_kind, disk_format = boot_iso.file.path, "iso", "iso"
    return SessionSpec(
        session_id=str(session.pk),
        user_id=session.user_id,
        username=session.user.get_username(),
        lab_slug=lab.slug,
        image=image_path,
        image_kind=image_kind,
        cpu=float(lab.cpu),
        memory_mb=lab.memory_mb,
        pids_limit=lab.pids_limit,
        disk_mb=lab.disk_mb,
        network_mode=lab.network_mode,
        docker_access=lab.docker_access,
        exposed_ports=tuple(int(p) for p in lab.exposed_ports or ()),
        starter_dir=starter,
        dind_images=tuple(lab.dind_images or ()),
        consoles=tuple(lab.consoles or ()),
        disk_format=disk_format,
        shell_user=lab.shell_user or "",
        hosts=tuple(lab.hosts or ()),
    )
