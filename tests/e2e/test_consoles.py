"""The consoles in a real Chromium against a real ASGI server (daphne): terminal tabs on a Docker
session (keyboard, paste, text size), the same shells again after a page reload and after a server
restart, the web preview of a server started from the terminal, a terminal the runner cannot open,
and the graphical console on a real VNC server (Xvfb + x11vnc)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import docker
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from labs.models import Image, Lab, LabStep
from runners.docker import LABEL_MANAGED
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, VncDesktop, assert_no_error_page, sign_in, wait_for_painted_vnc_screen
from tests.e2e.live_server import docker_runner_for_server

pytestmark = pytest.mark.browser

STARTUP_MS = 90_000


@pytest.fixture
def extra_lab_runners(request):
    """For tests that ask for `docker_instance`: a Docker runner whose containers carry that
    label, all removed afterwards."""
    if "docker_instance" not in request.fixturenames:
        yield {}
        return
    with docker_runner_for_server(request.getfixturevalue("docker_instance")) as runners:
        yield runners


def make_lab(reference: str, **fields) -> Lab:
    image, _ = Image.objects.get_or_create(name=reference.replace("/", "-").replace(":", "-"),
                                           defaults={"reference": reference})
    defaults = {"slug": f"lab-{uuid.uuid4().hex[:8]}", "title": "Console lab", "image": image, "runner": "docker",
                "memory_mb": 256, "published": True, "consoles": ["terminal"]}
    defaults.update(fields)
    return Lab.objects.create(**defaults)


def running_session(user, lab: Lab, **fields) -> Session:
    now = timezone.now()
    return Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name=lab.runner, started_at=now,
                                  expires_at=now + timedelta(minutes=30), last_active_at=now, **fields)


def rows_text(page, tab: str) -> str:
    return page.locator(f'[data-terminal-panel="{tab}"] .xterm-rows').inner_text()


def wait_for_text(page, tab: str, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = rows_text(page, tab)
        if text in seen:
            return seen
        page.wait_for_timeout(200)
    raise AssertionError(f"{text!r} never showed in terminal {tab}; it shows:\n{seen}")


def wait_connected(page, tab: str) -> None:
    page.locator(f'[data-terminal-panel="{tab}"] [data-terminal-state="connected"]').wait_for(timeout=30_000)


def select_word(page, tab: str, word: str) -> None:
    """Double-click the last terminal row that reads exactly `word`, as a learner selects it."""
    rows = page.locator(f'[data-terminal-panel="{tab}"] .xterm-rows > div')
    index = rows.evaluate_all("(rows, word) => rows.map(r => r.textContent.trim()).lastIndexOf(word)", word)
    assert index >= 0, f"no row reads {word!r}"
    box = rows.nth(index).bounding_box()
    assert box is not None
    page.mouse.dblclick(box["x"] + 4, box["y"] + box["height"] / 2)
    selected = page.locator(f'[data-terminal-panel="{tab}"] .xterm-selection div')
    selected.first.wait_for(state="attached", timeout=5_000)


def type_command(page, tab: str, command: str) -> None:
    page.locator(f'[data-terminal-screen="{tab}"]').click()
    page.keyboard.type(command)
    page.keyboard.press("Enter")


@pytest.mark.docker
def test_a_learner_runs_commands_in_terminal_tabs_reconnects_and_previews_a_web_page(
    asgi_live_server, page, learner, password, docker_instance
):
    url = asgi_live_server.url
    lab = make_lab("labs/base:bookworm", exposed_ports=[8080])
    sign_in(page, url, learner.username, password)

    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    session = Session.objects.get(user=learner, lab=lab)
    assert session.state == State.RUNNING, session.error

    # Tab 1: the first shell answers.
    expect(page.locator("[data-terminal-tab]")).to_have_text(["Terminal 1"])
    wait_connected(page, "1")
    type_command(page, "1", "echo $((6*7))")
    assert "\n42" in wait_for_text(page, "1", "\n42")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "terminal.png"), full_page=True)

    # Tab 2: a second, separate shell.
    page.get_by_role("button", name="New terminal").click()
    wait_connected(page, "2")
    expect(page.get_by_role("tab", name="Terminal 2")).to_have_attribute("aria-selected", "true")
    expect(page.locator('[data-terminal-panel="1"]')).to_be_hidden()
    type_command(page, "2", "echo second-$((20+3))")
    wait_for_text(page, "2", "\nsecond-23")

    # A reload reconnects both tabs to the same shells (tmux keeps them), tab 2 still in front.
    page.reload()
    expect(page.locator("[data-terminal-tab]")).to_have_text(["Terminal 1", "Terminal 2"])
    wait_connected(page, "2")
    expect(page.get_by_role("tab", name="Terminal 2")).to_have_attribute("aria-selected", "true")
    expect(page.locator('[data-terminal-panel="2"] .conn-detail')).to_have_text("reattached")
    wait_for_text(page, "2", "second-23")
    page.get_by_role("tab", name="Terminal 1").click()
    wait_connected(page, "1")
    wait_for_text(page, "1", "\n42")

    # Keyboard: arrows move between tabs, Delete closes one; the closed tab stays closed on reload.
    page.get_by_role("tab", name="Terminal 1").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Terminal 2")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Delete")
    expect(page.locator("[data-terminal-tab]")).to_have_text(["Terminal 1"])
    expect(page.get_by_role("tab", name="Terminal 1")).to_have_attribute("aria-selected", "true")

    # The Paste button types the clipboard into the shell; the text size is remembered.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page.evaluate("navigator.clipboard.writeText('echo pasted-$((1+1))')")
    page.get_by_role("button", name="Paste").click()
    wait_for_text(page, "1", "echo pasted-$((1+1))")  # the clipboard read is async: wait for it
    page.locator('[data-terminal-screen="1"]').click()  # Enter must reach the shell, not the Paste button
    page.keyboard.press("Enter")
    wait_for_text(page, "1", "\npasted-2")

    # The Copy button copies what is selected in the terminal (a double-click selects a word).
    page.evaluate("navigator.clipboard.writeText('')")
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == ""  # nothing selected: nothing copied
    select_word(page, "1", "pasted-2")
    page.get_by_role("button", name="Copy").click()
    deadline = time.monotonic() + 10
    while (copied := page.evaluate("navigator.clipboard.readText()")) != "pasted-2":
        assert time.monotonic() < deadline, f"the clipboard holds {copied!r}"
        page.wait_for_timeout(200)
    page.get_by_role("button", name="Larger text").click()
    page.reload()
    expect(page.locator("[data-terminal-tab]")).to_have_text(["Terminal 1"])
    wait_connected(page, "1")
    assert page.evaluate("localStorage.getItem('labs:terminal-font-size')") == "15"
    rows = page.locator('[data-terminal-screen="1"] .xterm-rows')
    expect(rows).to_have_css("font-size", "15px")

    # The server goes away for a moment (a redeploy): the tab says it is reconnecting, then it is
    # back on the same shell by itself.
    page.evaluate("""() => {
        const badge = document.querySelector('[data-terminal-panel="1"] .conn-badge');
        window.seenStates = [];
        new MutationObserver(() => window.seenStates.push(badge.dataset.terminalState))
            .observe(badge, {attributes: true, attributeFilter: ["data-terminal-state"]});
    }""")
    asgi_live_server.restart(down_seconds=2)
    wait_connected(page, "1")
    assert "reconnecting" in page.evaluate("window.seenStates")
    wait_for_text(page, "1", "pasted-2")
    type_command(page, "1", "echo after-$((100+1))")
    wait_for_text(page, "1", "\nafter-101")

    # A web server started from the terminal shows in the Preview tab.
    type_command(page, "1", "mkdir -p /tmp/site && cd /tmp/site && "
                            "echo '<h1>Hello from port 8080</h1>' > index.html && python3 -m http.server 8080")
    wait_for_text(page, "1", "Serving HTTP")
    page.get_by_role("tab", name="Preview").click()
    frame = page.frame_locator("[data-preview-frame]")
    heading = frame.get_by_role("heading", name="Hello from port 8080")
    deadline = time.monotonic() + 30
    while not heading.is_visible():
        assert time.monotonic() < deadline, "the preview never showed the page"
        page.wait_for_timeout(1000)
        if not heading.is_visible():
            page.locator("[data-preview-reload]").click()
    assert page.locator("[data-preview-open]").get_attribute("href") == f"/sessions/{session.pk}/preview/8080/"
    page.screenshot(path=str(ARTIFACTS / "preview.png"), full_page=True)
    assert_no_error_page(page)

    # Stop from the page: the container goes away and the consoles give way to their placeholders.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop session").click()
    page.locator('#session-status[data-state="stopped"]').wait_for(timeout=STARTUP_MS)
    assert page.locator(".xterm").count() == 0
    page.get_by_role("tab", name="Terminal", exact=True).click()
    expect(page.get_by_text("The terminal connects here when the session is running.")).to_be_visible()
    engine = docker.from_env()
    assert engine.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}={docker_instance}"}) == []


@pytest.mark.docker
def test_keys_typed_before_the_terminal_says_connected_reach_the_shell(asgi_live_server, page, learner, password,
                                                              docker_instance):
    url = asgi_live_server.url
    lab = make_lab("labs/base:bookworm")
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    # The server's first messages ("ready" among them) are held back while the learner types, as
    # on a slow link: keys typed before the shell is attached must reach it once it is.
    held: list[str | bytes] = []
    released: list[bool] = []
    sockets: list = []

    def delay_ready(ws) -> None:
        sockets.append(ws)
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if released:
                ws.send(message)
            else:
                held.append(message)

        server.on_message(from_server)

    page.route_web_socket(re.compile(r".*/terminal/.*"), delay_ready)
    page.reload()
    page.locator('[data-terminal-screen="1"] .xterm-helper-textarea').wait_for(state="attached")
    page.locator('[data-terminal-screen="1"]').click()
    page.keyboard.type("echo early-$((3*3))")
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 30
    while not held:  # the server has attached the shell and said so; the page does not know yet
        assert time.monotonic() < deadline, "the terminal never answered"
        page.wait_for_timeout(100)
    assert page.locator('[data-terminal-panel="1"] [data-terminal-state="connected"]').count() == 0
    # Playwright runs the handler only inside Playwright calls: drain in order, then let through.
    while held:
        sockets[-1].send(held.pop(0))
    released.append(True)
    wait_connected(page, "1")
    wait_for_text(page, "1", "\nearly-9", timeout=30)


def test_a_terminal_the_runner_cannot_open_says_so_and_offers_to_reconnect(asgi_live_server, page, learner, password):
    # The fake runner's environments live in the test process, so the server cannot attach to this one.
    lab = make_lab("labs/tiny:test", runner="fake")
    session = running_session(learner, lab, runner_state={"env_id": "not-here"})
    sign_in(page, asgi_live_server.url, learner.username, password)
    page.goto(f"{asgi_live_server.url}{session.get_absolute_url()}")

    badge = page.locator('[data-terminal-panel="1"] [data-terminal-state="disconnected"]')
    badge.wait_for(timeout=20_000)
    assert "Cannot open a terminal" in page.locator('[data-terminal-panel="1"] .conn-detail').inner_text()
    expect(page.locator('[data-terminal-panel="1"] [data-reconnect]')).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "terminal-error.png"))
    assert_no_error_page(page)


def _x_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required to look at the test desktop: apt-get install -y x11-utils")
    return path


def desktop_cut_buffer(desktop: VncDesktop) -> str:
    """CUT_BUFFER0 on the desktop's root window, read from the X server itself: x11vnc stores
    there the text a viewer sends. (It also claims PRIMARY, but on this Xvfb `xclip -o` got no
    answer from it for PRIMARY or CLIPBOARD in our trials; the cut buffer is reliable.)"""
    result = subprocess.run([_x_tool("xprop"), "-root", "CUT_BUFFER0"], env=desktop.env(),
                            capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r'CUT_BUFFER0\(\w+\) = "(.*)"$', result.stdout.strip())
    return match.group(1) if match else ""


@contextlib.contextmanager
def watching_keys(desktop: VncDesktop, log_path: Path) -> Iterator[Callable[[], list[tuple[str, str]]]]:
    """xev on the desktop's root window: every key the X server delivers there. Yields a function
    returning what it saw so far as (KeyPress|KeyRelease, keysym name) pairs, in order."""
    with log_path.open("wb") as log:
        # stdbuf: xev's stdout is a file here, which libc would otherwise buffer until exit.
        watcher = subprocess.Popen(["stdbuf", "-oL", _x_tool("xev"), "-root", "-event", "keyboard"],
                                   env=desktop.env(), stdout=log, stderr=subprocess.STDOUT)

    def seen() -> list[tuple[str, str]]:
        text = log_path.read_text(errors="replace")
        return re.findall(r"^(KeyPress|KeyRelease) event.*?\(keysym 0x[0-9a-f]+, (\w+)\)", text, re.M | re.S)

    try:
        yield seen
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


CTRL_ALT_DEL = [("KeyPress", "Control_L"), ("KeyPress", "Alt_L"), ("KeyPress", "Delete"),
                ("KeyRelease", "Delete"), ("KeyRelease", "Alt_L"), ("KeyRelease", "Control_L")]


def contains_run(events: list[tuple[str, str]], run: list[tuple[str, str]]) -> bool:
    return any(events[i:i + len(run)] == run for i in range(len(events) - len(run) + 1))


def test_the_desktop_console_shows_a_real_vnc_screen(
    asgi_live_server, page, learner, password, vnc_desktop, tmp_path
):
    lab = make_lab("labs/tiny:test", runner="fake", consoles=["vnc"])
    session = Session.objects.create(user=learner, lab=lab, state=State.PROVISIONING, runner_name="fake")
    sign_in(page, asgi_live_server.url, learner.username, password)
    page.goto(f"{asgi_live_server.url}{session.get_absolute_url()}")
    expect(page.get_by_text("The graphical desktop connects here when the session is running.")).to_be_visible()

    # The page notices the session is ready (it polls the status) and connects without a reload.
    now = timezone.now()
    Session.objects.filter(pk=session.pk).update(
        state=State.RUNNING, started_at=now, expires_at=now + timedelta(minutes=30), last_active_at=now,
        endpoints={"vnc": vnc_desktop.endpoint},
    )
    page.locator('[data-vnc-state="connected"]').wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Ctrl+Alt+Del").is_enabled()
    wait_for_painted_vnc_screen(page, timeout=20)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "vnc-console.png"), full_page=True)

    # Text typed into the clipboard box reaches the desktop's X server, without breaking the connection.
    assert desktop_cut_buffer(vnc_desktop) == ""
    page.locator("details.vnc-clipboard > summary").click()
    page.get_by_label("Text for the desktop").fill("hello desktop")
    page.get_by_role("button", name="Send clipboard text").click()
    deadline = time.monotonic() + 10
    while desktop_cut_buffer(vnc_desktop) != "hello desktop":
        assert time.monotonic() < deadline, f"the desktop never got the text: {desktop_cut_buffer(vnc_desktop)!r}"
        page.wait_for_timeout(200)
    expect(page.locator('[data-vnc-state="connected"]')).to_be_visible()

    # Ctrl+Alt+Del: the X server delivers Control, Alt and Delete down, then up in reverse order.
    with watching_keys(vnc_desktop, tmp_path / "xev.log") as keys_seen:
        deadline = time.monotonic() + 15
        while not contains_run(keys_seen(), CTRL_ALT_DEL):  # retried: xev may not be listening yet
            assert time.monotonic() < deadline, f"the desktop never saw Ctrl+Alt+Del: {keys_seen()}"
            page.get_by_role("button", name="Ctrl+Alt+Del").click()
            page.wait_for_timeout(500)
        # Only that: nothing else was pressed, nothing left held down.
        assert {name for _, name in keys_seen()} == {"Control_L", "Alt_L", "Delete"}
        assert keys_seen()[-3:] == CTRL_ALT_DEL[-3:]

    # Full screen puts the console (toolbar and screen) in full screen, and the button says so.
    fullscreen = page.get_by_role("button", name="Full screen")
    expect(fullscreen).to_have_attribute("aria-pressed", "false")
    fullscreen.click()
    page.wait_for_function("document.fullscreenElement !== null", timeout=10_000)
    assert page.evaluate("document.fullscreenElement.classList.contains('vnc-console')")
    expect(fullscreen).to_have_attribute("aria-pressed", "true")  # set by the fullscreenchange event
    page.screenshot(path=str(ARTIFACTS / "vnc-console-fullscreen.png"))
    fullscreen.click()
    page.wait_for_function("document.fullscreenElement === null", timeout=10_000)
    expect(fullscreen).to_have_attribute("aria-pressed", "false")
    expect(page.locator('[data-vnc-state="connected"]')).to_be_visible()
    assert_no_error_page(page)


@pytest.mark.docker
def test_a_command_block_in_the_instructions_runs_in_the_open_terminal(
    asgi_live_server, page, learner, password, docker_instance
):
    url = asgi_live_server.url
    lab = make_lab("labs/busybox:latest")
    LabStep.objects.create(lab=lab, order=1, title="Run from here", body="```bash\necho clicked-$((20+22))\n```\n")
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    wait_connected(page, "1")
    page.locator("[data-run-code]").first.click()
    assert "clicked-42" in wait_for_text(page, "1", "\nclicked-42")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop session").click()
    page.locator('#session-status[data-state="stopped"]').wait_for(timeout=STARTUP_MS)
