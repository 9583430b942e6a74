"""The session page tells the learner how full their disk is, and says so plainly when it is full."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runners import fake, get_runner
from sessions_app.models import Session, State
from sessions_app.specs import spec_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def running_session(owner, lab) -> Session:
    lab.disk_mb = 100
    lab.save()
    session = Session.objects.create(user=owner, lab=lab, state=State.REQUESTED, runner_name="fake")
    spec = spec_for(session)
    result = get_runner("fake").start(spec)
    Session.objects.filter(pk=session.pk).update(state=State.RUNNING, runner_state=result.state)
    session.refresh_from_db()
    return session


def use_disk(session: Session, megabytes: int) -> None:
    fake.ENVIRONMENTS[session.runner_state["env_id"]]["disk_used"] = megabytes << 20


def status_of(client, session: Session) -> str:
    return client.get(reverse("sessions:status", args=[session.pk]), HTTP_HX_REQUEST="true").content.decode()


def test_a_full_disk_is_announced_with_what_to_do(owner_client, running_session):
    use_disk(running_session, 100)
    html = status_of(owner_client, running_session)
    assert "Your session's disk is full (100 MB)" in html
    assert "No space left on device" in html and "Delete files" in html
    assert 'data-disk-level="full"' in html
    assert "Your session's disk is full" in owner_client.get(running_session.get_absolute_url()).content.decode()


def test_a_nearly_full_disk_warns_and_a_roomy_one_only_shows_its_use(owner_client, running_session):
    use_disk(running_session, 93)
    assert "nearly full: 93 of 100 MB used" in status_of(owner_client, running_session)
    use_disk(running_session, 12)
    html = status_of(owner_client, running_session)
    assert "Disk: 12 of 100 MB used." in html and "notice-warning" not in html


def test_the_heartbeat_reports_the_disks_level_so_the_page_can_refresh(owner_client, running_session):
    use_disk(running_session, 100)
    data = owner_client.post(reverse("sessions:heartbeat", args=[running_session.pk])).json()
    assert data["disk"] == {"used_mb": 100, "total_mb": 100, "level": "full"}


def test_nothing_is_shown_where_the_runner_does_not_limit_the_disk(owner_client, running_session):
    html = status_of(owner_client, running_session)
    assert "data-disk-notice" not in html
    data = owner_client.post(reverse("sessions:heartbeat", args=[running_session.pk])).json()
    assert data["disk"] is None
