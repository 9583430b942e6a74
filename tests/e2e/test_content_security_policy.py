"""The platform's pages work in Chromium with their Content-Security-Policy enforced.

Each test uses pages for real (HTMX search, signing up and in, a terminal, the editor, the judge,
hints, the admin, a recording's replay, django-rq, signing in with GitHub) on a real daphne,
while the `page` fixture (conftest.py) collects every policy violation of the top frame:
`securitypolicyviolation` events and the console's "Content Security Policy" errors. A page that
needs something the policy refuses fails here, either as a violation or as a feature that stops
working. Every other browser test checks for violations too (at teardown), so the Docker consoles,
the VNC desktop and the Docker editor and judge tests cover those pages with Docker runners.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.tests.github_double import GitHubDouble
from consoles.models import TerminalRecording
from judge.models import Attempt
from labs.models import Image, Lab, LabStep
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in
from tests.e2e.test_smoke import demo_catalog  # noqa: F401 - a fixture

pytestmark = pytest.mark.browser

STARTUP_MS = 60_000
ACTION_MS = 30_000
GITHUB_CLIENT_ID = "Iv1.cspcheck0000000"
GITHUB_CLIENT_SECRET = "csp-check-secret-0123456789abcdef01234567"


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    with GitHubDouble() as double:
        yield double


@pytest.fixture
def extra_lab_runners(tmp_path) -> dict[str, Any]:
    """The local (bubblewrap) runner: a real shell and workspace without a container."""
    local = {"BACKEND": "runners.local.LocalRunner", "OPTIONS": {"root": str(tmp_path / "local")}}
    return {"local": local}


@pytest.fixture
def extra_server_env(request) -> dict[str, str]:
    """With the GitHub double: the server's GitHub app points at it (form-action must allow it)."""
    if "github" not in request.fixturenames:
        return {}
    double: GitHubDouble = request.getfixturevalue("github")
    return {"GITHUB_URL": double.url, "GITHUB_CLIENT_ID": GITHUB_CLIENT_ID,
            "GITHUB_CLIENT_SECRET": GITHUB_CLIENT_SECRET, "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost"}


