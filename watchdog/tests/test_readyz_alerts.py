"""/readyz reports the watchdog's open alerts; only `?require=alerts` lets a critical host alert make it
not ready (a session's alerts never do). The check reads the database on a thread of its own, so
the rows must be committed: transactional tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from watchdog.models import Alert

pytestmark = pytest.mark.django_db(transaction=True)


def make_alert(kind: str, level: str, minutes_ago: int, status: str = "open", subject: str = "host lab-1") -> Alert:
    seen = timezone.now() - timedelta(minutes=minutes_ago)
    return Alert.objects.create(kind=kind, subject=subject, level=level, status=status, value=99, threshold=95,
                                message="test", first_seen=seen, last_seen=timezone.now())


def test_readyz_reports_no_alerts_and_stays_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["alerts"] == {"status": "up", "open": 0, "by_level": {"warning": 0, "critical": 0},
                                                   "host_critical": 0, "oldest": None}


def test_readyz_reports_open_alerts_by_level_and_the_oldest(client):
    make_alert("session_memory", "warning", 5, subject="a-session")
    make_alert("host_disk_data", "critical", 12, subject="lab-1:/var/lib/labs")
    make_alert("host_cpu", "critical", 60, status="resolved")  # resolved: not counted
    response = client.get("/readyz")
    assert response.status_code == 200  # reported, but not a reason to leave the load balancer
    alerts = response.json()["checks"]["alerts"]
    assert {k: alerts[k] for k in ("status", "open", "by_level", "host_critical")} == {
        "status": "up", "open": 2, "by_level": {"warning": 1, "critical": 1}, "host_critical": 1}
    assert alerts["oldest"]["kind"] == "host_disk_data" and alerts["oldest"]["level"] == "critical"
    assert 12 * 60 - 5 <= alerts["oldest"]["age_seconds"] <= 12 * 60 + 60
    assert "subject" not in alerts["oldest"]  # anyone may read /readyz: no session ids or paths


def test_require_alerts_makes_a_critical_host_alert_not_ready(client):
    make_alert("session_memory", "critical", 1, subject="a-session")
    assert client.get("/readyz?require=alerts").status_code == 200  # one learner's session is not the platform
    make_alert("host_memory", "warning", 1)
    assert client.get("/readyz?require=alerts").status_code == 200
    make_alert("host_disk_engine", "critical", 1, subject="lab-1:/var/lib/docker")
    response = client.get("/readyz?require=alerts")
    assert response.status_code == 503 and response.json()["down"] == ["alerts"], response.json()
    assert client.get("/readyz").status_code == 200
    # combined with the queue's requirement, in either spelling
    assert client.get("/readyz?require=queue,alerts").json()["down"][-1] == "alerts"
    assert "alerts" in client.get("/readyz?require=queue&require=alerts").json()["down"]
