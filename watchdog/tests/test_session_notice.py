"""The session page tells the learner when their session is near its memory or disk limit: an open
session alert, with the latest sampled figure."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from runners import fake
from sessions_app.models import Session, State
from watchdog.models import Alert, SessionSample
from watchdog.tests.conftest import use_disk

pytestmark = pytest.mark.django_db


def status_of(client, session: Session) -> str:
    response = client.get(reverse("sessions:status", args=[session.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def open_alert(session: Session, kind: str, level: str = "warning", value: float = 95) -> Alert:
    now = timezone.now()
    return Alert.objects.create(kind=kind, subject=str(session.pk), session=session, level=level, value=value,
                                threshold=90, message="test", first_seen=now, last_seen=now)


def sample(session: Session, memory_mb: int, limit_mb: int = 512, disk: tuple[int, int] | None = None) -> None:
    SessionSample.objects.update_or_create(session=session, defaults={
        "cpu_percent": 3.0, "memory_bytes": memory_mb << 20, "memory_limit_bytes": limit_mb << 20,
        "disk_used_bytes": disk[0] << 20 if disk else None, "disk_total_bytes": disk[1] << 20 if disk else None,
        "sampled_at": timezone.now()})


def test_the_owner_reads_how_full_their_sessions_memory_is(owner_client, running_session):
    open_alert(running_session, "session_memory", "critical", value=96)
    sample(running_session, 487)
    html = status_of(owner_client, running_session)
    assert "Your session is at 95% of its memory limit (487 of 512 MB)." in html  # the latest sample's figure
    assert 'data-resource-notice="memory"' in html and "notice-error" in html
    assert "Your session is at 95% of its memory limit" in owner_client.get(running_session.get_absolute_url()
                                                                             ).content.decode()


def test_without_a_sample_the_alerts_figure_is_shown(owner_client, running_session):
    open_alert(running_session, "session_memory", value=93.4)
    html = status_of(owner_client, running_session)
    assert "Your session is at 93% of its memory limit." in html and "notice-warning" in html


def test_nothing_is_said_without_an_open_alert(owner_client, running_session):
    sample(running_session, 500)  # a high figure alone is not an alert: the window has not passed
    resolved = open_alert(running_session, "session_memory")
    Alert.objects.filter(pk=resolved.pk).update(status="resolved")
    assert "data-resource-notice" not in status_of(owner_client, running_session)


def test_staff_read_it_as_this_session_and_other_learners_see_nothing(client, running_session, staff_user,
                                                                      other_learner):
    open_alert(running_session, "session_memory")
    sample(running_session, 490)
    client.force_login(staff_user)
    assert "This session is at 96% of its memory limit" in status_of(client, running_session)
    client.force_login(other_learner)
    assert client.get(reverse("sessions:status", args=[running_session.pk])).status_code == 404


def test_the_disk_is_told_once_where_the_page_already_shows_it(owner_client, running_session):
    open_alert(running_session, "session_disk")
    sample(running_session, 10, disk=(93, 100))
    use_disk(running_session, 93)  # the runner reports the disk: the page's own notice says it
    html = status_of(owner_client, running_session)
    assert "nearly full: 93 of 100 MB used" in html and "data-resource-notice" not in html

    # The page cannot read the disk now (the runner stopped reporting it): the alert's notice says it.
    fake.ENVIRONMENTS[running_session.runner_state["env_id"]].pop("disk_used")
    html = status_of(owner_client, running_session)
    assert "Your session is at 93% of its disk limit (93 of 100 MB)." in html
    assert "No space left on device" in html


def test_an_ended_session_shows_no_notice(owner_client, running_session):
    open_alert(running_session, "session_memory")
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPED)
    assert "data-resource-notice" not in status_of(owner_client, running_session)


@pytest.mark.django_db(transaction=True)  # the stream reads in other threads
async def test_an_open_page_shows_the_notice_when_the_alert_opens_and_drops_it_when_it_resolves(
        async_client, owner, running_session, settings):
    # The session stays running: only the alert tells the page's event stream to render its status anew.
    from asgiref.sync import sync_to_async

    from sessions_app.tests.test_session_stream import open_stream
    from watchdog import actions
    from watchdog.sampling import Reading

    settings.LAB_STREAM_RECHECK_SECONDS = 600  # only the watchdog's notice can deliver in time
    settings.LAB_STREAM_HEARTBEAT_SECONDS = 600
    events = await open_stream(async_client, owner, running_session)
    try:
        first = (await events.until("state"))[-1]["data"]
        assert first["state"] == "running" and "data-resource-notice" not in first["html"]
        await sync_to_async(sample)(running_session, 490)
        reading = Reading(kind="session_memory", subject=str(running_session.pk), value=96.0, detail="490 of 512 MB",
                          label="session", session_id=running_session.pk)
        alert = await sync_to_async(actions.open_alert)(reading, "critical", 95, timezone.now())
        shown = await events.next(timeout=3)
        assert shown["kind"] == "state" and shown["data"]["state"] == "running"
        assert "Your session is at 96% of its memory limit" in shown["data"]["html"]

        await sync_to_async(actions.resolve_alert)(alert, timezone.now(), "back under")
        dropped = await events.next(timeout=3)
        assert dropped["kind"] == "state" and "data-resource-notice" not in dropped["data"]["html"]
    finally:
        await events.close()
