"""Passes of the watchdog over running sessions (the in-memory runner, its disk figure set by the test):
alerts open after the window, follow the figure, resolve, and survive a restart; samples are kept."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from sessions_app.models import Session, State
from watchdog.models import Alert, SessionSample
from watchdog.tests.conftest import use_disk

pytestmark = pytest.mark.django_db

DISK = {"session_disk": {"warning": 90, "critical": 98, "window_seconds": 30, "clear_margin": 10}}


def disk_alerts(session: Session):
    return Alert.objects.filter(kind="session_disk", subject=str(session.pk))


def test_a_session_disk_alert_opens_after_the_window_and_resolves_after_the_clear_window(
        running_session, make_watchdog, caplog):
    watchdog = make_watchdog(**DISK)
    t0 = timezone.now()
    use_disk(running_session, 95)
    with caplog.at_level(logging.INFO, logger="watchdog"):
        assert watchdog.run_once(t0).opened == []
        assert not disk_alerts(running_session).exists()
        report = watchdog.run_once(t0 + timedelta(seconds=30))
    assert report.opened == [f"session_disk {running_session.pk}"]
    alert = disk_alerts(running_session).get()
    assert (alert.level, alert.status, alert.session, alert.threshold) == ("warning", "open", running_session, 90)
    assert alert.value == pytest.approx(95)
    assert alert.first_seen == alert.last_seen == t0 + timedelta(seconds=30)
    assert "95 MiB of 100 MiB" in alert.message and running_session.lab.slug in alert.message
    assert f"alert {alert.pk} [warning] Session disk opened: 95% on session {running_session.pk}" in caplog.text

    # Still high: the same alert, its figure and last sighting follow.
    use_disk(running_session, 99)
    watchdog.run_once(t0 + timedelta(seconds=40))
    alert.refresh_from_db()
    assert (alert.value, alert.last_seen, alert.level) == (pytest.approx(99), t0 + timedelta(seconds=40), "warning")
    watchdog.run_once(t0 + timedelta(seconds=70))  # 99 since 40 s: critical
    alert.refresh_from_db()
    assert (alert.level, alert.threshold) == ("critical", 98)

    use_disk(running_session, 85)  # below 88 (98 - margin), not below 80: back to warning only
    watchdog.run_once(t0 + timedelta(seconds=80))
    watchdog.run_once(t0 + timedelta(seconds=110))
    alert.refresh_from_db()
    assert (alert.level, alert.status) == ("warning", "open")

    use_disk(running_session, 10)
    watchdog.run_once(t0 + timedelta(seconds=120))
    assert disk_alerts(running_session).get().status == "open"
    report = watchdog.run_once(t0 + timedelta(seconds=150))
    assert report.resolved == [f"session_disk {running_session.pk}"]
    alert.refresh_from_db()
    assert (alert.status, alert.resolved_at, alert.value) == ("resolved", t0 + timedelta(seconds=150),
                                                               pytest.approx(10))
    assert disk_alerts(running_session).count() == 1  # one alert all along


def test_each_pass_keeps_the_latest_figures_of_running_sessions_only(running_session, make_watchdog, lab, owner):
    watchdog = make_watchdog()
    use_disk(running_session, 12)
    now = timezone.now()
    watchdog.run_once(now)
    sample = SessionSample.objects.get(session=running_session)
    assert (sample.memory_bytes, sample.memory_limit_bytes) == (1 << 20, 128 << 20)  # the fake runner's figures
    assert (sample.disk_used_bytes, sample.disk_total_bytes, sample.sampled_at) == (12 << 20, 100 << 20, now)
    use_disk(running_session, 30)
    watchdog.run_once(now + timedelta(seconds=30))
    assert SessionSample.objects.get(session=running_session).disk_used_bytes == 30 << 20
    assert SessionSample.objects.count() == 1

    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPED)
    watchdog.run_once(now + timedelta(seconds=60))
    assert not SessionSample.objects.exists()


def test_a_session_that_ends_resolves_its_alerts(running_session, make_watchdog):
    watchdog = make_watchdog(session_disk={"window_seconds": 0})
    use_disk(running_session, 95)
    watchdog.run_once()
    assert disk_alerts(running_session).get().status == "open"
    Session.objects.filter(pk=running_session.pk).update(state=State.STOPPING)
    report = watchdog.run_once()
    alert = disk_alerts(running_session).get()
    assert (alert.status, alert.resolution) == ("resolved", "the session is no longer running")
    assert report.resolved == [f"session_disk {running_session.pk}"]


def test_a_restarted_watchdog_resolves_what_the_last_one_opened(running_session, make_watchdog):
    use_disk(running_session, 95)
    make_watchdog(session_disk={"window_seconds": 0}).run_once()
    assert disk_alerts(running_session).get().status == "open"
    fresh = make_watchdog(session_disk={"window_seconds": 0})
    use_disk(running_session, 10)
    fresh.run_once()
    assert disk_alerts(running_session).get().status == "resolved"


def test_an_alert_staff_resolve_opens_again_while_the_figure_still_holds(running_session, make_watchdog,
                                                                        staff_user, client):
    watchdog = make_watchdog(session_disk={"window_seconds": 30})
    t0 = timezone.now()
    use_disk(running_session, 95)
    watchdog.run_once(t0)
    watchdog.run_once(t0 + timedelta(seconds=30))
    alert = disk_alerts(running_session).get()

    client.force_login(staff_user)
    response = client.post(reverse("admin:watchdog_alert_changelist"),
                           {"action": "resolve_alerts", "_selected_action": [alert.pk]}, follow=True)
    assert "Resolved 1 alert(s)." in response.content.decode()
    alert.refresh_from_db()
    assert (alert.status, alert.resolution) == ("resolved", "resolved by stella")
    entry = AuditEntry.objects.get(action="alert.resolve")
    assert (entry.actor, entry.target_id, entry.address) == (staff_user, str(alert.pk), "127.0.0.1")

    watchdog.run_once(t0 + timedelta(seconds=40))  # the window starts again
    assert disk_alerts(running_session).filter(status="open").count() == 0
    watchdog.run_once(t0 + timedelta(seconds=70))
    assert disk_alerts(running_session).filter(status="open").count() == 1
    assert disk_alerts(running_session).count() == 2


def test_the_admin_lists_alerts_with_filters_and_search_and_cannot_add_them(running_session, make_watchdog,
                                                                           admin_client):
    use_disk(running_session, 95)
    make_watchdog(session_disk={"window_seconds": 0}).run_once()
    url = reverse("admin:watchdog_alert_changelist")
    page = admin_client.get(url, {"status": "open", "kind": "session_disk", "level": "warning"}).content.decode()
    assert str(running_session.pk) in page and "95%" in page
    assert str(running_session.pk) in admin_client.get(url, {"q": running_session.lab.slug}).content.decode()
    assert str(running_session.pk) not in admin_client.get(url, {"status": "resolved"}).content.decode()
    assert admin_client.get(reverse("admin:watchdog_alert_add")).status_code == 403
    samples = admin_client.get(reverse("admin:watchdog_sessionsample_changelist")).content.decode()
    assert "95 of 100 MiB (95%)" in samples


def test_run_watchdog_once_makes_one_pass(running_session, settings, capsys):
    settings.LAB_WATCHDOG_THRESHOLDS = {"session_disk": {"window_seconds": 0}}
    use_disk(running_session, 99)
    call_command("run_watchdog", "--once")
    assert "opened=1" in capsys.readouterr().out
    assert disk_alerts(running_session).get().level == "critical"


def test_run_watchdog_refuses_malformed_thresholds(settings, db):
    settings.LAB_WATCHDOG_THRESHOLDS = {"session_disk": {"warning": "high"}}
    with pytest.raises(CommandError, match=r"LAB_WATCHDOG_THRESHOLDS\['session_disk'\]: warning must be"):
        call_command("run_watchdog", "--once")
    with pytest.raises(SystemCheckError, match=r"watchdog\.E001"):  # and `manage.py check` names it too
        call_command("check")
