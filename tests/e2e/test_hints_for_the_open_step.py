"""Hints answer for the step the learner has open, on a three-step lab: real Chromium, real daphne,
a real Docker session and the real judge (the steps pass by the learner's own work in the editor).

The rule (static/js/hints.js): the step last expanded or clicked in while it stays open and
unlocked, else the first open unlocked step. A request naming a locked step, or a step of another
lab, is refused and nothing of that step reaches the page.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from judge.models import HintRequest
from labs.models import LabStep
from tests.e2e.conftest import assert_no_error_page, sign_in
from tests.e2e.test_editor_judge_hints import (  # noqa: F401 (fixtures: the server gets no Gemini key)
    ACTION_MS,
    answer_prompt,
    extra_lab_runners,
    hint_environment,
    make_lab,
    save_with_ctrl_s,
    start_from_the_page,
    type_at_end,
)

pytestmark = pytest.mark.browser

ASK_FOR_STEP = """async ([url, step]) => {
    const token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
    const response = await fetch(url, {method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": token, "HX-Request": "true"}, body: new URLSearchParams({step: String(step)})});
    return {status: response.status, text: await response.text()};
}"""


def ask_for_a_hint(page: Page, step_number: int, expected: str) -> None:
    """Press the button, which names the step, and wait for the lab's answer for that step."""
    button = page.get_by_role("button", name="Get a hint")
    expect(button).to_have_text(f"Get a hint for step {step_number}")
    before = page.locator("article.hint").count()
    button.click()
    expect(page.locator("article.hint")).to_have_count(before + 1, timeout=ACTION_MS)
    newest = page.locator("article.hint").first
    expect(newest.locator(".hint-meta")).to_contain_text(f"Lab hint (fallback) · step {step_number}",
                                                         timeout=ACTION_MS)
    expect(newest.locator(".hint-answer")).to_contain_text(expected)


def pass_step(page: Page, step: LabStep) -> None:
    box = page.locator(f'[data-judge-step="{step.pk}"]')
    box.get_by_role("button", name="Check this step").click()
    expect(page.locator(f'[data-judge-step="{step.pk}"]')).to_have_attribute("data-passed", "true",
                                                                              timeout=ACTION_MS)


def create_file(page: Page, path: str, text: str) -> None:
    page.get_by_role("button", name="New file").click()
    answer_prompt(page, path)
    expect(page.locator("[data-editor-filename]")).to_have_text(path, timeout=ACTION_MS)
    type_at_end(page, text)
    save_with_ctrl_s(page, path)


def toggle(page: Page, order: int) -> None:
    page.locator(f"#step-{order} > details > summary").click()


@pytest.mark.docker
def test_the_hint_is_for_the_step_the_learner_has_open(
    asgi_live_server, page, learner, password, docker_instance
):
    url = asgi_live_server.url
    lab = make_lab("labs/base:bookworm", title="Three steps")
    steps = [
        LabStep.objects.create(
            lab=lab, order=1, title="Greet", body="Put hello in `greeting.txt`.",
            verify=[{"kind": "file", "path": "greeting.txt", "contains": "hello"}],
            hints=["Hint one: the editor's New file button."], solution="SOLUTION ONE"),
        LabStep.objects.create(
            lab=lab, order=2, title="Script", body="Create `run.sh`.",
            verify=[{"kind": "command", "run": "test -f run.sh"}],
            hints=["Hint two: a file named run.sh."], solution="SOLUTION TWO"),
        LabStep.objects.create(
            lab=lab, order=3, title="Run it", body="Make `run.sh` print ok.",
            verify=[{"kind": "command", "run": "sh run.sh | grep -q ok"}],
            hints=["Hint three: echo ok."], solution="SOLUTION THREE"),
    ]
    sign_in(page, url, learner.username, password)
    session = start_from_the_page(page, url, lab, learner)
    ask_url = f"{url}/sessions/{session.pk}/hints/ask/"

    # Step 1 is open when the page loads.
    ask_for_a_hint(page, 1, "Hint one")

    # Asking about a locked step, or about another lab's step, by hand: refused, nothing shown or stored.
    other_lab = make_lab("labs/base:bookworm", title="Another lab")
    foreign = LabStep.objects.create(lab=other_lab, order=1, title="Foreign", body="-", hints=["FOREIGN HINT"])
    locked = page.evaluate(ASK_FOR_STEP, [ask_url, steps[2].pk])
    assert locked["status"] == 200 and "Step 3 is still locked" in locked["text"], locked
    refused = page.evaluate(ASK_FOR_STEP, [ask_url, foreign.pk])
    assert refused["status"] == 200 and "That is not a step of this lab." in refused["text"], refused
    for answer in (locked, refused):
        assert "Hint three" not in answer["text"] and "FOREIGN HINT" not in answer["text"]

    # Expanding a locked step does not move the hint there.
    toggle(page, 2)
    expect(page.locator("#step-2 > details")).to_have_attribute("open", "")
    expect(page.locator("[data-hint-for]")).to_have_text("for step 1")
    toggle(page, 2)

    # Step 1 passes (its Check was the last thing clicked: the hint stays there), then the learner
    # opens step 2, now unlocked, and the hint follows.
    create_file(page, "greeting.txt", "hello")
    pass_step(page, steps[0])
    expect(page.locator(f'[data-judge-step="{steps[1].pk}"]')).to_have_attribute("data-locked", "false",
                                                                                 timeout=ACTION_MS)
    expect(page.locator("[data-hint-for]")).to_have_text("for step 1")
    toggle(page, 2)
    expect(page.locator("[data-hint-for]")).to_have_text("for step 2")
    ask_for_a_hint(page, 2, "Hint two")

    # Step 2 passes; the learner opens step 3.
    create_file(page, "run.sh", "echo not yet")
    pass_step(page, steps[1])
    toggle(page, 3)
    ask_for_a_hint(page, 3, "Hint three")

    # Back to step 1 (folded and opened again): hints for step 1, though steps 2 and 3 are open too.
    toggle(page, 1)
    expect(page.locator("#step-1 > details")).not_to_have_attribute("open", "")
    toggle(page, 1)
    ask_for_a_hint(page, 1, "Hint one")

    # Folding step 1 again leaves the first open unlocked step: step 2.
    toggle(page, 1)
    expect(page.locator("[data-hint-for]")).to_have_text("for step 2")

    stored = list(HintRequest.objects.filter(session=session).order_by("pk").values_list("step__order", flat=True))
    assert stored == [1, 2, 3, 1]
    page_text = page.locator(".hints").inner_text()
    assert "SOLUTION" not in page_text
    contexts: list[Any] = list(HintRequest.objects.filter(session=session).values_list("context", flat=True))
    assert all("SOLUTION" not in json.dumps(context) for context in contexts)
    assert_no_error_page(page)
