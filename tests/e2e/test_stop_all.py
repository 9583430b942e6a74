"""Staff's "Stop all…" in a real Chromium: from the sessions list to the confirmation that states the
count, then every session of the lab stopping, at desktop and phone widths."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page
from tests.e2e.live_server import set_server_password

pytestmark = pytest.mark.browser


def test_staff_stop_every_session_of_a_lab_after_confirming_the_count(asgi_live_server, page, staff_user, password,
                                                                      owner, other_learner, lab):
    now = timezone.now()
    running = [Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name="fake",
                                      runner_state={}, started_at=now, expires_at=now + timedelta(hours=1))
               for user in (owner, other_learner, owner)]
    set_server_password(staff_user, password)
    url = asgi_live_server.url
    page.goto(f"{url}/admin/login/")
    page.locator("input[name=username]").fill(staff_user.username)
    page.locator("input[name=password]").fill(password)
    page.locator("input[type=submit]").click()

    page.goto(f"{url}/admin/sessions_app/session/")
    page.get_by_role("link", name="Stop all…").click()
    page.get_by_label("Every session of one lab").check()
    page.locator("select[name=lab]").select_option(label="Hello shell")
    page.get_by_role("button", name="Count the sessions").click()
    expect(page.locator("#stop-all-count")).to_contain_text("This stops 3 sessions of the lab “Hello shell”.")
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"stop-all-{width}.png"), full_page=True)
    assert_no_error_page(page)

    page.get_by_role("button", name="Yes, stop 3 sessions").click()
    expect(page.locator(".messagelist")).to_contain_text("Stopping 3 session(s) of the lab “Hello shell”.")
    assert {Session.objects.get(pk=s.pk).state for s in running} <= {State.STOPPING, State.STOPPED}
    assert all(Session.objects.get(pk=s.pk).events.filter(message__contains="stella, stop all").exists()
               for s in running)
