"""Session verbs with the job queue gone (Redis killed): each says so and changes nothing.

The queue is a redis-server of the test's own, killed before the request (tests/redis_server.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from accounts.models import UserQuota
from jobqueue.queueing import QUEUE_UNAVAILABLE
from labs.models import Image, Lab
from runners import get_runner
from runners.fake import FakeRunner
from sessions_app.models import Session, State
from sessions_app.specs import spec_for
from vms import snapshots
from vms.models import Snapshot

pytestmark = pytest.mark.django_db


class SnapshottingFakeRunner(FakeRunner):
    """The in-memory runner with the snapshot verb of the VM runners (it writes an empty file)."""

    can_snapshot = True

    def snapshot(self, state: dict[str, Any], path: str, include_memory: bool = False) -> None:
        Path(path).write_bytes(b"")


@pytest.fixture
def vm_lab(settings, tmp_path, container_image):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "fake-vm": {
        "BACKEND": f"{__name__}.SnapshottingFakeRunner", "OPTIONS": {},
    }}
    settings.LAB_SNAPSHOT_DIR = tmp_path / "snapshots"
    disk = Image.objects.create(name="disk", kind=Image.Kind.VM, disk_format=Image.DiskFormat.QCOW2)
    return Lab.objects.create(slug="vm", title="VM", image=disk, runner="fake-vm", published=True)


def running(user, lab) -> Session:
    """A running session whose environment the in-memory runner holds."""
    session = Session.objects.create(user=user, lab=lab, runner_name=lab.runner, state=State.RUNNING)
    result = get_runner(lab.runner).start(spec_for(session))
    Session.objects.filter(pk=session.pk).update(runner_state=result.state)
    session.refresh_from_db()
    return session


def page(response) -> str:
    assert response.status_code == 200  # after the redirect: a page with the message, never a 500
    return response.content.decode()


def test_start_says_the_queue_is_unavailable_and_starts_nothing(queue_down, owner_client, lab):
    response = owner_client.post(reverse("labs:start", args=[lab.slug]), follow=True)
    assert QUEUE_UNAVAILABLE in page(response)
    assert response.redirect_chain[-1][0] == lab.get_absolute_url()
    assert not Session.objects.exists()


def test_stop_says_the_queue_is_unavailable_and_the_session_keeps_running(queue_down, owner, owner_client, lab):
    session = running(owner, lab)
    response = owner_client.post(reverse("sessions:stop", args=[session.pk]), follow=True)
    assert QUEUE_UNAVAILABLE in page(response)
    session.refresh_from_db()
    assert (session.state, session.end_reason) == (State.RUNNING, "")


def test_staff_stopping_sessions_in_the_admin_are_told_and_nothing_stops(queue_down, client, staff_user, owner,
                                                                          lab):
    sessions = [running(owner, lab) for _ in range(3)]
    client.force_login(staff_user)
    response = client.post(reverse("admin:sessions_app_session_changelist"),
                           {"action": "stop_sessions", "_selected_action": [s.pk for s in sessions]}, follow=True)
    assert page(response).count(QUEUE_UNAVAILABLE) == 1  # said once, not once per session
    assert set(Session.objects.values_list("state", flat=True)) == {State.RUNNING}


def test_a_snapshot_is_refused_before_anything_is_reserved(queue_down, owner, owner_client, vm_lab):
    session = running(owner, vm_lab)
    response = owner_client.post(reverse("sessions:snapshots:create", args=[session.pk]), follow=True)
    assert QUEUE_UNAVAILABLE in page(response)
    assert not Snapshot.objects.exists()
    assert UserQuota.for_user(owner).snapshot_stored_bytes == 0


def test_a_snapshot_whose_job_could_not_be_queued_fails_at_once_and_gives_its_reservation_back(
    queues_on_own_redis, owner, vm_lab, django_capture_on_commit_callbacks
):
    session = running(owner, vm_lab)
    with django_capture_on_commit_callbacks(execute=True):  # the commit, in this test's transaction
        snapshot = snapshots.create_snapshot(owner, session)
        queues_on_own_redis.kill()  # after the check, before the commit queues the job
    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.error) == (Snapshot.Status.FAILED, QUEUE_UNAVAILABLE)
    assert UserQuota.for_user(owner).snapshot_stored_bytes == 0


def test_booting_an_iso_or_a_snapshot_is_refused_and_starts_nothing(queue_down, owner, owner_client, vm_lab,
                                                                     tmp_path):
    iso = Image.objects.create(name="my-iso", kind=Image.Kind.VM, disk_format=Image.DiskFormat.ISO, owner=owner)
    disk = tmp_path / "snap.qcow2"
    disk.write_bytes(b"")
    snapshot = Snapshot.objects.create(owner=owner, lab=vm_lab, name="s", path=str(disk),
                                       status=Snapshot.Status.READY)
    iso_page = owner_client.post(reverse("sessions:isos:boot", args=[iso.pk]), {"lab": vm_lab.slug}, follow=True)
    snapshot_page = owner_client.post(reverse("sessions:snapshots:boot", args=[snapshot.pk]), follow=True)
    assert QUEUE_UNAVAILABLE in page(iso_page)
    assert QUEUE_UNAVAILABLE in page(snapshot_page)
    assert not Session.objects.exists()
