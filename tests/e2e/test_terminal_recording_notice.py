"""A recorded lab says so, on its page before starting and above its terminals, and a reload or a
server restart (the browser reconnects the same tab) goes on in the same recording. Real Chromium,
real daphne, a real Docker session on labs/base:bookworm (tmux keeps the shell)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from consoles.models import TerminalRecording
from sessions_app.models import Session
from tests.e2e.conftest import assert_no_error_page, sign_in
from tests.e2e.test_consoles import (  # noqa: F401 (the fixture gives the server a Docker runner)
    STARTUP_MS,
    extra_lab_runners,
    make_lab,
    type_command,
    wait_connected,
    wait_for_text,
)

pytestmark = pytest.mark.browser

NOTICE = "Terminals in this lab are recorded."


def wait_for_cast(path: Path, text: str, timeout: float = 15) -> str:
    """The cast file once it holds `text` (the recorder writes about once a second)."""
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.25)
    raise AssertionError(f"{text!r} never reached {path}; it holds:\n{content[-2000:]}")


@pytest.mark.docker
def test_a_recorded_lab_says_so_and_a_reconnect_goes_on_in_the_same_recording(
    asgi_live_server, page, learner, password, docker_instance
):
    url = asgi_live_server.url
    plain = make_lab("labs/base:bookworm", title="Not recorded")
    lab = make_lab("labs/base:bookworm", title="Recorded lab", record_terminal=True)
    sign_in(page, url, learner.username, password)

    # Before starting: the lab page says it, and says nothing of the kind for a lab that does not record.
    page.goto(f"{url}{plain.get_absolute_url()}")
    expect(page.locator("[data-recording-notice]")).to_have_count(0)
    page.goto(f"{url}{lab.get_absolute_url()}")
    notice = page.locator(".start-card [data-recording-notice]")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(NOTICE)
    expect(notice).to_contain_text("staff can replay it")

    # Above the terminal, while the learner works in it.
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    session = Session.objects.get(user=learner, lab=lab)
    panel_notice = page.locator('[data-console="terminal"] [data-recording-notice]')
    expect(panel_notice).to_be_visible()
    expect(panel_notice).to_contain_text(NOTICE)
    wait_connected(page, "1")
    screen = page.locator('[data-terminal-screen="1"]').bounding_box()
    box = panel_notice.bounding_box()
    assert screen is not None and box is not None and box["y"] + box["height"] <= screen["y"] + 1, (box, screen)
    assert panel_notice.evaluate("e => e.scrollWidth <= e.clientWidth"), "the notice is cut off"
    type_command(page, "1", "echo first-$((40+2))")
    wait_for_text(page, "1", "\nfirst-42")

    [recording] = TerminalRecording.objects.filter(session=session)
    cast = Path(settings.MEDIA_ROOT) / recording.file.name
    wait_for_cast(cast, "first-42")

    # A reload, then a server restart: the same tab reconnects both times, into the same recording.
    page.reload()
    wait_connected(page, "1")
    expect(page.locator('[data-terminal-panel="1"] .conn-detail')).to_have_text("reattached")
    type_command(page, "1", "echo second-$((40+3))")
    wait_for_text(page, "1", "\nsecond-43")
    # Recordings reach the disk within a second; a server stopped sooner loses that second (noted
    # for a fix: the shutdown does not flush them), so the restart waits for the file.
    wait_for_cast(cast, "second-43")
    asgi_live_server.restart(down_seconds=2)
    wait_connected(page, "1")
    type_command(page, "1", "echo third-$((40+4))")
    wait_for_text(page, "1", "\nthird-44")
    content = wait_for_cast(cast, "third-44")
    assert TerminalRecording.objects.filter(session=session).count() == 1
    assert content.index("first-42") < content.index("second-43") < content.index("third-44")
    assert content.count('"m", "reconnected"') == 2, content[-3000:]
    expect(panel_notice).to_be_visible()
    assert_no_error_page(page)
