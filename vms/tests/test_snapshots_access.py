"""Snapshot pages: a learner sees and acts on their own snapshots only; everyone else gets 404."""

from __future__ import annotations

import uuid

import pytest
from django.db.models import F
from django.test import Client

from accounts.models import UserQuota
from labs.models import Image, Lab
from runners import fake
from sessions_app.models import Session, State
from vms import snapshots
from vms.models import Snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def snapshot_dir(settings, tmp_path):
    settings.LAB_SNAPSHOT_DIR = tmp_path / "snapshots"
    return settings.LAB_SNAPSHOT_DIR


@pytest.fixture
def vm_lab(db):
    disk = Image.objects.create(name="vm-disk", kind=Image.Kind.VM, reference="/var/lib/labs/vm/disk.qcow2",
                                disk_format="qcow2")
    return Lab.objects.create(slug="vm-lab", title="VM lab", image=disk, runner="fake", published=True)


@pytest.fixture
def ready_snapshot(owner, vm_lab):
    snapshot_id = uuid.uuid4()
    disk = snapshots.user_dir(owner.pk) / f"{snapshot_id}.qcow2"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"q" * 6000)
    session = Session.objects.create(user=owner, lab=vm_lab, runner_name="fake", state=State.STOPPED)
    snapshot = Snapshot.objects.create(id=snapshot_id, owner=owner, lab=vm_lab, source_session=session,
                                       name="before the exam", path=str(disk), size_bytes=6000,
                                       status=Snapshot.Status.READY)
    UserQuota.for_user(owner)
    UserQuota.objects.filter(user=owner).update(snapshot_stored_bytes=F("snapshot_stored_bytes") + 6000)
    return snapshot


@pytest.fixture
def outsider(other_learner):
    client = Client()
    client.force_login(other_learner)
    return client


def test_the_list_shows_my_snapshots_and_my_quota(owner_client, ready_snapshot):
    page = owner_client.get("/sessions/snapshots/").content.decode()

    assert "before the exam" in page
    assert 'data-quota-used="6000"' in page


def test_an_outsider_does_not_see_my_snapshots(outsider, ready_snapshot):
    page = outsider.get("/sessions/snapshots/").content.decode()

    assert "before the exam" not in page


def test_outsiders_get_404_on_every_snapshot_view(outsider, other_learner, owner, vm_lab, ready_snapshot,
                                                  django_capture_on_commit_callbacks):
    live = Session.objects.create(user=owner, lab=vm_lab, runner_name="fake", state=State.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):
        responses = [
            outsider.post(f"/sessions/snapshots/create/{live.pk}/", {"name": "mine now"}),
            outsider.get(f"/sessions/snapshots/panel/{live.pk}/"),
            outsider.post(f"/sessions/snapshots/{ready_snapshot.pk}/boot/"),
            outsider.post(f"/sessions/snapshots/{ready_snapshot.pk}/delete/"),
        ]

    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [ready_snapshot.pk]
    assert not Session.objects.filter(user=other_learner).exists()
    assert UserQuota.objects.get(user=owner).snapshot_stored_bytes == 6000


def test_anonymous_visitors_are_sent_to_sign_in(client, ready_snapshot):
    assert client.get("/sessions/snapshots/").status_code == 302
    assert client.post(f"/sessions/snapshots/{ready_snapshot.pk}/delete/").status_code == 302
    assert Snapshot.objects.filter(pk=ready_snapshot.pk).exists()


def test_deleting_a_snapshot_removes_its_files_and_releases_exactly_its_bytes(
    owner_client, owner, ready_snapshot, django_capture_on_commit_callbacks
):
    files = snapshots.snapshot_files(ready_snapshot)

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/sessions/snapshots/{ready_snapshot.pk}/delete/")

    assert response.status_code == 302
    assert not Snapshot.objects.filter(pk=ready_snapshot.pk).exists()
    assert files and not any(p.exists() for p in files)
    assert UserQuota.objects.get(user=owner).snapshot_stored_bytes == 0


def test_booting_a_snapshot_starts_its_lab_from_the_snapshot_disk(owner_client, owner, ready_snapshot,
                                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/sessions/snapshots/{ready_snapshot.pk}/boot/")

    session = Session.objects.get(user=owner, boot_snapshot=ready_snapshot)
    assert response["Location"] == session.get_absolute_url()
    assert session.state == State.RUNNING
    (env,) = fake.ENVIRONMENTS.values()
    assert env["spec"].image == ready_snapshot.path


def test_a_snapshot_a_live_session_runs_from_cannot_be_deleted(owner_client, owner, ready_snapshot,
                                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(f"/sessions/snapshots/{ready_snapshot.pk}/boot/")

    response = owner_client.post(f"/sessions/snapshots/{ready_snapshot.pk}/delete/", follow=True)

    assert "stop it first" in response.content.decode()
    assert Snapshot.objects.filter(pk=ready_snapshot.pk).exists()
    assert UserQuota.objects.get(user=owner).snapshot_stored_bytes == 6000


def test_a_container_lab_session_cannot_be_snapshotted(owner_client, owner, lab):
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING)

    response = owner_client.post(f"/sessions/snapshots/create/{session.pk}/", follow=True)

    assert "Only virtual machine labs can be snapshotted" in response.content.decode()
    assert not Snapshot.objects.exists()


def test_staff_may_look_at_the_panel_but_not_snapshot_a_learners_session(staff_user, owner, vm_lab):
    session = Session.objects.create(user=owner, lab=vm_lab, runner_name="fake", state=State.RUNNING)
    staff = Client()
    staff.force_login(staff_user)

    assert staff.get(f"/sessions/snapshots/panel/{session.pk}/").status_code == 200
    response = staff.post(f"/sessions/snapshots/create/{session.pk}/", follow=True)

    assert "Only the learner who owns this session" in response.content.decode()
    assert not Snapshot.objects.exists()


def test_the_panel_offers_the_owner_a_snapshot_of_a_running_vm(owner_client, owner, vm_lab, ready_snapshot):
    session = ready_snapshot.source_session
    Session.objects.filter(pk=session.pk).update(state=State.RUNNING)

    page = owner_client.get(f"/sessions/snapshots/panel/{session.pk}/").content.decode()

    assert f'action="/sessions/snapshots/create/{session.pk}/"' in page
    assert "Saves the disk and the memory" in page
    assert "before the exam" in page


def test_the_panel_is_empty_for_a_container_lab(owner_client, owner, lab):
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING)

    page = owner_client.get(f"/sessions/snapshots/panel/{session.pk}/").content.decode()

    assert page.strip() == ""
