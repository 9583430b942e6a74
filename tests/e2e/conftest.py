"""Browser fixtures: the system Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# The WebSocket-capable live server; imported here so every browser test can ask for it.
from tests.e2e.live_server import (  # noqa: F401
    asgi_live_server,
    collected_static,
    extra_lab_runners,
    extra_server_env,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium():
    """Module-scoped: Playwright's sync API keeps an event loop in this thread while it runs, which
    would break the asyncio tests pytest-django schedules after the browser tests."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required for the browser tests ({CHROMIUM}); the test command installs it")
    # Playwright's sync API runs an event loop in this thread; the ORM calls in the tests are still sync.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


# Reports every Content-Security-Policy violation of a platform page (the top frame: a preview in
# its iframe has a policy of its own) to the test, across navigations.
_WATCH_CSP = """
if (window.top === window) {
    window.addEventListener("securitypolicyviolation", (event) => {
        window.__labsCspViolation(`${event.effectiveDirective} blocked ${event.blockedURI || "inline code"}`
            + ` in ${event.sourceFile || event.documentURI}:${event.lineNumber} (${event.sample})`);
    }, true);
}
"""


def _csp_console_message(page, message) -> str | None:
    """A console error about the policy, from a platform page (not a preview in its iframe)."""
    if message.type != "error" or "Content Security Policy" not in message.text:
        return None
    source = message.location.get("url", "") if message.location else ""
    if source and (urlsplit(source).netloc != urlsplit(page.url).netloc or "/preview/" in source):
        return None
    return message.text


@pytest.fixture
def page(chromium, request) -> Iterator:
    """A fresh page; it records JavaScript errors (`page.js_errors`) and Content-Security-Policy
    violations (`page.csp_violations`), and a test that passes with a violation fails at teardown."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    violations: list[str] = []

    def note_violation(text: str) -> None:
        violations.append(text)

    context.expose_function("__labsCspViolation", note_violation)
    context.add_init_script(_WATCH_CSP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def note_console(message) -> None:
        text = _csp_console_message(page, message)
        if text:
            violations.append(text)

    page.on("console", note_console)
    page.js_errors = errors  # type: ignore[attr-defined]
    page.csp_violations = violations  # type: ignore[attr-defined]
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failure.png"), full_page=True)
    context.close()
    if failed is not None and failed.passed and violations:
        pytest.fail(f"the pages broke their Content-Security-Policy: {violations}")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def sign_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.locator("input[name=login]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign in", exact=False).click()
    page.wait_for_load_state("networkidle")


def assert_no_error_page(page) -> None:
    title = page.title()
    for marker in ("Error", "Server Error", "Page not found", "Forbidden"):
        assert marker not in title, f"error page: {title}"
    assert not page.js_errors, page.js_errors  # type: ignore[attr-defined]
    assert not page.csp_violations, page.csp_violations  # type: ignore[attr-defined]


# ---- consoles: a real ASGI server (tests/e2e/live_server.py) and a real VNC desktop --------


@dataclass(frozen=True)
class VncDesktop:
    host: str
    port: int
    display: int  # the X display x11vnc serves, for looking at the desktop's side (xprop, xev)

    @property
    def endpoint(self) -> dict[str, object]:
        """What a session's endpoints["vnc"] holds."""
        return {"host": self.host, "port": self.port}

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": f":{self.display}"}


@pytest.fixture
def vnc_desktop(tmp_path) -> Iterator[VncDesktop]:
    """A real X display served by x11vnc on 127.0.0.1 (tests/vnc_server.py), painted with a
    checkerboard so that what reaches the browser is neither black nor one flat colour.

    Needs Debian's xvfb, x11vnc, x11-xserver-utils and x11-utils (the test script installs them);
    missing ones fail the test.
    """
    import subprocess

    from tests.vnc_server import VncServerUnavailable, running_vnc_server

    try:
        with running_vnc_server(tmp_path / "vnc", width=1024, height=640) as server:
            env = {**os.environ, "DISPLAY": f":{server.display}"}
            subprocess.run(["xsetroot", "-mod", "16", "16", "-fg", "#f97316", "-bg", "#1d4ed8"],
                           env=env, check=True, timeout=15)
            yield VncDesktop(server.endpoint["host"], server.endpoint["port"], server.display)
    except VncServerUnavailable as exc:
        pytest.fail(f"the VNC test server could not start: {exc}")


@pytest.fixture
def learner(owner, password):
    """The fixed learner, with a password the live server (another process) accepts."""
    from tests.e2e.live_server import set_server_password

    set_server_password(owner, password)
    return owner


@pytest.fixture
def docker_instance() -> str:
    """A Docker label of the test's own, under the run's (LAB_TEST_DOCKER_INSTANCE): concurrent runs never meet."""
    return f"{os.environ.get('LAB_TEST_DOCKER_INSTANCE', 'labstest')}e2e{uuid.uuid4().hex[:6]}"


_CANVAS_PAINT = """() => {
    const canvas = document.querySelector('[data-vnc-screen] canvas');
    if (!canvas || !canvas.width || !canvas.height) return {colours: 0, lit: 0};
    const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    const colours = new Set();
    let lit = 0;
    for (let i = 0; i < data.length; i += 4 * 13) {
        if (data[i] + data[i + 1] + data[i + 2] > 60) lit += 1;
        colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    return {colours: colours.size, lit};
}"""


def wait_for_painted_vnc_screen(page, timeout: float) -> dict[str, int]:
    """Wait until the noVNC canvas shows at least two colours and something lit; fail if it stays blank."""
    deadline = time.monotonic() + timeout
    seen = {"colours": 0, "lit": 0}
    while time.monotonic() < deadline:
        seen = page.evaluate(_CANVAS_PAINT)
        if seen["colours"] >= 2 and seen["lit"] > 0:
            return seen
        page.wait_for_timeout(250)
    raise AssertionError(f"the VNC screen stayed blank: {seen}")
