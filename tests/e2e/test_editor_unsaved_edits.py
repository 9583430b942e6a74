"""The editor with unsaved edits, when another file takes its place (New file, or a file opened from
the tree): it asks, and the edits are saved, discarded or kept exactly as chosen; typing then goes
into the file the title names. Real Chromium, real daphne, a real Docker session.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import assert_no_error_page, sign_in
from tests.e2e.test_editor_judge_hints import (  # noqa: F401 (fixtures: the Docker runner, the starter files)
    ACTION_MS,
    STARTER_FILES,
    answer_prompt,
    editor_text,
    extra_lab_runners,
    hint_environment,
    in_container,
    lab_dir,
    make_lab,
    open_in_editor,
    save_with_ctrl_s,
    start_from_the_page,
    tree_item,
    type_at_end,
)

pytestmark = pytest.mark.browser


def unsaved_dialog(page: Page):
    dialog = page.locator("dialog[data-editor-unsaved]")
    expect(dialog).to_be_visible(timeout=ACTION_MS)
    return dialog


def expect_open(page: Page, path: str, text: str, *, dirty: bool) -> None:
    expect(page.locator("[data-editor-filename]")).to_have_text(path, timeout=ACTION_MS)
    expect(page.locator(".cm-content")).to_have_attribute("aria-label", f"Contents of {path}")
    assert editor_text(page) == text
    if dirty:
        expect(page.locator("[data-editor-dirty]")).to_be_visible()
    else:
        expect(page.locator("[data-editor-dirty]")).to_be_hidden()


@pytest.mark.docker
def test_new_file_with_unsaved_edits_asks_and_does_what_the_learner_chose(
    asgi_live_server, page, learner, password, docker_instance, lab_dir  # noqa: F811
):
    url = asgi_live_server.url
    lab = make_lab("labs/base:bookworm", source_path=str(lab_dir))
    sign_in(page, url, learner.username, password)
    session = start_from_the_page(page, url, lab, learner)
    expect(tree_item(page, "app.py")).to_be_visible(timeout=ACTION_MS)
    app_py = STARTER_FILES["app.py"]

    # Save: the old file's edits are written, then the new file opens and takes the typing.
    open_in_editor(page, "app.py")
    type_at_end(page, "# edit A")
    page.get_by_role("button", name="New file").click()
    answer_prompt(page, "first.txt")
    dialog = unsaved_dialog(page)
    expect(dialog.locator("[data-editor-unsaved-message]")).to_have_text(
        "app.py has unsaved changes. Save them before you create first.txt?")
    dialog.get_by_role("button", name="Save app.py").click()
    expect(dialog).to_be_hidden()
    expect_open(page, "first.txt", "", dirty=False)
    assert in_container(session, "cat /workspace/app.py") == app_py + "# edit A"
    type_at_end(page, "text one")
    expect_open(page, "first.txt", "text one", dirty=True)
    save_with_ctrl_s(page, "first.txt")
    assert in_container(session, "cat /workspace/first.txt") == "text one"
    assert in_container(session, "cat /workspace/app.py") == app_py + "# edit A"

    # Discard: the old file keeps what was saved, the edits are gone, the new file takes the typing.
    type_at_end(page, " dropped B")
    page.get_by_role("button", name="New file").click()
    answer_prompt(page, "second.txt")
    unsaved_dialog(page).get_by_role("button", name="Discard changes to first.txt").click()
    expect_open(page, "second.txt", "", dirty=False)
    type_at_end(page, "text two")
    save_with_ctrl_s(page, "second.txt")
    assert in_container(session, "cat /workspace/first.txt") == "text one"
    assert in_container(session, "cat /workspace/second.txt") == "text two"

    # Cancel: nothing is created, the open file keeps its edits and the typing.
    type_at_end(page, " kept C")
    page.get_by_role("button", name="New file").click()
    answer_prompt(page, "third.txt")
    unsaved_dialog(page).get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-editor-status]")).to_have_text("Still editing second.txt; nothing else was done.")
    expect_open(page, "second.txt", "text two kept C", dirty=True)
    type_at_end(page, " more")
    expect_open(page, "second.txt", "text two kept C more", dirty=True)
    assert in_container(session, "test ! -e /workspace/third.txt && cat /workspace/second.txt") == "text two"
    expect(tree_item(page, "third.txt")).to_have_count(0)

    # Opening a file from the tree asks the same way; Escape is Cancel.
    tree_item(page, "notes.txt").locator(":scope > .editor-node-label").click()
    dialog = unsaved_dialog(page)
    expect(dialog.locator("[data-editor-unsaved-message]")).to_have_text(
        "second.txt has unsaved changes. Save them before you open notes.txt?")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect_open(page, "second.txt", "text two kept C more", dirty=True)
    tree_item(page, "notes.txt").locator(":scope > .editor-node-label").click()
    unsaved_dialog(page).get_by_role("button", name="Save second.txt").click()
    expect_open(page, "notes.txt", STARTER_FILES["notes.txt"], dirty=False)
    assert in_container(session, "cat /workspace/second.txt") == "text two kept C more"
    type_at_end(page, "into notes")
    save_with_ctrl_s(page, "notes.txt")
    assert in_container(session, "cat /workspace/notes.txt") == STARTER_FILES["notes.txt"] + "into notes"
    assert in_container(session, "cat /workspace/second.txt") == "text two kept C more"
    assert_no_error_page(page)
