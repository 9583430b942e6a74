"""VM images: staff uploads in the admin and `register_image`, checked by the real qemu-img."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEntry
from labs.models import Image

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/labs/image/add/"


@pytest.fixture(autouse=True)
def image_dirs(settings, tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is required for the VM image tests (apt-get install qemu-utils)")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.LAB_VM_IMAGE_DIR = tmp_path / "vm-images"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "upload-tmp").mkdir()
    return tmp_path


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_qcow2(path: Path, size: str = "64M") -> Path:
    qemu_img("create", "-f", "qcow2", str(path), size)
    return path


def make_iso(path: Path, size: int = 64 * 1024) -> Path:
    """A minimal ISO 9660 layout: a primary volume descriptor and the set terminator."""
    data = bytearray(size)
    data[0x8000:0x8007] = b"\x01CD001\x01"
    data[0x8800:0x8807] = b"\xffCD001\x01"
    path.write_bytes(bytes(data))
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload(staff_client: Client, path: Path, name: str, disk_format: str):
    with open(path, "rb") as f:
        return staff_client.post(
            ADD_URL, {"name": name, "kind": "vm", "active": "on", "description": "", "reference": "",
                      "disk_format": disk_format, "file": f},
        )


def stored_files(media_root: Path) -> list[Path]:
    images = media_root / "images"
    return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []


def test_a_qcow2_upload_is_stored_read_only_with_its_sha256_and_virtual_size(staff_client, settings, tmp_path):
    disk = make_qcow2(tmp_path / "disk.qcow2", "64M")

    response = upload(staff_client, disk, "small-disk", "qcow2")

    assert response.status_code == 302, response.content.decode()[:3000]
    image = Image.objects.get(name="small-disk")
    assert image.kind == "vm"
    assert image.disk_format == "qcow2"
    assert image.sha256 == sha256_of(disk)
    assert image.virtual_size_bytes == 64 * 1024 * 1024
    assert image.size_bytes == disk.stat().st_size
    stored = Path(image.file.path)
    assert stored.parent == settings.MEDIA_ROOT / "images"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o444
    assert stored.read_bytes() == disk.read_bytes()
    (audited,) = AuditEntry.objects.filter(action="image.upload")
    assert (audited.actor_name, audited.target_id, audited.extra) == (
        "stella", str(image.pk), {"sha256": image.sha256, "disk_format": "qcow2"})


def test_the_admin_shows_the_full_sha256_after_an_upload(staff_client, tmp_path):
    disk = make_qcow2(tmp_path / "disk.qcow2", "8M")

    with open(disk, "rb") as f:
        response = staff_client.post(
            ADD_URL, {"name": "shown", "kind": "vm", "active": "on", "disk_format": "qcow2", "file": f}, follow=True,
        )

    assert sha256_of(disk) in response.content.decode()


def test_a_raw_upload_larger_than_the_memory_limit_streams_to_disk_and_is_hashed(staff_client, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(3 * 1024 * 1024))  # above FILE_UPLOAD_MAX_MEMORY_SIZE (2 MiB)

    response = upload(staff_client, disk, "raw-disk", "raw")

    assert response.status_code == 302, response.content.decode()[:3000]
    image = Image.objects.get(name="raw-disk")
    assert image.disk_format == "raw"
    assert image.sha256 == sha256_of(disk)
    assert image.virtual_size_bytes == 3 * 1024 * 1024
    assert stat.S_IMODE(Path(image.file.path).stat().st_mode) == 0o444


def test_an_iso_upload_is_recognised_by_its_iso9660_signature(staff_client, tmp_path):
    iso = make_iso(tmp_path / "boot.iso")

    response = upload(staff_client, iso, "boot-iso", "iso")

    assert response.status_code == 302, response.content.decode()[:3000]
    assert Image.objects.get(name="boot-iso").disk_format == "iso"


def refused(response, image_dirs: Path, expected: str) -> None:
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not Image.objects.filter(kind="vm").exists()
    assert stored_files(image_dirs / "media") == []
    assert list((image_dirs / "upload-tmp").iterdir()) == []


def test_a_text_file_renamed_qcow2_is_refused_and_nothing_is_kept(staff_client, image_dirs, tmp_path):
    fake = tmp_path / "notes.qcow2"
    fake.write_text("these are my notes, not a disk\n" * 1000)

    refused(upload(staff_client, fake, "fake", "qcow2"), image_dirs, "This is not a qcow2 image")


def test_a_truncated_qcow2_is_refused_and_nothing_is_kept(staff_client, image_dirs, tmp_path):
    whole = make_qcow2(tmp_path / "whole.qcow2")
    truncated = tmp_path / "truncated.qcow2"
    truncated.write_bytes(whole.read_bytes()[:100_000])

    refused(upload(staff_client, truncated, "truncated", "qcow2"), image_dirs, "damaged or truncated")


def test_a_qcow2_with_a_backing_file_is_refused_and_nothing_is_kept(staff_client, image_dirs, tmp_path):
    base = make_qcow2(tmp_path / "base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))

    refused(upload(staff_client, overlay, "overlay", "qcow2"), image_dirs, "has a backing file")


def test_a_qcow2_declared_as_raw_is_refused(staff_client, image_dirs, tmp_path):
    disk = make_qcow2(tmp_path / "disk.img")

    refused(upload(staff_client, disk, "disguised", "raw"), image_dirs, "This file is a qcow2 image, not raw")


def test_a_raw_file_that_is_not_whole_sectors_is_refused(staff_client, image_dirs, tmp_path):
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 1000)

    refused(upload(staff_client, odd, "odd", "raw"), image_dirs, "not a whole number of 512-byte sectors")


def test_a_file_declared_iso_without_the_signature_is_refused(staff_client, image_dirs, tmp_path):
    blank = tmp_path / "blank.iso"
    blank.write_bytes(bytes(64 * 1024))

    refused(upload(staff_client, blank, "blank", "iso"), image_dirs, "not an ISO 9660 image")


def test_a_file_over_the_vm_image_limit_is_refused_with_the_limit_named(staff_client, image_dirs, tmp_path, settings):
    # Just over: within the multipart allowance the server gives the whole body (webserver/body_limits.py).
    settings.LAB_VM_IMAGE_MAX_BYTES = 64 * 1024
    iso = make_iso(tmp_path / "big.iso", size=64 * 1024 + 2048)

    refused(upload(staff_client, iso, "too-big", "iso"), image_dirs, "The file is larger than the limit of 64.0")


def test_a_vm_upload_without_a_declared_format_is_refused(staff_client, image_dirs, tmp_path):
    disk = make_qcow2(tmp_path / "disk.qcow2")

    refused(upload(staff_client, disk, "undeclared", ""), image_dirs, "Choose the format")


def test_the_file_of_an_existing_image_cannot_be_replaced(staff_client, tmp_path):
    first = make_qcow2(tmp_path / "first.qcow2", "8M")
    upload(staff_client, first, "stable", "qcow2")
    image = Image.objects.get(name="stable")
    second = make_qcow2(tmp_path / "second.qcow2", "16M")

    with open(second, "rb") as f:
        response = staff_client.post(
            f"/admin/labs/image/{image.pk}/change/",
            {"name": "stable", "kind": "vm", "active": "on", "disk_format": "qcow2", "file": f},
        )

    assert response.status_code == 200
    assert "cannot be replaced" in response.content.decode()
    image.refresh_from_db()
    assert image.sha256 == sha256_of(first)
    assert image.virtual_size_bytes == 8 * 1024 * 1024


def test_an_existing_image_can_still_be_disabled_and_described(staff_client, tmp_path):
    upload(staff_client, make_qcow2(tmp_path / "d.qcow2", "8M"), "editable", "qcow2")
    image = Image.objects.get(name="editable")

    response = staff_client.post(
        f"/admin/labs/image/{image.pk}/change/",
        {"name": "editable", "kind": "vm", "description": "Debian test disk", "disk_format": "qcow2"},
    )

    assert response.status_code == 302
    image.refresh_from_db()
    assert (image.active, image.description) == (False, "Debian test disk")
    assert image.sha256


def test_uploads_still_need_the_csrf_token(staff_user, tmp_path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    disk = make_qcow2(tmp_path / "disk.qcow2", "8M")

    response = upload(client, disk, "no-token", "qcow2")

    assert response.status_code == 403
    assert not Image.objects.filter(name="no-token").exists()


def test_container_images_are_still_added_with_a_reference(staff_client):
    response = staff_client.post(
        ADD_URL, {"name": "py", "kind": "container", "active": "on", "reference": "labs/python:1"}
    )

    assert response.status_code == 302
    assert Image.objects.get(name="py").reference == "labs/python:1"


# -- register_image -------------------------------------------------------------------------


def test_register_image_copies_validates_and_activates_a_file_on_the_server(settings, tmp_path, capsys):
    disk = make_qcow2(tmp_path / "big.qcow2", "128M")

    call_command("register_image", "big-disk", str(disk), "--format", "qcow2", "--description", "Big")

    image = Image.objects.get(name="big-disk")
    stored = Path(image.reference)
    assert stored.parent.parent == settings.LAB_VM_IMAGE_DIR
    assert stored.parent.name.startswith("big-disk-")
    assert stored.read_bytes() == disk.read_bytes()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o444
    assert (image.kind, image.disk_format, image.active, image.description) == ("vm", "qcow2", True, "Big")
    assert image.sha256 == sha256_of(disk)
    assert image.virtual_size_bytes == 128 * 1024 * 1024
    assert image.sha256 in capsys.readouterr().out


def test_register_image_detects_the_format_when_none_is_given(tmp_path):
    call_command("register_image", "detected-iso", str(make_iso(tmp_path / "x.iso")))
    call_command("register_image", "detected-qcow2", str(make_qcow2(tmp_path / "x.qcow2", "8M")))

    assert Image.objects.get(name="detected-iso").disk_format == "iso"
    assert Image.objects.get(name="detected-qcow2").disk_format == "qcow2"


def test_register_image_twice_with_the_same_file_changes_nothing(settings, tmp_path, capsys):
    disk = make_qcow2(tmp_path / "disk.qcow2", "8M")
    call_command("register_image", "again", str(disk))
    first = Image.objects.get(name="again")
    Image.objects.filter(pk=first.pk).update(active=False)

    call_command("register_image", "again", str(disk))

    assert "already registered" in capsys.readouterr().out
    assert Image.objects.filter(name="again").count() == 1
    again = Image.objects.get(name="again")
    assert (again.pk, again.reference, again.active) == (first.pk, first.reference, True)
    assert [p.relative_to(settings.LAB_VM_IMAGE_DIR) for p in settings.LAB_VM_IMAGE_DIR.rglob("*") if p.is_file()] == [
        Path(first.reference).relative_to(settings.LAB_VM_IMAGE_DIR)
    ]


def test_register_image_refuses_other_contents_under_a_taken_name(settings, tmp_path):
    call_command("register_image", "taken", str(make_qcow2(tmp_path / "a.qcow2", "8M")))
    original = Image.objects.get(name="taken")

    with pytest.raises(CommandError, match="already exists with other contents"):
        call_command("register_image", "taken", str(make_qcow2(tmp_path / "b.qcow2", "16M")))

    assert Image.objects.get(name="taken").sha256 == original.sha256
    assert len(list(settings.LAB_VM_IMAGE_DIR.iterdir())) == 1


def test_register_image_fills_in_the_image_a_lab_import_left_waiting_for_its_disk(settings, tmp_path):
    # import_lab creates a VM lab's image as an inactive row with no disk (the demo VM lab).
    waiting = Image.objects.create(name="tiny-vm", kind=Image.Kind.VM, description="From lab.yaml", active=False)
    disk = make_qcow2(tmp_path / "disk.qcow2", "8M")

    call_command("register_image", "tiny-vm", str(disk))

    image = Image.objects.get(name="tiny-vm")
    assert image.pk == waiting.pk
    assert (image.active, image.disk_format, image.sha256) == (True, "qcow2", sha256_of(disk))
    assert image.description == "From lab.yaml"
    assert Path(image.reference).read_bytes() == disk.read_bytes()
    # Once filled in, it is a base like any other: other contents are refused.
    with pytest.raises(CommandError, match="already exists with other contents"):
        call_command("register_image", "tiny-vm", str(make_qcow2(tmp_path / "other.qcow2", "16M")))


def test_register_image_refuses_a_bad_file_and_keeps_nothing(settings, tmp_path):
    base = make_qcow2(tmp_path / "base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))

    with pytest.raises(CommandError, match="has a backing file"):
        call_command("register_image", "sneaky", str(overlay))

    assert not Image.objects.filter(name="sneaky").exists()
    assert list(settings.LAB_VM_IMAGE_DIR.iterdir()) == []


def test_register_image_with_link_hard_links_a_file_of_the_platforms_own_user(settings, tmp_path):
    disk = make_qcow2(tmp_path / "linked.qcow2", "8M")
    disk.chmod(0o644)

    call_command("register_image", "linked", str(disk), "--link")

    image = Image.objects.get(name="linked")
    stored = Path(image.reference)
    assert stored.stat().st_ino == disk.stat().st_ino
    assert stat.S_IMODE(stored.stat().st_mode) == 0o444
    assert image.sha256 == sha256_of(stored)


@pytest.mark.parametrize("how", ["another user's file", "a file others may write", "a file its group may write"])
def test_register_image_refuses_to_link_a_file_someone_else_could_change(settings, tmp_path, how):
    """A hard link shares the inode: whoever may write the original could change the base after it
    was checked and hashed (its owner by chmod-ing it back), so only the platform's own files link."""
    nobody = pwd.getpwnam("nobody")
    disk = make_qcow2(tmp_path / "theirs.qcow2", "8M")
    if how == "another user's file":
        os.chown(disk, nobody.pw_uid, nobody.pw_gid)
        disk.chmod(0o644)
        expected = "owned by the platform's user"
    else:
        disk.chmod(0o646 if how == "a file others may write" else 0o664)
        expected = "writable by its group or by others"
    before = disk.stat()

    with pytest.raises(CommandError, match=expected):
        call_command("register_image", "theirs", str(disk), "--link")

    assert not Image.objects.filter(name="theirs").exists()
    assert [p for p in settings.LAB_VM_IMAGE_DIR.rglob("*")] == []
    after = disk.stat()
    assert (after.st_nlink, after.st_mode, after.st_uid) == (1, before.st_mode, before.st_uid)  # left as it was
    # Copying stays possible: the copy is the platform's, whatever happens to the original.
    call_command("register_image", "theirs", str(disk))
    stored = Path(Image.objects.get(name="theirs").reference)
    assert stored.stat().st_ino != disk.stat().st_ino
    assert stored.stat().st_uid == os.geteuid()


