"""Underscores show in the terminal at device pixel ratio 1 with the default 14 px font.

`x86_64` used to read "x86 64": the underscore is drawn at the bottom of its cell, and with
xterm.js's default metrics the glyph fell below the row and was cut off. The test prints a line of
underscores in a real shell (local runner, over the real WebSocket) and reads the screenshot's
pixels under each underscore: every one of them must show.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from labs.models import Image, Lab
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in
from tests.e2e.local_runner import local_runner_for_server

pytestmark = pytest.mark.browser

STARTUP_MS = 60_000
UNDERSCORES = 24  # the line stays on one row at 28 px too


@pytest.fixture
def extra_lab_runners(tmp_path) -> Iterator[dict[str, Any]]:
    """The local (bubblewrap) runner, every session of it removed afterwards."""
    with local_runner_for_server(tmp_path / "local") as runners:
        yield runners


# Where the underscores of the row that shows `marker` are: the row's box and, per underscore, its
# cell's left and right edge (from the text's own layout, so it holds for any font).
_UNDERSCORE_CELLS = """(marker) => {
    const rows = [...document.querySelectorAll('[data-terminal-panel="1"] .xterm-rows > div')];
    const row = rows.reverse().find((r) => r.textContent.includes(marker));
    if (!row) return null;
    const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
    const cells = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.data.length; i++) {
            if (node.data[i] !== '_') continue;
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const box = range.getBoundingClientRect();
            cells.push([box.left, box.right]);
        }
    }
    const box = row.getBoundingClientRect();
    return {top: box.top, bottom: box.bottom, cells};
}"""

# Decodes a PNG (base64) in a blank page: which columns of it have a pixel brighter than the background?
_LIT_COLUMNS = """async (png) => {
    const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${png}`)).blob());
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext('2d');
    context.drawImage(bitmap, 0, 0);
    const {data} = context.getImageData(0, 0, bitmap.width, bitmap.height);
    const lit = [];
    for (let x = 0; x < bitmap.width; x++) {
        let brightest = 0;
        for (let y = 0; y < bitmap.height; y++) {
            const i = (y * bitmap.width + x) * 4;
            brightest = Math.max(brightest, data[i] + data[i + 1] + data[i + 2]);
        }
        lit.push(brightest > 200);  // the background #0d1117 sums to 53, the text #c9d1d9 to 619
    }
    return lit;
}"""


def wait_for_row(page: Page, marker: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := page.evaluate(_UNDERSCORE_CELLS, marker)) is None or not found["cells"]:
        assert time.monotonic() < deadline, f"{marker!r} never showed in the terminal"
        page.wait_for_timeout(200)
    return found


def hidden_underscores(page: Page, marker: str, artifact: str) -> list[int]:
    """The underscores of the row showing `marker` that the screenshot of exactly that row does not show."""
    row = wait_for_row(page, marker)
    left, right = row["cells"][0][0], row["cells"][-1][1]
    height = row["bottom"] - row["top"]
    png = page.screenshot(clip={"x": left, "y": row["top"], "width": right - left, "height": height})
    page.screenshot(path=str(ARTIFACTS / artifact),
                    clip={"x": left - 40, "y": row["top"] - 40, "width": right - left + 80, "height": 120})
    blank = page.context.new_page()
    try:
        lit = blank.evaluate(_LIT_COLUMNS, base64.b64encode(png).decode())
    finally:
        blank.close()
    # Looked for in the middle of each cell, away from the neighbours' edges.
    return [index for index, (cell_left, cell_right) in enumerate(row["cells"])
            if not any(lit[round(cell_left - left) + 2:round(cell_right - left) - 2])]


def test_underscores_show_in_the_terminal_at_device_pixel_ratio_one(asgi_live_server, page, learner, password):
    url = asgi_live_server.url
    image, _ = Image.objects.get_or_create(name="underscore-local", defaults={"reference": "labs/busybox:latest"})
    lab = Lab.objects.create(slug=f"underscores-{uuid.uuid4().hex[:6]}", title="Underscores", image=image,
                             runner="local", memory_mb=128, published=True, network_mode="none",
                             consoles=["terminal"])
    assert page.evaluate("window.devicePixelRatio") == 1
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('[data-terminal-panel="1"] [data-terminal-state="connected"]').wait_for(timeout=STARTUP_MS)
    assert page.evaluate("localStorage.getItem('labs:terminal-font-size')") is None  # the default, 14 px
    expect(page.locator('[data-terminal-panel="1"] .xterm-rows')).to_have_css("font-size", "14px")

    # A line of underscores with more text right under it (the next row must not paint over it).
    page.locator('[data-terminal-screen="1"]').click()
    page.keyboard.type(f"printf 'x86_64 %s\\nnext row\\n' $(printf '_%.0s' $(seq {UNDERSCORES}))")
    page.keyboard.press("Enter")
    marker = "x86_64 " + "_" * UNDERSCORES
    page.locator('[data-terminal-panel="1"] .xterm-rows').get_by_text("next row", exact=True).wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    hidden = hidden_underscores(page, marker, "terminal-underscores-14px.png")
    assert not hidden, f"at 14 px, underscores {hidden} of {UNDERSCORES + 1} do not show"

    # And at every text size the A− and A+ buttons offer.
    hidden_by_size = {}
    for button, sizes in (("Smaller text", range(13, 9, -1)), ("Larger text", range(11, 29))):
        for size in sizes:
            page.get_by_role("button", name=button).click()
            expect(page.locator('[data-terminal-panel="1"] .xterm-rows')).to_have_css("font-size", f"{size}px")
            if hidden := hidden_underscores(page, marker, f"terminal-underscores-{size}px.png"):
                hidden_by_size[size] = hidden
    assert not hidden_by_size, f"underscores that do not show, by text size: {hidden_by_size}"
    assert_no_error_page(page)
