"""The start progress bar in a real Chromium on a phone-sized screen: it appears while the session
starts, moves along the phases as the runner's progress lines arrive over the event stream, reaches
the end before the page turns to "running", and says how long a start usually takes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from labs.models import Image, Lab
from sessions_app.estimates import PHASES
from sessions_app.models import Session, State
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def extra_server_env() -> dict[str, str]:
    return {"REDIS_URL": "", "LAB_RQ_ASYNC": "false"}  # jobs in threads of the web process: fake-slow's there


# Every value the bar's aria-valuenow takes, across swaps of the status region.
RECORD_BAR = """() => {
    window.__bar = [];
    const note = () => {
        const bar = document.querySelector("#session-status [role=progressbar]");
        const value = bar && Number(bar.getAttribute("aria-valuenow"));
        if (bar && window.__bar.at(-1) !== value) window.__bar.push(value);
    };
    note();
    new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def test_the_bar_follows_the_start_to_the_end(asgi_live_server, page, learner, other_learner, password) -> None:
    url = asgi_live_server.url
    image, _ = Image.objects.get_or_create(name="tiny", defaults={"reference": "labs/tiny:test"})
    # fake-slow waits 3 s between "Creating environment" and "Ready".
    lab = Lab.objects.create(slug="bar-lab", title="Bar lab", image=image, runner="fake-slow", published=True,
                             consoles=[])
    for seconds in (4, 5, 6):  # past starts, for "usually ready in"
        past = Session.objects.create(user=other_learner, lab=lab, runner_name="fake-slow", state=State.STOPPED)
        requested = timezone.now() - timedelta(hours=1)
        Session.objects.filter(pk=past.pk).update(created_at=requested,
                                                  started_at=requested + timedelta(seconds=seconds))

    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    expect(page.locator("[data-start-estimate]")).to_have_text("Usually ready in about 5 s.")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url(re.compile(r"/sessions/[0-9a-f-]{36}/$"))
    page.evaluate(RECORD_BAR)

    bar = page.get_by_role("progressbar", name="Starting your environment")
    expect(bar).to_be_visible(timeout=10_000)
    expect(page.locator("[data-start-progress]")).to_contain_text("usually ready in ~5 s")
    expect(page.locator("[data-start-elapsed]")).to_contain_text(re.compile(r"\d+ s so far"))
    box = bar.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390

    expect(page.locator("#session-status")).to_have_attribute("data-state", "running", timeout=20_000)
    expect(bar).to_have_count(0)  # a running session shows no bar
    seen = page.evaluate("window.__bar")
    assert seen == sorted(seen), seen  # never moved back
    assert seen[-1] == len(PHASES) - 1, seen  # reached "Ready" before the page turned to running
    assert 3 in seen, seen  # "Creating environment" moved it on the way
