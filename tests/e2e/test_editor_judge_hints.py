"""The editor, the judge and the hint panel as a learner meets them: real Chromium, real daphne and,
for the editor and the judge, a real Docker session on labs/base:bookworm.

- the editor lists the starter files, opens one in CodeMirror with syntax highlighting, marks
  typing as unsaved, saves with Ctrl-S into the container, creates, renames and deletes files,
  and offers both ways out of a save conflict (overwrite, reload) that do what they say;
- a step's Check shows "Checking…", then the failure with its code and hint, without a page
  load; after the work is fixed in the editor the step passes and the next one unlocks;
- "Get a hint" without an API key gives the lab's own hint, labelled as the fallback; with the
  Gemini double it gives the model's answer;
- the copy button of a code block in the instructions puts its text on the clipboard.

The server runs jobs inside its requests (LAB_RQ_ASYNC=false, live_server.py), as it is told to.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from judge.models import Attempt, HintRequest
from labs.models import Image, Lab, LabStep
from runners import get_runner
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in
from tests.e2e.live_server import docker_runner_for_server
from tests.gemini_double import GeminiDouble

pytestmark = pytest.mark.browser

STARTUP_MS = 90_000
ACTION_MS = 30_000  # one runner round trip (docker exec) on a loaded machine, with room to spare

STARTER_FILES = {
    "Dockerfile": "FROM python:3.12-slim\nWORKDIR /app\nCOPY app.py .\nCMD [\"python\", \"app.py\"]\n",
    "app.py": "def greet(name):\n    return f\"hello {name}\"\n\n\nprint(greet(\"lab\"))\n",
    "notes.txt": "remember to test\n",
    "src/helpers.py": "VALUE = 1\n",
}


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def gemini_double() -> Iterator[GeminiDouble]:
    with GeminiDouble() as double:
        yield double


@pytest.fixture
def hint_environment(request, monkeypatch) -> None:
    """The server copies os.environ when it starts: no Gemini key unless the test asks for the
    double, whatever the developer's shell holds, so the fallback is what the page shows."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("LAB_GEMINI_BASE_URL", raising=False)
    if "gemini_double" in request.fixturenames:
        double: GeminiDouble = request.getfixturevalue("gemini_double")
        monkeypatch.setenv("GEMINI_API_KEY", double.api_key)
        monkeypatch.setenv("LAB_GEMINI_BASE_URL", double.url)
        monkeypatch.setenv("LAB_GEMINI_TIMEOUT_SECONDS", "10")


@pytest.fixture
def extra_lab_runners(request, hint_environment) -> Iterator[dict[str, Any]]:
    """asgi_live_server depends on this fixture, so the environment above is in place before it
    starts. Tests that ask for `docker_instance` get a Docker runner under that label, and every
    container under it is removed afterwards."""
    if "docker_instance" not in request.fixturenames:
        yield {}
        return
    with docker_runner_for_server(request.getfixturevalue("docker_instance")) as runners:
        yield runners


@pytest.fixture
def lab_dir(tmp_path) -> Path:
    """A lab directory whose files/ the runner copies into the workspace at start."""
    root = tmp_path / "lab"
    for name, text in STARTER_FILES.items():
        path = root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# ---- helpers -------------------------------------------------------------------------------------


def make_lab(reference: str, **fields: Any) -> Lab:
    image, _ = Image.objects.get_or_create(name=reference.replace("/", "-").replace(":", "-"),
                                           defaults={"reference": reference})
    defaults: dict[str, Any] = {"slug": f"lab-{uuid.uuid4().hex[:8]}", "title": "Editor lab", "image": image,
                                "runner": "docker", "memory_mb": 256, "published": True, "consoles": ["editor"]}
    defaults.update(fields)
    return Lab.objects.create(**defaults)


def start_from_the_page(page: Page, url: str, lab: Lab, learner: Any) -> Session:
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    session = Session.objects.get(user=learner, lab=lab)
    assert session.state == State.RUNNING, session.error
    return session