def enforced_policy(response: Any) -> str:
    """The page's policy: enforced (not report-only), no eval, no inline script without a nonce."""
    assert response is not None and response.ok, response
    policy = response.headers.get("content-security-policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives.get("default-src") == ["'self'"], policy
    assert "'unsafe-eval'" not in policy and "'unsafe-inline'" not in directives["script-src"], policy
    return policy


def mark_the_document(page: Page) -> None:
    page.evaluate("window.__sameDocument = 'still here'")


def assert_same_document(page: Page) -> None:
    assert page.evaluate("window.__sameDocument") == "still here", "the page was loaded again"


# ---- catalog, lab page, accounts -----------------------------------------------------------------


def test_searching_the_catalog_opening_a_lab_signing_up_and_in_work_under_the_policy(
    asgi_live_server, page, demo_catalog  # noqa: F811 - the fixture
):
    url = asgi_live_server.url
    enforced_policy(page.goto(f"{url}/"))
    cards = page.locator("[data-lab-card]")
    expect(cards.first).to_be_visible()
    mark_the_document(page)
    page.get_by_role("searchbox").fill("multi-stage")  # HTMX swaps the results in
    expect(cards).to_have_count(1)
    expect(page).to_have_url(re.compile(r"[?&]q=multi-stage(&|$)"))
    expect(page.locator("#sr-announcer")).to_have_text("1 lab found.")  # an out-of-band swap
    assert_same_document(page)

    cards.first.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("multi-stage build")

    enforced_policy(page.goto(f"{url}/accounts/signup/"))
    name = f"csp{uuid.uuid4().hex[:6]}"
    page.locator("input[name=email]").fill(f"{name}@example.org")
    page.locator("input[name=username]").fill(name)
    page.locator("input[name=password1]").fill("a-long-and-uncommon-passphrase-77")
    page.locator("input[name=password2]").fill("a-long-and-uncommon-passphrase-77")
    page.locator("main form button[type=submit]").click()
    expect(page.get_by_role("button", name=re.compile(f"Sign out.*{name}"))).to_be_visible()

    page.get_by_role("button", name=re.compile("Sign out")).click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    sign_in(page, url, name, "a-long-and-uncommon-passphrase-77")
    expect(page.get_by_role("button", name=re.compile(f"Sign out.*{name}"))).to_be_visible()
    assert_no_error_page(page)


def test_signing_in_with_github_leaves_through_the_forms_allowed_target(asgi_live_server, page, github):
    # The callback is registered now that the server's port is known.
    github.register_app(f"{asgi_live_server.url}/accounts/github/login/callback/",
                        client_id=GITHUB_CLIENT_ID, client_secret=GITHUB_CLIENT_SECRET)
    github.signed_in = github.add_user("octocat", id=583231, name="The Octocat", emails=[
        {"email": "octocat@example.org", "primary": True, "verified": True, "visibility": "private"}])

    page.goto(f"{asgi_live_server.url}/accounts/login/")
    page.get_by_role("link", name=re.compile("GitHub")).click()
    policy = enforced_policy(page.goto(page.url))  # allauth's confirmation page: a form posting to us
    assert f"form-action 'self' {github.url}" in policy
    page.locator("main form button[type=submit]").click()  # POST, then redirected to GitHub and back
    expect(page.get_by_role("button", name=re.compile("Sign out.*octocat"))).to_be_visible(timeout=ACTION_MS)
    assert github.requests_to("/login/oauth/authorize"), "the browser never reached GitHub"
    assert_no_error_page(page)


# ---- the session page: terminal, editor, judge, hints --------------------------------------------


def wait_for_terminal_text(page: Page, text: str, timeout: float = 20) -> None:
    rows = page.locator('[data-terminal-panel="1"] .xterm-rows')
    deadline = time.monotonic() + timeout
    while text not in (seen := rows.inner_text()):
        assert time.monotonic() < deadline, f"{text!r} never showed; the terminal shows:\n{seen}"
        page.wait_for_timeout(200)


def test_terminal_editor_judge_and_hints_work_under_the_policy(asgi_live_server, page, learner, password):
    url = asgi_live_server.url
    image, _ = Image.objects.get_or_create(name="csp-local", defaults={"reference": "labs/busybox:latest"})
    lab = Lab.objects.create(slug=f"csp-{uuid.uuid4().hex[:6]}", title="Policy lab", image=image, runner="local",
                             memory_mb=128, published=True, network_mode="none", consoles=["terminal", "editor"])
    step = LabStep.objects.create(lab=lab, order=1, title="Say done", body="Write *ok* into `done.txt`.",
                                  verify=[{"kind": "file", "path": "done.txt", "contains": "ok"}],
                                  hints=["The editor's New file button creates it."])
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    enforced_policy(page.reload())
    mark_the_document(page)

    # The terminal: xterm.js's own style elements apply (a blocked one has no sheet) and text in
    # 16 and 24-bit colours is drawn in those colours.
    page.locator('[data-terminal-panel="1"] [data-terminal-state="connected"]').wait_for(timeout=ACTION_MS)
    page.locator('[data-terminal-screen="1"]').click()
    page.keyboard.type(r"printf '\033[31mred16\033[0m \033[38;2;0;170;85mgreen24\033[0m\n'")
    page.keyboard.press("Enter")
    wait_for_terminal_text(page, "green24")
    styles = page.locator(".xterm style").evaluate_all("els => els.map(e => Boolean(e.sheet))")
    assert styles and all(styles), f"xterm.js's style elements were blocked: {styles}"
    green = page.locator('[data-terminal-panel="1"] .xterm-rows span', has_text="green24").last
    expect(green).to_have_css("color", "rgb(0, 170, 85)")
    red = page.locator('[data-terminal-panel="1"] .xterm-rows span', has_text="red16").last
    assert red.evaluate("e => getComputedStyle(e).color") not in ("", "rgb(0, 0, 0)")

    # The editor (CodeMirror): a new file, typed in and saved.
    page.get_by_role("tab", name="Editor").click()
    page.get_by_role("button", name="New file").click()
    prompt = page.locator("dialog[data-editor-prompt]")
    prompt.locator("[data-editor-prompt-input]").fill("done.txt")
    prompt.locator("[data-editor-prompt-ok]").click()
    expect(page.locator("[data-editor-filename]")).to_have_text("done.txt", timeout=ACTION_MS)
    page.locator(".cm-content").click()
    page.keyboard.type("ok, policy")
    expect(page.locator(".cm-editor")).to_have_css("position", "relative")  # CodeMirror's own styles apply
    page.keyboard.press("Control+s")
    expect(page.locator("[data-editor-status]")).to_have_text("Saved done.txt.", timeout=ACTION_MS)

    # The judge (an HTMX form with its "Checking…" indicator) and the hint panel.
    box = page.locator(f'[data-judge-step="{step.pk}"]')
    box.get_by_role("button", name="Check this step").click()
    expect(page.locator(f'[data-judge-step="{step.pk}"]')).to_have_attribute("data-passed", "true",
                                                                             timeout=ACTION_MS)
    expect(page.locator(f'[data-judge-step="{step.pk}"] .judge-attempt')).to_contain_text("Passed.")
    page.get_by_role("button", name="Get a hint").click()
    expect(page.locator("article.hint-fallback").first).to_be_visible(timeout=ACTION_MS)
    assert_same_document(page)
    assert Attempt.objects.filter(session__lab=lab, passed=True).count() == 1

    # The terminal's text size (set through the style object, which the policy allows) still changes.
    page.get_by_role("tab", name="Terminal").click()
    page.get_by_role("button", name="Larger text").click()
    expect(page.locator('[data-terminal-screen="1"] .xterm-rows')).to_have_css("font-size", "15px")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "csp-session.png"), full_page=True)
    assert_no_error_page(page)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop session").click()
    page.locator('#session-status[data-state="stopped"]').wait_for(timeout=STARTUP_MS)


