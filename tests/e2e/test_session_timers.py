"""The session page's clocks in a real Chromium against a real ASGI server (daphne): the idle
countdown dialog and its "I'm still here" answer (a heartbeat the server records), and the
time-left warning at LAB_SESSION_WARNING_MINUTES (handed to static/js/session.js through
#session-status[data-warning-seconds]).

The browser's clock is Playwright's fake one (page.clock), so minutes pass in an instant; the
server's clock and database are real.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from labs.models import Image, Lab
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in

pytestmark = pytest.mark.browser

WARNING_MINUTES = 8  # not the default (5): a page that ignored the setting would not warn in time


@pytest.fixture
def extra_server_env() -> dict[str, str]:
    return {"LAB_SESSION_WARNING_MINUTES": str(WARNING_MINUTES), "LAB_ACTIVITY_WRITE_SECONDS": "30"}


def make_lab(**fields) -> Lab:
    image, _ = Image.objects.get_or_create(name="tiny", defaults={"reference": "labs/tiny:test"})
    defaults = {"slug": f"lab-{uuid.uuid4().hex[:8]}", "title": "Timer lab", "image": image, "runner": "fake",
                "published": True, "consoles": []}
    defaults.update(fields)
    return Lab.objects.create(**defaults)


def running_session(user, lab: Lab, *, expires_in: timedelta, idle_for: timedelta) -> Session:
    now = timezone.now()
    return Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name=lab.runner, started_at=now,
                                  expires_at=now + expires_in, last_active_at=now - idle_for)


def test_the_idle_countdown_asks_and_i_am_still_here_keeps_the_session(asgi_live_server, page, learner, password):
    url = asgi_live_server.url
    lab = make_lab(idle_timeout_minutes=5)  # the dialog opens 2 minutes before the idle stop
    sign_in(page, url, learner.username, password)
    # Idle for 2.5 minutes: 2.5 minutes to go, so no dialog yet.
    session = running_session(learner, lab, expires_in=timedelta(minutes=30), idle_for=timedelta(seconds=150))
    idle_since = session.last_active_at

    page.clock.install()
    page.goto(f"{url}{session.get_absolute_url()}")
    dialog = page.locator("#idle-dialog")
    page.clock.run_for(2_000)
    expect(dialog).to_be_hidden()

    # 40 s later (for the server too: before warning, the page asks it when it last saw activity)
    # the idle stop is under 2 minutes away: the dialog opens and counts down.
    idle_since -= timedelta(seconds=40)
    Session.objects.filter(pk=session.pk).update(last_active_at=idle_since)
    page.clock.run_for(40_000)
    expect(dialog).to_be_visible()
    assert dialog.evaluate("d => d.open") is True
    countdown = page.locator("[data-idle-countdown]")
    assert re.fullmatch(r"1:[0-5]\d", countdown.inner_text()), countdown.inner_text()
    first = countdown.inner_text()
    page.clock.run_for(5_000)
    assert countdown.inner_text() < first, "the countdown did not move"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "idle-dialog.png"))
    assert Session.objects.get(pk=session.pk).last_active_at == idle_since  # nothing sent by itself

    # "I'm still here": a heartbeat goes to the server, which records the learner as active.
    heartbeat = f"/sessions/{session.pk}/heartbeat/"
    with page.expect_response(lambda r: r.url.endswith(heartbeat) and r.request.method == "POST") as answer:
        page.get_by_role("button", name="I’m still here").click()
    assert answer.value.status == 200
    assert answer.value.json()["state"] == "running"
    expect(dialog).to_be_hidden()
    deadline = time.monotonic() + 10
    while Session.objects.get(pk=session.pk).last_active_at <= idle_since:
        assert time.monotonic() < deadline, "the heartbeat never moved last_active_at"
        time.sleep(0.2)
    moved = Session.objects.get(pk=session.pk).last_active_at
    assert moved > idle_since + timedelta(seconds=140)  # to about now, not a token nudge

    # The idle clock starts again from the answer: a minute on, still no dialog.
    page.clock.run_for(60_000)
    expect(dialog).to_be_hidden()
    assert Session.objects.get(pk=session.pk).state == State.RUNNING
    assert_no_error_page(page)


def test_time_left_turns_to_a_warning_at_the_configured_minutes(asgi_live_server, page, learner, password):
    url = asgi_live_server.url
    lab = make_lab(idle_timeout_minutes=0)
    sign_in(page, url, learner.username, password)
    session = running_session(learner, lab, expires_in=timedelta(minutes=WARNING_MINUTES + 2), idle_for=timedelta())

    page.clock.install()
    page.goto(f"{url}{session.get_absolute_url()}")
    status = page.locator("#session-status")
    assert status.get_attribute("data-warning-seconds") == str(WARNING_MINUTES * 60)
    time_left = page.locator("#session-status [data-time-left]")
    page.clock.run_for(2_000)
    assert "is-warning" not in (time_left.get_attribute("class") or "")
    assert re.fullmatch(r"9:5\d", page.locator("[data-time-left-value]").inner_text())

    # Two minutes and a few seconds on, fewer than WARNING_MINUTES are left: the countdown warns
    # and screen readers are told once.
    page.clock.run_for(125_000)
    expect(time_left).to_have_class(re.compile(r"\bis-warning\b"))
    assert re.fullmatch(r"7:5\d", page.locator("[data-time-left-value]").inner_text())
    expect(page.locator("#sr-announcer")).to_have_text(f"{WARNING_MINUTES} minutes left in this session.")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "time-left-warning.png"))
    assert_no_error_page(page)