def in_container(session: Session, script: str) -> str:
    """Run a shell script in the session through its runner (as the learner), return stdout."""
    session.refresh_from_db()
    result = get_runner(session.runner_name).exec(session.runner_state, ["sh", "-c", script], timeout=20)
    assert result.exit_code == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def tree_item(page: Page, path: str):
    return page.locator(f'[data-editor-tree] [data-path="{path}"]')


def editor_text(page: Page) -> str | None:
    current = page.evaluate("window.LabEditor.current()")
    return None if current is None else str(current["content"])


def open_in_editor(page: Page, path: str) -> None:
    tree_item(page, path).locator(":scope > .editor-node-label").click()
    expect(page.locator("[data-editor-filename]")).to_have_text(path, timeout=ACTION_MS)
    expect(page.locator("[data-editor-status]")).to_have_text(f"Opened {path}.", timeout=ACTION_MS)


def type_at_end(page: Page, text: str) -> None:
    """Type at the end of the open file, as a learner would (no Enter: it could accept a completion)."""
    page.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)
    page.keyboard.press("Escape")  # close any completion popup the typing opened


def save_with_ctrl_s(page: Page, path: str) -> None:
    page.keyboard.press("Control+s")
    expect(page.locator("[data-editor-status]")).to_have_text(f"Saved {path}.", timeout=ACTION_MS)
    expect(page.locator("[data-editor-dirty]")).to_be_hidden()


def answer_prompt(page: Page, value: str) -> None:
    dialog = page.locator("dialog[data-editor-prompt]")
    expect(dialog).to_be_visible()
    dialog.locator("[data-editor-prompt-input]").fill(value)
    dialog.locator("[data-editor-prompt-ok]").click()
    expect(dialog).to_be_hidden()


def screenshot(page: Page, name: str) -> None:
    # From the top: a full-page shot of a scrolled page draws the sticky header over the content.
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def mark_the_document(page: Page) -> None:
    """A marker that only survives while this document lives: a navigation or reload drops it."""
    page.evaluate("window.__sameDocument = 'still here'")


def assert_same_document(page: Page, url: str) -> None:
    assert page.url == url, f"the page navigated: {url} -> {page.url}"
    assert page.evaluate("window.__sameDocument") == "still here", "the page was reloaded"


# ---- the editor ----------------------------------------------------------------------------------