# ---- staff pages ---------------------------------------------------------------------------------


def recorded_session(user: Any, lab: Lab) -> TerminalRecording:
    now = timezone.now()
    session = Session.objects.create(user=user, lab=lab, state=State.STOPPED, runner_name="fake",
                                     started_at=now - timedelta(minutes=5), ended_at=now)
    cast = "\n".join([json.dumps({"version": 2, "width": 80, "height": 24, "timestamp": int(now.timestamp())}),
                      json.dumps([0.1, "o", "$ echo replayed\r\n"]), json.dumps([0.3, "o", "replayed\r\n$ "])])
    recording = TerminalRecording(session=session, terminal_name="1", width=80, height=24, ended_at=now,
                                  size_bytes=len(cast))
    recording.file.save("csp.cast", ContentFile(cast.encode()), save=True)
    return recording


def test_the_admin_a_recordings_replay_and_django_rq_work_under_the_policy(asgi_live_server, page, staff_user,
                                                                           password, owner, lab):
    from tests.e2e.live_server import set_server_password

    set_server_password(staff_user, password)
    recording = recorded_session(owner, lab)
    Attempt.objects.create(user=owner, lab=lab, status="done", passed=False,
                           result={"failures": [{"code": "file_missing"}]}, log="checking…\n")
    url = asgi_live_server.url
    page.goto(f"{url}/admin/login/")
    page.locator("input[name=username]").fill(staff_user.username)
    page.locator("input[name=password]").fill(password)
    page.locator("input[type=submit]").click()
    expect(page.locator("#site-name")).to_be_visible()

    # Every changelist the index links to, and a change form with the judge's preformatted result.
    changelists = page.locator("#content-main a[href$='/']:not(.addlink)").evaluate_all(
        "links => [...new Set(links.map(a => a.getAttribute('href')))]")
    assert len(changelists) >= 10, changelists
    for path in changelists:
        response = page.goto(f"{url}{path}")
        if "/django_rq/" not in path:  # django-rq's dashboard: its own inline code, checked below
            enforced_policy(response)
        expect(page.locator("#content")).to_be_visible()
    page.goto(f"{url}/admin/judge/attempt/")
    page.locator("#result_list tbody tr a").first.click()
    expect(page.locator("pre.admin-result")).to_have_css("white-space", "pre-wrap")

    # The changelist's select-all checkbox (Django's actions.js) still works.
    page.goto(f"{url}/admin/auth/user/")
    page.locator("#action-toggle").check()
    expect(page.locator("input.action-select").first).to_be_checked()

    # The replay page: asciinema-player plays the cast.
    enforced_policy(page.goto(f"{url}/sessions/recordings/{recording.pk}/replay/"))
    player = page.locator("#recording-player")
    expect(player.locator(".ap-player")).to_be_visible(timeout=ACTION_MS)
    player.get_by_role("button", name="Play").click()
    expect(player).to_contain_text("replayed", timeout=ACTION_MS)

    # django-rq's pages keep their own inline scripts and styles (its policy allows them).
    response = page.goto(f"{url}/rq/")
    assert response is not None and response.ok
    assert "'unsafe-inline'" in response.headers["content-security-policy"]
    expect(page.locator("#changelist table")).to_be_visible()
    assert_no_error_page(page)
