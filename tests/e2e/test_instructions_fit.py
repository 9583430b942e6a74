"""The instructions panel fits its column at desktop and phone sizes, in a real Chromium.

Real demo lab content (labs/demo_catalog, imported with `import_lab`: long lines, tables, code
blocks) plus a Killercoda-style step (converted by labs/killercoda.py: click-to-run blocks, a
`<details>` solution) is shown on a running session of the local runner. At each size every
element of the instructions panel and the page must fit: nothing scrolls sideways except code
blocks and tables, which scroll inside themselves without widening the panel, and the Copy and
Run buttons are whole and inside the panel. Screenshots go to artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from playwright.sync_api import Page, expect

from labs.killercoda import convert_markdown
from labs.models import Lab, LabStep
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in
from tests.e2e.local_runner import local_runner_for_server

pytestmark = pytest.mark.browser

STARTUP_MS = 60_000
# What each size's screenshots show (besides the top of the page), for a person to look at.
SHOWN_PARTS = {
    "table": ".instructions-pane .prose table",
    "long-dockerfile-line": ".instructions-pane .code-block:has-text('urllib.request')",
    "killercoda-step": ".instructions-pane [data-action='exec']",
}
SIZES = [(1280, 720), (1366, 768), (1600, 900), (1920, 1080), (390, 844)]

# A step as a Killercoda author writes it: {{exec}} and {{copy}} blocks, a <details> solution, long lines.
KILLERCODA_STEP = (Path(__file__).parent / "killercoda_step_with_long_lines.md").read_text()


@pytest.fixture
def extra_lab_runners(tmp_path) -> Iterator[dict[str, Any]]:
    """The local (bubblewrap) runner, every session of it removed afterwards."""
    with local_runner_for_server(tmp_path / "local") as runners:
        yield runners


@pytest.fixture
def demo_lab(transactional_db) -> Lab:
    """"Linux shell basics" on the local runner, with the Dockerfile labs' steps (tables, long
    Dockerfile lines) and a Killercoda-style step after its own."""
    call_command("import_lab", str(settings.LAB_DEMO_CATALOG), verbosity=0)
    lab = Lab.objects.get(slug="linux-shell-basics")
    lab.runner = "local"
    lab.network_mode = "none"
    lab.save()
    order = lab.steps.count()
    for step in LabStep.objects.filter(lab__slug__startswith="dockerfile-").order_by("lab__slug", "order"):
        order += 1
        LabStep.objects.create(lab=lab, order=order, title=step.title, body=step.body)
    LabStep.objects.create(lab=lab, order=order + 1, title="A Killercoda step",
                           body=convert_markdown(KILLERCODA_STEP).text)
    return lab


# What does not fit, as sentences. Only code blocks and tables may scroll sideways (inside
# themselves), and the consoles' own scrolling strips; everything else, the page included, must fit.
_OVERFLOWS = (Path(__file__).parent / "instructions_overflows.js").read_text()


def open_every_step(page: Page) -> None:
    page.locator(".instructions-pane details:not([open]) > summary").evaluate_all(
        "summaries => summaries.forEach(s => s.click())")


def test_the_instructions_fit_their_column_at_every_size(asgi_live_server, page, learner, password, demo_lab):
    url = asgi_live_server.url
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{demo_lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    page.locator('[data-terminal-panel="1"] [data-terminal-state="connected"]').wait_for(timeout=STARTUP_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    failures = {}
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.reload()
        page.locator('[data-terminal-panel="1"] [data-terminal-state="connected"]').wait_for(timeout=STARTUP_MS)
        open_every_step(page)
        expect(page.locator("[data-run-code]").first).to_be_visible()  # the Run buttons are checked too
        page.screenshot(path=str(ARTIFACTS / f"instructions-{width}x{height}.png"))
        for part, selector in SHOWN_PARTS.items():
            page.locator(selector).first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / f"instructions-{width}x{height}-{part}.png"))
        problems = page.evaluate(_OVERFLOWS)
        if problems:
            failures[f"{width}x{height}"] = problems
    assert not failures, "\n".join(f"{size}: {problem}" for size, problems in failures.items() for problem in problems)
    assert_no_error_page(page)