@pytest.mark.docker
def test_the_editor_lists_opens_highlights_saves_creates_renames_deletes_and_resolves_conflicts(
    asgi_live_server, page, learner, password, docker_instance, lab_dir
):
    url = asgi_live_server.url
    lab = make_lab("labs/base:bookworm", source_path=str(lab_dir))
    sign_in(page, url, learner.username, password)
    session = start_from_the_page(page, url, lab, learner)

    # The tree lists the starter files (folders first), the folder opens on a click.
    editor = page.locator("[data-editor]")
    expect(tree_item(page, "Dockerfile")).to_be_visible(timeout=ACTION_MS)
    top_level = editor.locator('[data-editor-tree] > li[aria-level="1"]').evaluate_all(
        "items => items.map(li => li.dataset.path)")
    assert top_level == ["src", "Dockerfile", "app.py", "notes.txt"], top_level
    tree_item(page, "src").locator(":scope > .editor-node-label").click()
    expect(tree_item(page, "src/helpers.py")).to_be_visible(timeout=ACTION_MS)
    expect(tree_item(page, "src")).to_have_attribute("aria-expanded", "true")

    # A Dockerfile opens in CodeMirror with its instructions highlighted.
    open_in_editor(page, "Dockerfile")
    content = page.locator(".cm-editor .cm-content")
    expect(content).to_be_visible()
    expect(content).to_have_attribute("aria-label", "Contents of Dockerfile")
    assert editor_text(page) == STARTER_FILES["Dockerfile"]
    keyword = content.locator(".cm-line").first.locator("span", has_text="FROM")
    expect(keyword).to_have_count(1)
    plain = content.evaluate("e => getComputedStyle(e).color")
    assert keyword.evaluate("e => getComputedStyle(e).color") != plain, "FROM is not highlighted"
    expect(page.locator("[data-editor-dirty]")).to_be_hidden()

    # So does Python: `def` and the string get highlight token spans.
    open_in_editor(page, "app.py")
    expect(content).to_have_attribute("aria-label", "Contents of app.py")
    expect(content.locator(".cm-line").first.locator("span", has_text=re.compile(r"^def$"))).to_have_count(1)
    assert content.locator(".cm-line span[class]").count() >= 4, "no syntax highlighting in app.py"

    # Typing marks the file unsaved; Ctrl-S saves it into the container and clears the mark.
    type_at_end(page, "# edited in the browser")
    expect(page.locator("[data-editor-dirty]")).to_be_visible()
    expect(editor).to_have_class(re.compile(r"\bis-dirty\b"))
    assert in_container(session, "cat /workspace/app.py") == STARTER_FILES["app.py"]
    save_with_ctrl_s(page, "app.py")
    assert in_container(session, "cat /workspace/app.py") == STARTER_FILES["app.py"] + "# edited in the browser"
    screenshot(page, "editor.png")

    # New file: created empty in the container, listed and opened; typed and saved.
    page.get_by_role("button", name="New file").click()
    answer_prompt(page, "hello.sh")
    expect(tree_item(page, "hello.sh")).to_be_visible(timeout=ACTION_MS)
    expect(page.locator("[data-editor-filename]")).to_have_text("hello.sh")
    assert in_container(session, "test -f /workspace/hello.sh && wc -c < /workspace/hello.sh").strip() == "0"
    type_at_end(page, "echo hi from the editor")
    save_with_ctrl_s(page, "hello.sh")
    assert in_container(session, "cat /workspace/hello.sh") == "echo hi from the editor"

    # Rename (the new file is selected): the tree, the open file and the container follow.
    expect(tree_item(page, "hello.sh")).to_have_attribute("aria-selected", "true")
    page.get_by_role("button", name="Rename").click()
    answer_prompt(page, "scripts/greet.sh")
    expect(tree_item(page, "scripts/greet.sh")).to_be_visible(timeout=ACTION_MS)
    expect(tree_item(page, "hello.sh")).to_have_count(0)
    expect(page.locator("[data-editor-filename]")).to_have_text("scripts/greet.sh")
    assert in_container(session, "cat /workspace/scripts/greet.sh; test ! -e /workspace/hello.sh") == (
        "echo hi from the editor")

    # Delete, after the page's confirmation: gone from the tree, the editor and the container.
    open_in_editor(page, "notes.txt")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(tree_item(page, "notes.txt")).to_have_count(0, timeout=ACTION_MS)
    expect(page.locator("[data-editor-empty]")).to_have_text("notes.txt was deleted.")
    expect(page.locator("[data-editor-filename]")).to_have_text("No file open")
    assert in_container(session, "test ! -e /workspace/notes.txt && ls /workspace | sort").split() == [
        "Dockerfile", "app.py", "scripts", "src"]

    # A conflict: the file changes in the container while it is open with edits in the browser.
    conflict = page.locator("dialog[data-editor-conflict]")
    open_in_editor(page, "app.py")
    type_at_end(page, " (mine)")
    in_container(session, "printf 'print(\"from the terminal\")\\n' > /workspace/app.py")
    page.keyboard.press("Control+s")
    expect(conflict).to_be_visible(timeout=ACTION_MS)
    expect(conflict.locator("[data-editor-conflict-message]")).to_contain_text(
        "app.py changed on disk since you opened it.")
    conflict.locator("summary").click()
    expect(conflict.locator("[data-editor-conflict-disk]")).to_have_text('print("from the terminal")\n')
    # "Overwrite with my version" writes the browser's text over the container's.
    mine = editor_text(page)
    assert mine is not None and mine.endswith("# edited in the browser (mine)")
    conflict.get_by_role("button", name="Overwrite with my version").click()
    expect(conflict).to_be_hidden()
    expect(page.locator("[data-editor-status]")).to_have_text("Saved app.py.", timeout=ACTION_MS)
    expect(page.locator("[data-editor-dirty]")).to_be_hidden()
    assert in_container(session, "cat /workspace/app.py") == mine

    # Again, and this time "Reload from disk": the container's text replaces the edits, nothing written.
    type_at_end(page, " (lost)")
    in_container(session, "printf 'print(\"second change\")\\n' > /workspace/app.py")
    page.keyboard.press("Control+s")
    expect(conflict).to_be_visible(timeout=ACTION_MS)
    conflict.get_by_role("button", name="Reload from disk (lose my changes)").click()
    expect(conflict).to_be_hidden()
    expect(page.locator("[data-editor-status]")).to_have_text("Reloaded app.py from disk.")
    expect(page.locator("[data-editor-dirty]")).to_be_hidden()
    assert editor_text(page) == 'print("second change")\n'
    assert in_container(session, "cat /workspace/app.py") == 'print("second change")\n'
    # ...and the reloaded text is the new base: the next save goes through without a conflict.
    type_at_end(page, "# after the reload")
    save_with_ctrl_s(page, "app.py")
    assert in_container(session, "cat /workspace/app.py") == 'print("second change")\n# after the reload'
    assert_no_error_page(page)


