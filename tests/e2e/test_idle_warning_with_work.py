"""The idle warning in a real Chromium, for a session on the real Docker engine: while a CPU-bound loop
runs in it (and the watchdog's pass counts that as activity) the page does not warn, even though
nobody touched the page; with nothing running, the page warns before the idle stop.

The browser's clock is Playwright's fake one, so the page reaches its warning time in an instant; the
server's clock is real, so "time passing" on the server is last_active_at set back by the same amount.
Before it warns, the page asks the server when it last saw activity (the status region): that answer
is what these tests are about.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from labs.models import Image, Lab
from runners import get_runner
from sessions_app import actions
from sessions_app.models import Session, State
from tests.e2e.conftest import assert_no_error_page, sign_in
from tests.e2e.live_server import docker_runner_for_server
from watchdog.rules import thresholds
from watchdog.watching import Watchdog

pytestmark = pytest.mark.browser

IDLE_MINUTES = 5  # the page warns 2 minutes before the idle stop
BUSY_LOOP = "sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"


@pytest.fixture
def extra_lab_runners(docker_instance) -> Iterator[dict[str, Any]]:
    with docker_runner_for_server(docker_instance) as runners:
        yield runners


def running_session(learner) -> Session:  # type: ignore[no-untyped-def]
    image, _ = Image.objects.get_or_create(name="labs-busybox-latest", defaults={"reference": "labs/busybox:latest"})
    lab = Lab.objects.create(slug=f"lab-{uuid.uuid4().hex[:8]}", title="Busy lab", image=image, runner="docker",
                             memory_mb=128, published=True, consoles=[], idle_timeout_minutes=IDLE_MINUTES)
    session = actions.start_session(learner, lab)  # the provision job runs at commit, in this process
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    return session


def set_idle_for(session: Session, seconds: int):  # type: ignore[no-untyped-def]
    then = timezone.now() - timedelta(seconds=seconds)
    Session.objects.filter(pk=session.pk).update(last_active_at=then)
    return then


def last_active(session: Session):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session.pk).last_active_at


def open_page_before_the_warning(page, url: str, learner, password: str, session: Session):  # type: ignore[no-untyped-def]
    """The session page, 2.5 minutes before the idle stop: no dialog yet."""
    sign_in(page, url, learner.username, password)
    page.clock.install()
    page.goto(f"{url}{session.get_absolute_url()}")
    page.clock.run_for(2_000)
    dialog = page.locator("#idle-dialog")
    expect(dialog).to_be_hidden()
    return dialog


def forty_seconds_on_the_page(page, session: Session) -> None:  # type: ignore[no-untyped-def]
    """The page's clock jumps 40 s, into its warning time; it asks the server before warning."""
    status = reverse("sessions:status", args=[session.pk])
    with page.expect_response(lambda r: r.url.endswith(status) and r.request.method == "GET") as asked:
        page.clock.run_for(40_000)
    assert asked.value.status == 200


def test_a_session_working_with_nobody_at_the_page_is_not_warned(asgi_live_server, page, learner, password):
    session = running_session(learner)
    result = get_runner("docker").exec(session.runner_state, ["sh", "-c", BUSY_LOOP])
    assert result.ok, result.stderr
    set_idle_for(session, 150)
    dialog = open_page_before_the_warning(page, asgi_live_server.url, learner, password, session)

    # Nobody touches the page; the watchdog samples the loop and counts it as activity.
    then = last_active(session)
    watchdog = Watchdog(thresholds({}))
    deadline = time.monotonic() + 60
    while last_active(session) == then:
        assert time.monotonic() < deadline, "the watchdog's pass never marked the working session active"
        watchdog.run_once()
        time.sleep(0.5)

    forty_seconds_on_the_page(page, session)
    page.clock.run_for(5_000)
    expect(dialog).to_be_hidden()
    # The page now counts from the server's time: the whole idle timeout ahead, not 1:50.
    served = page.locator("#session-status").get_attribute("data-last-active")
    assert served and served.startswith(last_active(session).strftime("%Y-%m-%dT%H:%M"))
    assert Session.objects.get(pk=session.pk).state == State.RUNNING
    assert_no_error_page(page)


def test_an_idle_session_is_warned_before_its_idle_stop(asgi_live_server, page, learner, password):
    session = running_session(learner)
    set_idle_for(session, 150)
    dialog = open_page_before_the_warning(page, asgi_live_server.url, learner, password, session)

    then = last_active(session)
    Watchdog(thresholds({})).run_once()  # it samples the session: nothing is working
    assert last_active(session) == then

    set_idle_for(session, 190)  # the 40 s the page is about to skip, on the server too
    forty_seconds_on_the_page(page, session)
    expect(dialog).to_be_visible()
    countdown = page.locator("[data-idle-countdown]").inner_text()
    assert countdown.startswith("1:"), countdown  # about 1:50 before the idle stop
    assert_no_error_page(page)
