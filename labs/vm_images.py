"""VM disk images and ISOs: streaming uploads, validation with qemu-img, read-only storage.

Every way an image file enters the platform goes through `inspect_file()`: the admin upload
(`labs.forms.ImageAdminForm`), `manage.py register_image`, and a learner's own ISO
(`vms.isos.store_learner_iso`). A file is accepted only when it really is what it claims to be:

- qcow2: `qemu-img info -f qcow2` opens it, it has no backing file and no external data
  file (either could point at files on the host), it is not encrypted or marked corrupt, and
  `qemu-img check` finds no corruption (this is what catches a truncated image);
- raw: a whole number of 512-byte sectors that is not secretly another format (a qcow2
  header in a "raw" file would be probed as qcow2 by anything that guesses formats);
- iso: the ISO 9660 signature "CD001" at offset 0x8001 (qemu-img reports ISOs as raw).

Uploads are hashed while they stream to a temporary file (`HashingUploadHandler`), so no
file is ever read whole into memory and the sha256 costs no second pass. A refused file
leaves nothing behind: the temporary file is deleted with the request and no row is saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import SkipFile, TemporaryFileUploadHandler
from django.core.validators import validate_slug
from django.db import transaction
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from labs.models import Image

ALLOWED_FORMATS = ("qcow2", "raw", "iso")
CHUNK_BYTES = 1024 * 1024
SECTOR_BYTES = 512
ISO9660_OFFSET = 0x8001
ISO9660_MAGIC = b"CD001"
QEMU_IMG_TIMEOUT = 120
# The QEMU runner's image directory: a disk with these names boots the kernel files beside it.
IMAGE_DIRECTORY_DISKS = ("disk.qcow2", "disk.raw", "disk.img")
IMAGE_DIRECTORY_BOOT_FILES = ("vmlinuz", "initrd.img", "cmdline")
# `qemu-img check` exit codes: 0 clean, 3 only leaked clusters (harmless wasted space).
QCOW2_CHECK_OK = (0, 3)
# Headers of formats QEMU would recognise if it probed a file declared raw or ISO.
FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"QFI\xfb", "qcow2"),
    (b"KDMV", "VMDK"),
    (b"# Disk DescriptorFile", "VMDK"),
    (b"conectix", "VHD"),
    (b"vhdxfile", "VHDX"),
    (b"QED\x00", "QED"),
    (b"LUKS\xba\xbe", "LUKS"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>", "VDI"),
    (b"<<< Sun xVM VirtualBox Disk Image >>>", "VDI"),
)


class ImageRejected(Exception):
    """The file is not an acceptable image; the message says why, for the person who sent it."""


@dataclass(frozen=True)
class ImageInfo:
    disk_format: str
    sha256: str
    size_bytes: int
    virtual_size_bytes: int


# -- streaming uploads ---------------------------------------------------------------------


class HashedUploadedFile(TemporaryUploadedFile):
    """A temporary upload that knows the sha256 of its contents."""

    sha256: str = ""


class HashingUploadHandler(TemporaryFileUploadHandler):
    """Streams each uploaded file to a temporary file and hashes it chunk by chunk.

    With `max_bytes`, a file that grows past the limit is dropped as it arrives (its
    temporary file is deleted at once) and `rejection` says why, for the view to show.
    """

    chunk_size = 256 * 1024

    def __init__(self, request: HttpRequest | None = None, max_bytes: int | None = None) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.rejection = ""
        self._hasher = hashlib.sha256()
        self._received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super(TemporaryFileUploadHandler, self).new_file(*args, **kwargs)
        self.file = HashedUploadedFile(
            self.file_name or "upload", self.content_type, 0, self.charset, self.content_type_extra
        )
        self._hasher = hashlib.sha256()
        self._received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self._received += len(raw_data)
        if self.max_bytes is not None and self._received > self.max_bytes:
            self.rejection = f"The file is larger than the limit of {filesizeformat(self.max_bytes)}."
            raise SkipFile()
        self._hasher.update(raw_data)
        self.file.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> HashedUploadedFile:
        uploaded = super().file_complete(file_size)
        assert isinstance(uploaded, HashedUploadedFile)
        uploaded.sha256 = self._hasher.hexdigest()
        return uploaded


def install_upload_handler(request: HttpRequest, max_bytes: int | None = None) -> HashingUploadHandler:
    """Make this request's file uploads stream through a hashing handler.

    Must run before anything reads request.POST or request.FILES, so the view doing it is
    csrf_exempt and applies csrf_protect itself afterwards (Django's documented pattern).
    """
    handler = HashingUploadHandler(request, max_bytes=max_bytes)
    request.upload_handlers = [handler]
    return handler


def upload_rejection(request: HttpRequest) -> str:
    """Why the request's upload handler dropped a file ("" if it did not)."""
    for handler in request.upload_handlers:
        if isinstance(handler, HashingUploadHandler) and handler.rejection:
            return handler.rejection
    return ""


# -- hashing and copying -------------------------------------------------------------------


def hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def copy_and_hash(source: Path, target: Path) -> str:
    """Copy `source` to a new file `target`, hashing the bytes as they are copied (one pass)."""
    hasher = hashlib.sha256()
    with open(source, "rb") as src, open(target, "xb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            hasher.update(chunk)
            dst.write(chunk)
    return hasher.hexdigest()


def upload_path_and_hash(upload: UploadedFile) -> tuple[Path, str, Path | None]:
    """Where an upload's bytes are on disk and their sha256.

    Uploads that came through HashingUploadHandler are already on disk and hashed; anything
    else (another handler kept it in memory) is streamed to a temporary file here, which the
    caller deletes (third value).
    """
    if isinstance(upload, HashedUploadedFile) and upload.sha256:
        return Path(upload.temporary_file_path()), upload.sha256, None
    hasher = hashlib.sha256()
    fd, name = _mkstemp()
    with os.fdopen(fd, "wb") as out:
        for chunk in upload.chunks(CHUNK_BYTES):
            hasher.update(chunk)
            out.write(chunk)
    upload.seek(0)
    return Path(name), hasher.hexdigest(), Path(name)


def _mkstemp() -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(suffix=".upload", dir=settings.FILE_UPLOAD_TEMP_DIR)


# -- validation ----------------------------------------------------------------------------


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def has_iso9660_signature(path: Path) -> bool:
    return _read_at(path, ISO9660_OFFSET, len(ISO9660_MAGIC)) == ISO9660_MAGIC


def sniff_format(path: Path) -> str:
    """The format a file's contents say it has: "qcow2", "iso", another format's name, or "raw"."""
    head = _read_at(path, 0, 64)
    for magic, name in FOREIGN_MAGIC:
        if head.startswith(magic):
            return name
    if has_iso9660_signature(path):
        return "iso"
    return "raw"


def qcow2_backing_file(path: Path) -> str | None:
    """The backing file named in a qcow2 header (None for other files), read without qemu-img."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or not header.startswith(b"QFI\xfb"):
                return None
            offset = int.from_bytes(header[8:16], "big")
            size = int.from_bytes(header[16:20], "big")
            if not offset or not 0 < size <= 1023:  # qcow2 caps backing names at 1023 bytes
                return None
            f.seek(offset)
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return None


def _qemu_img(args: list[str]) -> subprocess.CompletedProcess[str]:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise ImageRejected("The server cannot check disk images: qemu-img is not installed (package qemu-utils).")
    try:
        return subprocess.run(
            [qemu_img, *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT, check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        raise ImageRejected(f"Checking the image took longer than {QEMU_IMG_TIMEOUT} s; it was refused.") from None


def _qemu_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.removeprefix("qemu-img: ") for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {result.returncode}"


def qemu_img_info(path: Path, qemu_format: str) -> dict[str, Any]:
    """`qemu-img info --output=json` with the format named, so nothing is probed or followed."""
    result = _qemu_img(["info", "--output=json", "-f", qemu_format, str(path)])
    if result.returncode != 0:
        raise ImageRejected(f"This is not a {qemu_format} image ({_qemu_error(result)}).")
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise ImageRejected("qemu-img gave an unreadable answer about this file.") from None
    if not isinstance(info, dict):
        raise ImageRejected("qemu-img gave an unreadable answer about this file.")
    return info


def _check_qcow2(path: Path) -> dict[str, Any]:
    info = qemu_img_info(path, "qcow2")
    if info.get("format") != "qcow2":
        raise ImageRejected("This is not a qcow2 image.")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRejected(
            f"This qcow2 image has a backing file ({info.get('backing-filename')!s:.200}); base images must "
            "stand alone. Flatten it first: qemu-img convert -O qcow2 IN.qcow2 OUT.qcow2"
        )
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ImageRejected("This qcow2 image keeps its data in an external file; flatten it with qemu-img convert.")
    if specific.get("corrupt"):
        raise ImageRejected("This qcow2 image is marked corrupt.")
    if info.get("encrypted"):
        raise ImageRejected("This qcow2 image is encrypted; upload an unencrypted image.")
    # Only now, with no backing or data file to follow, is it safe to read every table.
    result = _qemu_img(["check", "--output=json", "-f", "qcow2", str(path)])
    if result.returncode not in QCOW2_CHECK_OK:
        detail = "damaged or truncated" if result.returncode == 2 else f"could not be checked ({_qemu_error(result)})"
        raise ImageRejected(f"This qcow2 image is {detail}; it was refused.")
    return info


def inspect_file(path: Path, declared_format: str, sha256: str | None = None) -> ImageInfo:
    """Validate the image at `path` as `declared_format`; return what was verified.

    Raises ImageRejected with a message for the uploader when the file is not an acceptable
    image of that format. `sha256` skips hashing when the caller hashed while streaming.
    """
    if declared_format not in ALLOWED_FORMATS:
        raise ImageRejected(f"Choose the image format: one of {', '.join(ALLOWED_FORMATS)}.")
    try:
        mode = path.lstat()
    except FileNotFoundError:
        raise ImageRejected(f"{path} does not exist.") from None
    if not stat.S_ISREG(mode.st_mode):
        raise ImageRejected(f"{path.name} is not a regular file.")
    size = mode.st_size
    if size == 0:
        raise ImageRejected("The file is empty.")

    sniffed = sniff_format(path)
    if declared_format == "qcow2":
        if sniffed != "qcow2":
            raise ImageRejected(
                "This is not a qcow2 image (no qcow2 header)"
                + ("; it looks like an ISO, so choose the ISO format." if sniffed == "iso" else ".")
            )
        info = _check_qcow2(path)
    else:
        if sniffed not in ("raw", "iso"):
            raise ImageRejected(f"This file is a {sniffed} image, not {declared_format}; choose the matching format.")
        if declared_format == "iso" and sniffed != "iso":
            raise ImageRejected("This is not an ISO 9660 image (no CD001 signature at offset 0x8001).")
        if declared_format == "raw" and sniffed == "iso":
            raise ImageRejected("This is an ISO 9660 image; choose the ISO format for it.")
        if declared_format == "raw" and size % SECTOR_BYTES:
            raise ImageRejected(
                f"This is not a raw disk image: its size ({size} bytes) is not a whole number of 512-byte sectors."
            )
        info = qemu_img_info(path, "raw")

    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual <= 0:
        raise ImageRejected("qemu-img reports no usable virtual size for this image.")
    return ImageInfo(
        disk_format=declared_format,
        sha256=sha256 or hash_file(path),
        size_bytes=size,
        virtual_size_bytes=virtual,
    )


def inspect_upload(upload: UploadedFile, declared_format: str) -> ImageInfo:
    """Validate an uploaded file (already streamed to disk and hashed when it came through our handler)."""
    path, sha256, scratch = upload_path_and_hash(upload)
    try:
        return inspect_file(path, declared_format, sha256=sha256)
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)


def make_read_only(path: Path) -> None:
    """Base images never change once stored: r--r--r--."""
    os.chmod(path, 0o444)


def apply_info(image: Image, info: ImageInfo) -> None:
    image.kind = Image.Kind.VM
    image.disk_format = info.disk_format
    image.sha256 = info.sha256
    image.size_bytes = info.size_bytes
    image.virtual_size_bytes = info.virtual_size_bytes


def image_path(image: Image) -> Path | None:
    """The file a VM image boots from: its upload, or the path `register_image` recorded."""
    if image.file:
        return Path(image.file.path)
    if image.kind == Image.Kind.VM and image.reference.startswith("/"):
        return Path(image.reference)
    return None


# -- images already on the server (manage.py register_image) ----------------------------------


@dataclass(frozen=True)
class Registration:
    image: Image
    created: bool
    message: str


def register_file(
    name: str, source: Path, declared_format: str | None = None, description: str | None = None,
    link: bool = False,
) -> Registration:
    """Bring an image file already on the server under the platform's control and activate it.

    The file is copied (hashing while copying) or, with `link`, hard-linked into
    LAB_VM_IMAGE_DIR/<name>-<sha256 prefix>/, and the copy is what gets validated: a later
    change to the original cannot slip past the check. A link shares the original's inode, so
    it is refused unless the platform's own user owns the file and nobody else may write it
    (`_check_linkable`); anyone else could change the stored base after it was checked and
    hashed, its owner even after it was made read-only. A disk named disk.qcow2 / disk.raw /
    disk.img brings the vmlinuz, initrd.img and cmdline beside it along (the QEMU runner's
    image directory, booted with that kernel). Idempotent by name and sha256: the same file
    under the same name changes nothing; different contents under a taken name are refused.
    """
    try:
        validate_slug(name)
    except ValidationError:
        raise ImageRejected(
            f"{name!r} is not a valid image name: use letters, digits, hyphens and underscores."
        ) from None
    if len(name) > Image._meta.get_field("name").max_length:  # type: ignore[operator]
        raise ImageRejected(f"{name!r} is too long for an image name.")
    if not source.is_file():
        raise ImageRejected(f"{source} is not a file.")
    target_dir = Path(settings.LAB_VM_IMAGE_DIR)
    target_dir.mkdir(parents=True, exist_ok=True)
    incoming = target_dir / f".incoming-{uuid.uuid4().hex}"
    try:
        if link:
            try:
                os.link(source, incoming)
            except OSError as exc:
                raise ImageRejected(
                    f"Cannot hard-link {source} into {target_dir} ({exc.strerror}); register without --link to copy it."
                ) from None
            # Checked on the link itself: the inode we keep, whatever `source` names by now.
            _check_linkable(incoming, source)
            linked = incoming.stat()
            sha256 = hash_file(incoming)
        else:
            sha256 = copy_and_hash(source, incoming)
        fmt = declared_format or sniff_format(incoming)
        info = inspect_file(incoming, fmt, sha256=sha256)

        existing = Image.objects.filter(name=name).first()
        # A row without contents (a lab imported before its disk was built) is filled in, not refused.
        placeholder = existing is not None and not existing.sha256 and not existing.file
        if existing is not None and not placeholder:
            if existing.sha256 != info.sha256:
                raise ImageRejected(
                    f"An image named {name} already exists with other contents (sha256 {existing.sha256[:12] or '—'}). "
                    "Base images never change: register this file under a new name."
                )
            stored = image_path(existing)
            if stored is not None and not stored.exists() and not existing.file:
                stored.parent.mkdir(parents=True, exist_ok=True)
                os.replace(incoming, stored)  # the recorded file went missing; put the identical one back
                make_read_only(stored)
            changes: dict[str, Any] = {"active": True}
            if description is not None:
                changes["description"] = description
            Image.objects.filter(pk=existing.pk).update(**changes)
            existing.refresh_from_db()
            return Registration(existing, False, f"{name} is already registered with sha256 {info.sha256}; active.")

        folder = target_dir / f"{name}-{info.sha256[:12]}"
        folder.mkdir(exist_ok=True)
        final = folder / {"qcow2": "disk.qcow2", "raw": "disk.img", "iso": f"{name}.iso"}[info.disk_format]
        try:
            os.replace(incoming, final)
            make_read_only(final)
            if link and _modified_since(final, linked):
                raise ImageRejected(f"{source} changed while it was being registered; register it again.")
            copied = _copy_boot_files(source, folder) if info.disk_format != "iso" else []
            with transaction.atomic():
                image = existing if placeholder and existing is not None else Image(name=name)
                image.kind = Image.Kind.VM
                image.reference = str(final)
                image.description = description or image.description
                image.active = True
                apply_info(image, info)
                image.full_clean(exclude=["file"])
                image.save()
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        extra = f" with its {', '.join(copied)}" if copied else ""
        return Registration(image, True, f"Registered {name}: {info.disk_format}, sha256 {info.sha256}, "
                                         f"virtual size {info.virtual_size_bytes} bytes, stored at {final}{extra}.")
    finally:
        incoming.unlink(missing_ok=True)


def _check_linkable(linked: Path, source: Path) -> None:
    """Refuse to keep a hard link to a file another user owns or may write (see register_file)."""
    info = linked.lstat()
    me = os.geteuid()
    if info.st_uid != me:
        raise ImageRejected(
            f"--link needs a file owned by the platform's user ({_user_name(me)}); {source} belongs to "
            f"{_user_name(info.st_uid)}, who could still change it after it is registered. Register it "
            "without --link to copy it, or give the file to the platform's user first."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ImageRejected(
            f"--link needs a file only its owner may write; {source} is writable by its group or by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}). Register it without --link to copy it, or chmod go-w it first."
        )


def _modified_since(path: Path, before: os.stat_result) -> bool:
    after = path.stat()
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _copy_boot_files(source: Path, folder: Path) -> list[str]:
    """Copy a kernel, initramfs and command line found beside a disk named disk.* (the QEMU
    runner's image directory: it boots such a disk with that kernel instead of a bootloader)."""
    if source.name not in IMAGE_DIRECTORY_DISKS:
        return []
    copied = []
    for name in IMAGE_DIRECTORY_BOOT_FILES:
        candidate = source.parent / name
        if candidate.is_file() and not candidate.is_symlink():
            shutil.copyfile(candidate, folder / name)
            make_read_only(folder / name)
            copied.append(name)
    return copied


# -- learners' own ISOs ---------------------------------------------------------------------