# ---- the judge and the fallback hint -----------------------------------------------------------


@pytest.mark.docker
def test_a_step_check_fails_with_its_code_and_hint_then_passes_and_unlocks_the_next_step_in_place(
    asgi_live_server, page, learner, password, docker_instance
):
    url = asgi_live_server.url
    lab = make_lab("labs/base:bookworm", title="Judge lab")
    first = LabStep.objects.create(
        lab=lab, order=1, title="Write a greeting",
        body="Put the word *hello* in `greeting.txt`.",
        verify=[{"kind": "file", "path": "greeting.txt", "contains": "hello",
                 "hint": "Create `greeting.txt` in the workspace with the word hello in it."}],
        hints=["The editor's New file button creates it."],
    )
    second = LabStep.objects.create(
        lab=lab, order=2, title="Make a script", body="Create `run.sh`.",
        verify=[{"kind": "command", "run": "test -f run.sh"}],
    )
    sign_in(page, url, learner.username, password)
    session = start_from_the_page(page, url, lab, learner)
    session_url = page.url
    mark_the_document(page)

    first_box = page.locator(f'[data-judge-step="{first.pk}"]')
    second_box = page.locator(f'[data-judge-step="{second.pk}"]')
    final_box = page.locator("#judge-final")
    expect(second_box).to_have_attribute("data-locked", "true")
    expect(second_box).to_contain_text("Locked")
    expect(final_box).to_contain_text("0 of 2 checked steps passed.")

    # Record what the step's box shows while the check runs (the request is the whole check here).
    watch_checking = """box => {
        window.__seenWhileChecking = [];
        const note = () => window.__seenWhileChecking.push(document.querySelector(box).innerText);
        new MutationObserver(note).observe(document.body, {subtree: true, childList: true,
                                                            attributes: true, attributeFilter: ["class"]});
    }"""
    page.evaluate(watch_checking, f'[data-judge-step="{first.pk}"]')

    # Check before the work is done: "Checking…", then the failure with its code and hint, in place.
    first_box.get_by_role("button", name="Check this step").click()
    failure = first_box.locator('.judge-failures li[data-code="file_missing"]')
    expect(failure).to_be_visible(timeout=ACTION_MS)
    first_box = page.locator(f'[data-judge-step="{first.pk}"]')
    expect(first_box).to_have_attribute("data-passed", "false")
    expect(first_box).to_contain_text("Not passed yet")
    expect(first_box.locator(".judge-attempt")).to_contain_text("Not yet.")
    expect(failure).to_contain_text("greeting.txt")
    expect(failure.locator(".hint")).to_have_text(
        "Hint: Create greeting.txt in the workspace with the word hello in it.")
    expect(failure.locator(".hint code")).to_have_text("greeting.txt")
    expect(failure.locator("code[title='failure code']")).to_have_text("file_missing")
    # The "Hint:" line is plain muted text, not styled as a card of the hint panel below.
    # (a retrying expectation: the step boxes may be swapped in again by the progress refresh)
    expect(failure.locator(".hint")).to_have_css("border-left-style", "none")
    seen = page.evaluate("window.__seenWhileChecking")
    assert any("Checking…" in text for text in seen), seen
    assert_same_document(page, session_url)
    expect(second_box).to_have_attribute("data-locked", "true")
    screenshot(page, "judge-failed.png")

    # No Gemini key: "Get a hint" answers with the lab's own hints, labelled as the fallback.
    page.get_by_role("button", name="Get a hint").click()
    hint = page.locator("article.hint-fallback").first
    expect(hint).to_be_visible(timeout=ACTION_MS)
    expect(hint.locator(".hint-source")).to_have_text("Lab hint (fallback)")
    expect(hint).to_have_css("border-left-style", "solid")  # the panel's cards keep theirs
    expect(hint.locator(".hint-answer")).to_contain_text(
        "Create greeting.txt in the workspace with the word hello in it.")
    expect(hint.locator(".hint-answer")).to_contain_text("The editor's New file button creates it.")
    stored = HintRequest.objects.get(session=session)
    assert stored.source == HintRequest.Source.FALLBACK and stored.step_id == first.pk
    assert_same_document(page, session_url)

    # Fix the work in the editor, as the learner would.
    page.get_by_role("button", name="New file").click()
    answer_prompt(page, "greeting.txt")
    expect(page.locator("[data-editor-filename]")).to_have_text("greeting.txt", timeout=ACTION_MS)
    type_at_end(page, "hello, judge")
    save_with_ctrl_s(page, "greeting.txt")

    # Check again: passed; the next step unlocks and the progress moves, all without a page load.
    first_box.get_by_role("button", name="Check again").click()
    first_box = page.locator(f'[data-judge-step="{first.pk}"]')
    expect(first_box).to_have_attribute("data-passed", "true", timeout=ACTION_MS)
    expect(first_box.locator(".judge-attempt")).to_contain_text("Passed.")
    expect(first_box).to_contain_text("✓ Step passed")
    expect(second_box).to_have_attribute("data-locked", "false", timeout=ACTION_MS)
    page.locator("#step-2 summary").click()  # the learner opens the next step: its Check is there now
    expect(second_box.get_by_role("button", name="Check this step")).to_be_visible()
    expect(second_box).not_to_contain_text("Locked")
    expect(final_box).to_contain_text("1 of 2 checked steps passed.", timeout=ACTION_MS)
    assert_same_document(page, session_url)
    assert list(Attempt.objects.filter(session=session).order_by("pk").values_list("passed", flat=True)) == [
        False, True]
    screenshot(page, "judge-passed.png")
    assert_no_error_page(page)


