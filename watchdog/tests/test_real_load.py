"""Real load in real containers: sessions started with the Docker runner on the machine's engine, a
memory hog and a disk filler inside them, and the watchdog opening and then resolving alerts.

Thresholds are low and windows short (seconds) so a test takes well under a minute; the engine's
stats call itself takes a second or two per pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.urls import reverse

from runners import get_runner
from sessions_app.models import Session, State
from sessions_app.tests.test_docker_sessions import docker_runners, make_lab, start  # noqa: F401 (fixtures)
from watchdog.models import Alert, SessionSample
from watchdog.watching import Watchdog

pytestmark = pytest.mark.docker

HOG = "import time\nhog = b'x' * (90 << 20)\ntime.sleep(600)\n"  # 90 MiB, every page touched


def alerts(session: Session, kind: str):
    return Alert.objects.filter(kind=kind, subject=str(session.pk))


def pass_until(watchdog: Watchdog, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        watchdog.run_once()
        if done():
            return
        assert time.monotonic() < deadline, "the watchdog never saw it"
        time.sleep(0.5)


def test_a_memory_hog_opens_a_memory_alert_the_learner_sees_and_it_resolves_when_the_hog_stops(
        engine, docker_runners, start, make_watchdog, client, owner):  # noqa: F811
    session = start(make_lab("labs/base:bookworm", memory_mb=128))
    assert session.state == State.RUNNING, session.error
    runner = get_runner("docker")
    watchdog = make_watchdog(session_memory={"warning": 60, "critical": 99, "window_seconds": 2, "clear_margin": 20})

    watchdog.run_once()
    idle = SessionSample.objects.get(session=session)
    assert idle.memory_limit_bytes == 128 << 20
    assert idle.memory_percent is not None and idle.memory_percent < 40, idle.memory_percent

    in_background = 'python3 -c "$0" >/dev/null 2>&1 & echo $! >/tmp/hog.pid'
    started = runner.exec(session.runner_state, ["sh", "-c", in_background, HOG])
    assert started.ok, started.stderr

    def hog_seen() -> bool:
        sample = SessionSample.objects.get(session=session)
        return sample.memory_percent is not None and sample.memory_percent >= 60

    pass_until(watchdog, hog_seen)
    assert not alerts(session, "session_memory").exists()  # held for less than the window yet
    time.sleep(2)
    watchdog.run_once()
    alert = alerts(session, "session_memory").get()
    assert (alert.status, alert.level, alert.session_id) == ("open", "warning", session.pk)
    assert 60 <= alert.value < 99

    client.force_login(owner)
    html = client.get(reverse("sessions:status", args=[session.pk]), HTTP_HX_REQUEST="true").content.decode()
    percent = round(SessionSample.objects.get(session=session).memory_percent or 0)
    assert f"Your session is at {percent}% of its memory limit" in html

    stopped = runner.exec(session.runner_state, ["sh", "-c", "kill $(cat /tmp/hog.pid)"])
    assert stopped.ok, stopped.stderr
    pass_until(watchdog, lambda: (SessionSample.objects.get(session=session).memory_percent or 100) < 40)
    assert alerts(session, "session_memory").get().status == "open"  # below, but not for the window yet
    time.sleep(2)
    watchdog.run_once()
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.value < 40
    assert "data-resource-notice" not in client.get(reverse("sessions:status", args=[session.pk]),
                                                    HTTP_HX_REQUEST="true").content.decode()


def test_a_disk_filler_opens_a_disk_alert_that_resolves_when_the_files_are_deleted(
        engine, docker_runners, start, make_watchdog):  # noqa: F811
    session = start(make_lab("labs/busybox:latest", disk_mb=32))
    assert session.state == State.RUNNING, session.error
    # The runner gave the session a disk of its own (root and loop devices here): it reports its use.
    assert session.runner_state.get("disk"), session.runner_state
    runner = get_runner("docker")
    watchdog = make_watchdog(session_disk={"warning": 50, "critical": 95, "window_seconds": 1, "clear_margin": 20})

    watchdog.run_once()
    empty = SessionSample.objects.get(session=session)
    assert empty.disk_total_bytes and 16 << 20 < empty.disk_total_bytes <= 32 << 20
    assert empty.disk_percent is not None and empty.disk_percent < 30, empty.disk_percent

    filled = runner.exec(session.runner_state, ["dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=20",
                                                "conv=fsync"], timeout=60)
    assert filled.ok, filled.stderr
    pass_until(watchdog, lambda: alerts(session, "session_disk").filter(status="open").exists(), timeout=30)
    alert = alerts(session, "session_disk").get()
    assert alert.level == "warning" and 50 <= alert.value < 95
    assert SessionSample.objects.get(session=session).disk_used_bytes >= 20 << 20

    assert runner.exec(session.runner_state, ["rm", "/tmp/fill"]).ok
    pass_until(watchdog, lambda: alerts(session, "session_disk").filter(status="resolved").exists(), timeout=30)
    alert.refresh_from_db()
    assert alert.value < 30 and alert.resolution == "the figure stayed below the clear point for the window"
