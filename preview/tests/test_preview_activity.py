"""Someone using the learner's app through the preview is activity (IdleSignal.PREVIEW): each request
and each frame from the browser marks the session active, where the lab counts preview traffic."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx2 as httpx
import pytest
from django.utils import timezone

from preview.tests.test_preview_support import preview_url, session_cookie
from preview.tests.test_preview_websocket import open_ws
from sessions_app.models import Session

pytest_plugins = ["preview.tests.test_preview_support"]  # the shared fixtures

LONG_AGO = timedelta(minutes=10)


@pytest.fixture(autouse=True)
def every_signal_writes(settings) -> None:
    # No write interval, so each request or frame shows; the throttle has tests of its own (sessions_app).
    settings.LAB_ACTIVITY_WRITE_SECONDS = 0


def gone_idle(session: Session):  # type: ignore[no-untyped-def]
    long_ago = timezone.now() - LONG_AGO
    Session.objects.filter(pk=session.pk).update(last_active_at=long_ago)
    return long_ago


def last_active(session: Session):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session.pk).last_active_at


def get(daphne, session, port, user) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(preview_url(daphne, session, port, "page"), timeout=20,
                     headers={"Cookie": f"sessionid={session_cookie(user)}"})


def test_a_request_through_the_preview_marks_the_session_active(daphne, running_session, upstream, owner) -> None:
    long_ago = gone_idle(running_session)
    assert get(daphne, running_session, upstream.port, owner).status_code == 200
    assert last_active(running_session) > long_ago + timedelta(minutes=9)


def test_preview_traffic_counts_for_nothing_where_the_lab_does_not_count_it(
        daphne, running_session, upstream, owner) -> None:
    running_session.lab.idle_signals = ["terminal", "cpu"]
    running_session.lab.save(update_fields=["idle_signals"])
    long_ago = gone_idle(running_session)
    assert get(daphne, running_session, upstream.port, owner).status_code == 200
    assert upstream.state.requests, "the request did not reach the app"
    assert last_active(running_session) == long_ago


def test_a_refused_request_marks_nothing(daphne, running_session, upstream, other_learner) -> None:
    long_ago = gone_idle(running_session)
    assert get(daphne, running_session, upstream.port, other_learner).status_code == 404
    assert last_active(running_session) == long_ago


def test_frames_from_the_browser_mark_the_session_active(daphne, running_session, ws_upstream, owner) -> None:
    cookie = f"sessionid={session_cookie(owner)}"
    with open_ws(daphne, running_session, ws_upstream.port, cookie) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        long_ago = gone_idle(running_session)  # connected a while ago, nothing since
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"
        # The mark follows the frame's forwarding, so the echo may come back before it is written.
        deadline = time.monotonic() + 10
        while last_active(running_session) == long_ago:
            assert time.monotonic() < deadline, "the frame did not mark the session active"
            time.sleep(0.05)
        assert last_active(running_session) > long_ago + timedelta(minutes=9)