# ---- the model's hint and the copy button (no container needed) ----------------------------------


def test_get_a_hint_shows_the_models_answer_and_a_code_block_copies_to_the_clipboard(
    asgi_live_server, page, learner, password, gemini_double
):
    url = asgi_live_server.url
    gemini_double.reply("Look at which **port** your app listens on.")
    lab = make_lab("labs/tiny:test", runner="fake", consoles=[], title="Hint lab")
    LabStep.objects.create(lab=lab, order=1, title="Serve it",
                           body="Start the server:\n\n```bash\npython3 -m http.server 8080\n```\n")
    now = timezone.now()
    session = Session.objects.create(user=learner, lab=lab, state=State.RUNNING, runner_name="fake",
                                     started_at=now, expires_at=now + timedelta(minutes=30), last_active_at=now,
                                     runner_state={"env_id": "not-here"})
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{session.get_absolute_url()}")
    session_url = page.url
    mark_the_document(page)

    # The model's answer shows as a hint, not as the fallback.
    page.get_by_role("button", name="Get a hint").click()
    hint = page.locator("article.hint-gemini").first
    expect(hint).to_be_visible(timeout=ACTION_MS)
    expect(hint.locator(".hint-source")).to_have_text("Hint")
    expect(hint.locator(".hint-answer")).to_have_text("Look at which port your app listens on.")
    expect(hint.locator(".hint-answer strong")).to_have_text("port")
    expect(page.locator("article.hint-fallback")).to_have_count(0)
    assert len(gemini_double.requests) == 1
    assert "Serve it" in gemini_double.requests[0].prompt
    assert_same_document(page, session_url)

    # Click-to-copy on the instructions' code block.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    block = page.locator("#step-1 [data-code-block]")
    copy = block.get_by_role("button", name="Copy code")
    expect(copy).to_be_visible()
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "python3 -m http.server 8080"
    assert_same_document(page, session_url)
    assert_no_error_page(page)