def test_register_image_refuses_a_name_that_is_not_a_slug(tmp_path):
    with pytest.raises(CommandError, match="not a valid image name"):
        call_command("register_image", "no spaces", str(make_qcow2(tmp_path / "d.qcow2", "8M")))


def test_an_admin_upload_is_hashed_while_it_streams_not_read_again(staff_client, tmp_path, monkeypatch):
    from labs import vm_images

    def second_pass(path):
        raise AssertionError(f"{path} was read again to hash it")

    monkeypatch.setattr(vm_images, "hash_file", second_pass)
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(3 * 1024 * 1024))

    response = upload(staff_client, disk, "streamed", "raw")

    assert response.status_code == 302
    assert Image.objects.get(name="streamed").sha256 == sha256_of(disk)


def test_register_image_brings_the_kernel_files_of_an_image_directory_along(settings, tmp_path):
    folder = tmp_path / "testvm"
    folder.mkdir()
    make_qcow2(folder / "disk.qcow2", "8M")
    (folder / "vmlinuz").write_bytes(b"kernel")
    (folder / "initrd.img").write_bytes(b"initramfs")
    (folder / "cmdline").write_text("console=ttyS0\n")
    (folder / "notes.txt").write_text("not part of the image")

    call_command("register_image", "kernel-vm", str(folder / "disk.qcow2"))

    stored = Path(Image.objects.get(name="kernel-vm").reference)
    assert stored.name == "disk.qcow2"
    assert sorted(p.name for p in stored.parent.iterdir()) == ["cmdline", "disk.qcow2", "initrd.img", "vmlinuz"]
    assert (stored.parent / "vmlinuz").read_bytes() == b"kernel"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in stored.parent.iterdir())
