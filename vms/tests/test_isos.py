"""A learner's own ISOs: streamed upload within the size and count limits, delete, boot a VM lab from one."""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from django.test import Client

from labs.models import Image, Lab
from runners import fake, get_runner
from sessions_app.models import Session, State
from tests.vm_image import build_boot_iso, console_until
from vms.tests.test_snapshots import qemu_runner, vm_image, vm_lab  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

LIST_URL = "/sessions/isos/"
UPLOAD_URL = "/sessions/isos/upload/"


@pytest.fixture(autouse=True)
def iso_settings(settings, tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is required for the ISO tests (apt-get install qemu-utils)")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "upload-tmp").mkdir()
    settings.LAB_ISO_MAX_BYTES = 256 * 1024
    settings.LAB_ISO_PER_USER = 2
    return tmp_path


def iso_bytes(size: int = 64 * 1024, label: bytes = b"") -> bytes:
    """A minimal ISO 9660 layout: a primary volume descriptor and the set terminator."""
    data = bytearray(size)
    data[0x8000:0x8007] = b"\x01CD001\x01"
    data[0x8028:0x8028 + len(label)] = label
    data[0x8800:0x8807] = b"\xffCD001\x01"
    return bytes(data)


def post_iso(client: Client, tmp_path: Path, data: bytes, name: str = "live.iso"):
    path = tmp_path / name
    path.write_bytes(data)
    with open(path, "rb") as f:
        return client.post(UPLOAD_URL, {"file": f}, follow=True)


def nothing_kept(tmp_path: Path) -> bool:
    images = tmp_path / "media" / "images"
    files = [p for p in images.rglob("*") if p.is_file()] if images.exists() else []
    return files == [] and list((tmp_path / "upload-tmp").iterdir()) == []


@pytest.fixture
def fake_vm_lab(db):
    """A VM lab on the in-memory runner, for what happens above the runner."""
    disk = Image.objects.create(name="vm-disk", kind=Image.Kind.VM, reference="/var/lib/labs/vm/disk.qcow2",
                                disk_format="qcow2")
    return Lab.objects.create(slug="vm-lab", title="VM lab", image=disk, runner="fake", published=True,
                              consoles=["terminal"])


def test_a_learner_uploads_an_iso_that_is_stored_read_only_with_its_sha256(owner_client, owner, tmp_path):
    data = iso_bytes(label=b"MY-LIVE-CD")

    response = post_iso(owner_client, tmp_path, data, "my-live.iso")

    iso = Image.objects.get(owner=owner)
    assert (iso.kind, iso.disk_format, iso.active) == ("vm", "iso", True)
    assert iso.sha256 == hashlib.sha256(data).hexdigest()
    assert iso.size_bytes == len(data)
    assert iso.description == "my-live.iso"
    assert Path(iso.file.path).read_bytes() == data
    assert stat.S_IMODE(Path(iso.file.path).stat().st_mode) == 0o444
    assert "my-live.iso" in response.content.decode()


def test_an_iso_over_the_size_limit_is_refused_and_nothing_is_kept(owner_client, owner, tmp_path):
    response = post_iso(owner_client, tmp_path, iso_bytes(size=512 * 1024))

    assert "larger than the limit of 256.0" in response.content.decode()
    assert not Image.objects.filter(owner=owner).exists()
    assert nothing_kept(tmp_path)


def test_a_file_that_is_not_an_iso_is_refused_and_nothing_is_kept(owner_client, owner, tmp_path):
    response = post_iso(owner_client, tmp_path, b"MZ not an iso at all" * 100, "setup.iso")

    assert "not an ISO 9660 image" in response.content.decode()
    assert not Image.objects.filter(owner=owner).exists()
    assert nothing_kept(tmp_path)


def test_a_learner_cannot_keep_more_isos_than_the_limit(owner_client, owner, tmp_path):
    post_iso(owner_client, tmp_path, iso_bytes(label=b"ONE"), "one.iso")
    post_iso(owner_client, tmp_path, iso_bytes(label=b"TWO"), "two.iso")

    response = post_iso(owner_client, tmp_path, iso_bytes(label=b"THREE"), "three.iso")

    assert "You already have 2 ISO image(s) (limit 2)" in response.content.decode()
    assert Image.objects.filter(owner=owner).count() == 2
    assert len(list((tmp_path / "media" / "images").iterdir())) == 2


def test_the_count_limit_is_per_learner(owner_client, other_learner, tmp_path, settings):
    settings.LAB_ISO_PER_USER = 1
    other = Client()
    other.force_login(other_learner)
    post_iso(other, tmp_path, iso_bytes(label=b"OSCAR"), "oscar.iso")

    post_iso(owner_client, tmp_path, iso_bytes(label=b"OLIVIA"), "olivia.iso")

    assert Image.objects.filter(disk_format="iso").count() == 2


def test_uploading_without_the_csrf_token_is_forbidden(owner, tmp_path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    path = tmp_path / "csrf.iso"
    path.write_bytes(iso_bytes())

    with open(path, "rb") as f:
        response = client.post(UPLOAD_URL, {"file": f})

    assert response.status_code == 403
    assert not Image.objects.filter(owner=owner).exists()


def test_a_learner_deletes_their_iso_and_its_file(owner_client, owner, tmp_path, django_capture_on_commit_callbacks):
    post_iso(owner_client, tmp_path, iso_bytes())
    iso = Image.objects.get(owner=owner)
    stored = Path(iso.file.path)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/sessions/isos/{iso.pk}/delete/", follow=True)

    assert response.status_code == 200
    assert not Image.objects.filter(pk=iso.pk).exists()
    assert not stored.exists()


def test_booting_an_iso_starts_the_vm_lab_with_the_iso_instead_of_its_disk(
    owner_client, owner, fake_vm_lab, tmp_path, django_capture_on_commit_callbacks
):
    post_iso(owner_client, tmp_path, iso_bytes())
    iso = Image.objects.get(owner=owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/sessions/isos/{iso.pk}/boot/", {"lab": fake_vm_lab.slug})

    session = Session.objects.get(user=owner)
    session.refresh_from_db()
    assert response.status_code == 302
    assert response["Location"] == session.get_absolute_url()
    assert session.boot_iso == iso
    assert session.state == State.RUNNING
    (env,) = fake.ENVIRONMENTS.values()
    assert env["spec"].image == iso.file.path
    assert env["spec"].image_kind == "iso"


def test_an_iso_in_use_by_a_live_session_cannot_be_deleted(owner_client, owner, fake_vm_lab, tmp_path):
    post_iso(owner_client, tmp_path, iso_bytes())
    iso = Image.objects.get(owner=owner)
    owner_client.post(f"/sessions/isos/{iso.pk}/boot/", {"lab": fake_vm_lab.slug})

    response = owner_client.post(f"/sessions/isos/{iso.pk}/delete/", follow=True)

    assert "stop it first" in response.content.decode()
    assert Image.objects.filter(pk=iso.pk).exists()


def test_an_iso_cannot_boot_a_container_lab(owner_client, owner, lab, tmp_path):
    post_iso(owner_client, tmp_path, iso_bytes())
    iso = Image.objects.get(owner=owner)

    response = owner_client.post(f"/sessions/isos/{iso.pk}/boot/", {"lab": lab.slug})

    assert response.status_code == 404
    assert not Session.objects.filter(user=owner).exists()


def test_outsiders_get_404_for_someone_elses_iso(owner_client, owner, other_learner, fake_vm_lab, tmp_path):
    post_iso(owner_client, tmp_path, iso_bytes())
    iso = Image.objects.get(owner=owner)
    outsider = Client()
    outsider.force_login(other_learner)

    assert outsider.post(f"/sessions/isos/{iso.pk}/delete/").status_code == 404
    assert outsider.post(f"/sessions/isos/{iso.pk}/boot/", {"lab": fake_vm_lab.slug}).status_code == 404
    assert iso.description not in outsider.get(LIST_URL).content.decode()
    assert Image.objects.filter(pk=iso.pk).exists()
    assert not Session.objects.filter(user=other_learner).exists()


def test_the_iso_pages_need_a_signed_in_user(client):
    assert client.get(LIST_URL).status_code == 302
    assert client.post(UPLOAD_URL).status_code == 302


def test_the_iso_page_lists_the_vm_labs_to_boot_in(owner_client, fake_vm_lab, lab, tmp_path):
    post_iso(owner_client, tmp_path, iso_bytes())

    page = owner_client.get(LIST_URL).content.decode()

    assert f'value="{fake_vm_lab.slug}"' in page
    assert f'value="{lab.slug}"' not in page


def test_a_learner_boots_their_own_iso_in_a_real_vm(owner_client, owner, vm_lab, tmp_path, settings,  # noqa: F811
                                                     django_capture_on_commit_callbacks):
    settings.LAB_ISO_MAX_BYTES = 1024 * 1024
    iso_file = build_boot_iso(tmp_path / "hello.iso", b"HELLO FROM MY OWN ISO\r\n")
    with open(iso_file, "rb") as f:
        owner_client.post(UPLOAD_URL, {"file": f})
    iso = Image.objects.get(owner=owner)

    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(f"/sessions/isos/{iso.pk}/boot/", {"lab": vm_lab.slug})

    session = Session.objects.get(user=owner)
    assert (session.state, session.boot_iso) == (State.RUNNING, iso), session.error
    terminal = get_runner(session.runner_name).open_terminal(session.runner_state)
    try:
        console_until(terminal, b"HELLO FROM MY OWN ISO", timeout=90)
    finally:
        terminal.close()


def test_an_iso_a_snapshot_was_taken_with_cannot_be_deleted_before_the_snapshot(
    owner_client, owner, vm_lab, tmp_path, settings, django_capture_on_commit_callbacks  # noqa: F811
):
    from sessions_app import actions
    from vms import actions as vm_actions
    from vms import snapshots

    settings.LAB_ISO_MAX_BYTES = 1024 * 1024
    with open(build_boot_iso(tmp_path / "hello.iso"), "rb") as f:
        owner_client.post(UPLOAD_URL, {"file": f})
    iso = Image.objects.get(owner=owner)
    with django_capture_on_commit_callbacks(execute=True):
        session = vm_actions.start_session_from_iso(owner, iso, vm_lab)
    session.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = snapshots.create_snapshot(owner, session, "installer half way")
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.includes_memory) == ("ready", True), snapshot.error

    response = owner_client.post(f"/sessions/isos/{iso.pk}/delete/", follow=True)

    assert "“installer half way” was taken with this ISO inserted" in response.content.decode()
    assert Image.objects.filter(pk=iso.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        snapshots.delete_snapshot(owner, snapshot)
        owner_client.post(f"/sessions/isos/{iso.pk}/delete/")
    assert not Image.objects.filter(pk=iso.pk).exists()
