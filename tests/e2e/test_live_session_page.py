"""The session page follows its session live in a real Chromium against a real daphne: after Start,
the progress lines appear as the job logs them and the page turns to "running" (and opens its
terminal) the moment the job says so, all over the page's event stream, with no request to the
status URL the page used to poll every 2 s. Both ways jobs run: in threads of the web process
(no Redis: notices stay in the process) and in a worker process (notices through Redis).
Staff open the Output panel and see what the environment prints."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from labs.models import Image, Lab
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in

pytestmark = pytest.mark.browser

# Seen by the page within this long of the server's change (the old poll alone took up to 2 s).
PUSH_SECONDS = 1.5


@pytest.fixture(params=["jobs-in-the-web-process", "jobs-in-a-worker"])
def queue_mode(request) -> str:
    return request.param


@pytest.fixture
def extra_server_env(request, queue_mode) -> dict[str, str]:
    if queue_mode == "jobs-in-the-web-process":
        return {"REDIS_URL": "", "LAB_RQ_ASYNC": "false"}  # embedded: job threads, in-memory layer
    worker = request.getfixturevalue("rq_worker")  # a worker process on a Redis of the test's own
    return {"REDIS_URL": worker.env["REDIS_URL"], "LAB_RQ_ASYNC": "true"}


@pytest.fixture
def extra_lab_runners() -> dict[str, dict]:
    # A runner with no output to show (the contract's default answer), for staff's output panel.
    return {"plain": {"BACKEND": "runners.base.Runner", "OPTIONS": {}}}


def slow_lab(consoles: list[str]) -> Lab:
    image, _ = Image.objects.get_or_create(name="tiny", defaults={"reference": "labs/tiny:test"})
    # fake-slow takes 3 s between its "Creating environment" and "Ready": time to watch the log grow.
    return Lab.objects.create(slug="live-page", title="Live page", image=image, runner="fake-slow", published=True,
                              consoles=consoles)


RECORD_STATES = """() => {
    window.__states = [];
    document.addEventListener("session:state", (event) => window.__states.push([event.detail.state, Date.now()]));
}"""


def test_the_page_follows_the_start_live_without_polling(asgi_live_server, page, learner, password,
                                                         queue_mode) -> None:
    url = asgi_live_server.url
    # The terminal is served by the web process: only there does the fake runner's environment exist.
    lab = slow_lab(["terminal"] if queue_mode == "jobs-in-the-web-process" else [])
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url(re.compile(r"/sessions/[0-9a-f-]{36}/$"))
    session = Session.objects.get(user=learner, lab=lab)
    page.evaluate(RECORD_STATES)
    region = page.locator("#session-status")

    # The runner's first line shows while the session is still provisioning (3 s before it is ready).
    expect(page.locator(".event-log .event-message", has_text="Creating environment")).to_be_visible(timeout=15_000)
    assert region.get_attribute("data-state") in ("requested", "provisioning")
    expect(page.locator(".event-log-wrap")).to_be_visible()

    terminal_opened: list[float] = []
    page.on("websocket", lambda ws: terminal_opened.append(time.time()) if "/terminal/" in ws.url else None)
    expect(region).to_have_attribute("data-state", "running", timeout=20_000)
    expect(page.locator(".event-log .event-message", has_text="Ready.")).to_have_count(1, timeout=5_000)
    session.refresh_from_db()
    assert session.state == State.RUNNING and session.started_at is not None
    seen_running = page.evaluate("() => window.__states.find(([state]) => state === 'running')[1]") / 1000
    delay = seen_running - session.started_at.timestamp()
    print(f"\n[{queue_mode}] the page saw 'running' {delay * 1000:.0f} ms after the server's transition")
    assert delay < PUSH_SECONDS
    if "terminal" in lab.consoles:
        expect(page.locator('[data-console-mount="terminal"] .xterm')).to_be_visible(timeout=10_000)
        assert terminal_opened and terminal_opened[0] - seen_running < PUSH_SECONDS

    status_url = f"/sessions/{session.pk}/status/"
    assert not [r for r in requests if status_url in r], "the page polled its status"
    assert [r for r in requests if f"/sessions/{session.pk}/stream/" in r], "the page opened no stream"
    assert page.locator(".event-log li").count() == len(set(
        page.locator(".event-log li").evaluate_all("items => items.map(item => item.dataset.eventId)")))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"live-session-page-{queue_mode}.png"), full_page=True)
    assert_no_error_page(page)


@pytest.mark.parametrize("queue_mode", ["jobs-in-the-web-process"], indirect=True)
def test_stopping_shows_live_and_ends_the_stream(asgi_live_server, page, learner, password, queue_mode) -> None:
    url = asgi_live_server.url
    lab = slow_lab([])
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    region = page.locator("#session-status")
    expect(region).to_have_attribute("data-state", "running", timeout=20_000)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop session").click()
    expect(region).to_have_attribute("data-state", re.compile("stopped"), timeout=15_000)
    # In the log (folded away once the session has ended).
    expect(page.locator(".event-log .event-message", has_text="Environment removed.")).to_have_count(1)
    # Ended: the page has closed its stream (EventSource.CLOSED) and asks for nothing more.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.wait_for_timeout(1500)
    assert not [r for r in requests if "/stream/" in r or "/status/" in r]
    assert_no_error_page(page)


@pytest.mark.parametrize("queue_mode", ["jobs-in-the-web-process"], indirect=True)
def test_staff_follow_the_environments_output(asgi_live_server, page, staff_user, password, learner,
                                              queue_mode) -> None:
    from tests.e2e.live_server import set_server_password

    url = asgi_live_server.url
    set_server_password(staff_user, password)
    lab = slow_lab([])
    # The learner starts; staff watch from their own browser.
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    expect(page.locator("#session-status")).to_have_attribute("data-state", "running", timeout=20_000)
    session = Session.objects.get(user=learner, lab=lab)
    assert page.locator("[data-output-panel]").count() == 0  # learners have no output panel

    staff_page = page.context.browser.new_page()
    try:
        sign_in(staff_page, url, staff_user.username, password)
        staff_page.goto(f"{url}{session.get_absolute_url()}")
        panel = staff_page.locator("[data-output-panel]")
        panel.locator("summary").click()
        expect(panel.locator("[data-output-text]")).to_contain_text("fake environment: started", timeout=10_000)
        expect(panel.locator("[data-output-status]")).to_have_text("Following the output live.")
        panel.locator("summary").click()  # closing the panel closes its stream
    finally:
        staff_page.close()


@pytest.mark.parametrize("queue_mode", ["jobs-in-the-web-process"], indirect=True)
def test_without_its_stream_the_page_falls_back_to_asking_for_its_status(asgi_live_server, page, learner, password,
                                                                          queue_mode) -> None:
    url = asgi_live_server.url
    lab = slow_lab([])
    # A proxy that refuses the stream: EventSource gives up, and the page asks for its status instead.
    page.route(re.compile(r"/sessions/[0-9a-f-]{36}/stream/"), lambda route: route.fulfill(status=503, body="no"))
    status_requests: list[str] = []
    page.on("request", lambda r: status_requests.append(r.url) if "/status/" in r.url else None)
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    expect(page.locator("#session-status")).to_have_attribute("data-state", "running", timeout=25_000)
    assert status_requests, "the page did not fall back to asking for its status"
    count = len(status_requests)
    page.wait_for_timeout(3000)
    assert len(status_requests) == count, "the page went on polling once the session was running"
    assert_no_error_page(page)


@pytest.mark.parametrize("queue_mode", ["jobs-in-the-web-process"], indirect=True)
def test_staff_see_why_a_runner_has_no_output(asgi_live_server, page, staff_user, password, learner,
                                             queue_mode) -> None:
    from tests.e2e.live_server import set_server_password

    set_server_password(staff_user, password)
    lab = slow_lab([])
    session = Session.objects.create(user=learner, lab=lab, state=State.RUNNING, runner_name="plain",
                                     runner_state={"anything": 1})
    sign_in(page, asgi_live_server.url, staff_user.username, password)
    page.goto(f"{asgi_live_server.url}{session.get_absolute_url()}")
    panel = page.locator("[data-output-panel]")
    panel.locator("summary").click()
    status = panel.locator("[data-output-status]")
    expect(status).to_have_text("output is not available for the plain runner")
    expect(status).to_have_class(re.compile(r"notice-error"))
    assert_no_error_page(page)
