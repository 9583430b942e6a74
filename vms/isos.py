"""A learner's own ISOs: stored read-only after the same inspection as staff images, counted
against a per-user limit, deleted only while no live session or snapshot needs them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.template.defaultfilters import filesizeformat

from accounts.models import UserQuota
from audit.records import record
from labs.models import Image
from labs.vm_images import ImageRejected, apply_info, inspect_upload, make_read_only
from sessions_app.models import Session
from vms.snapshots import snapshots_needing


def _image_storage() -> Any:
    return Image._meta.get_field("file").storage  # type: ignore[union-attr]


def learner_isos(user: Any) -> Any:
    return Image.objects.filter(owner=user, kind=Image.Kind.VM, disk_format=Image.DiskFormat.ISO)


def store_learner_iso(user: Any, upload: UploadedFile, *, address: str = "") -> Image:
    """Validate and keep a learner's ISO, within the size limit and their count limit (audit-logged
    with the client's `address`).

    The count is checked and the row created under a lock on the learner's quota row, so
    two uploads at once cannot both take the last free place.
    """
    limit = settings.LAB_ISO_MAX_BYTES
    if upload.size is not None and upload.size > limit:
        raise ImageRejected(f"The file is larger than the limit of {filesizeformat(limit)}.")
    info = inspect_upload(upload, Image.DiskFormat.ISO)
    if info.size_bytes > limit:
        raise ImageRejected(f"The file is larger than the limit of {filesizeformat(limit)}.")

    UserQuota.for_user(user)
    stored_name = ""
    try:
        with transaction.atomic():
            UserQuota.objects.select_for_update().get(user=user)
            count = learner_isos(user).count()
            if count >= settings.LAB_ISO_PER_USER:
                raise ImageRejected(
                    f"You already have {count} ISO image(s) (limit {settings.LAB_ISO_PER_USER}). Delete one first."
                )
            token = uuid.uuid4().hex[:10]
            image = Image(
                name=f"iso-{user.pk}-{token}", kind=Image.Kind.VM, owner=user, active=True,
                description=(upload.name or "upload.iso")[:200],
            )
            apply_info(image, info)
            image.file.save(f"iso-{user.pk}-{token}.iso", upload, save=False)
            stored_name = image.file.name or ""
            make_read_only(Path(image.file.path))
            image.save()
            record("iso.upload", actor=user, target=image, label=image.description, address=address,
                   extra={"sha256": image.sha256, "size_bytes": image.size_bytes})
    except Exception:
        if stored_name:
            _image_storage().delete(stored_name)
        raise
    return image


def delete_learner_iso(user: Any, image: Image, *, address: str = "") -> None:
    """Remove a learner's ISO and its file; refused while a live session boots from it."""
    if image.owner_id != user.pk:
        raise ImageRejected("This ISO is not yours.")
    if Session.objects.live().filter(boot_iso=image).exists():
        raise ImageRejected("A running session boots from this ISO; stop it first.")
    if image.file:
        needing = snapshots_needing(user.pk, image.file.path)
        if needing:
            raise ImageRejected(
                f"Your snapshot “{needing[0].name}” was taken with this ISO inserted and cannot be booted "
                "without it; delete that snapshot first."
            )
    name = image.file.name
    with transaction.atomic():
        record("iso.delete", actor=user, target=image, label=image.description, address=address)
        image.delete()
        if name:
            transaction.on_commit(lambda: _image_storage().delete(name))
