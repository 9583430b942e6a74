"""The smoke test: a learner signs in, searches the catalog and opens a lab, in a real Chromium.

Assertions use Playwright's retrying `expect`, never fixed waits: HTMX swaps the results in when
the search has settled, and `expect` polls until then (or its timeout).
"""

import re

import pytest
from django.conf import settings
from django.core.management import call_command
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in

pytestmark = pytest.mark.browser

DEMO_LAB_COUNT = 5


@pytest.fixture
def demo_catalog(transactional_db):
    call_command("import_lab", str(settings.LAB_DEMO_CATALOG), verbosity=0)


def test_a_learner_signs_in_searches_and_opens_a_lab(live_server, page, owner, password, demo_catalog):
    sign_in(page, live_server.url, owner.username, password)
    assert_no_error_page(page)
    expect(page.get_by_text(f"Sign out ({owner.username})")).to_be_visible()

    page.goto(f"{live_server.url}/")
    cards = page.locator("[data-lab-card]")
    expect(cards).to_have_count(DEMO_LAB_COUNT)
    page.get_by_role("searchbox").fill("multi-stage")  # HTMX searches once typing pauses
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("multi-stage build")
    # The search is in the address bar, so it can be shared.
    expect(page).to_have_url(re.compile(r"[?&]q=multi-stage(&|$)"))

    cards.first.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("multi-stage build")
    expect(page.get_by_role("button", name="Start lab")).to_be_visible()
    assert_no_error_page(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "smoke-lab-detail.png"), full_page=True)


def test_the_catalog_works_without_javascript(live_server, chromium, demo_catalog):
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    # Without JavaScript every filter must be a full page load, never an HTMX request.
    scripted = []
    page.on("request", lambda request: scripted.append(request.url)
            if request.resource_type in ("xhr", "fetch") else None)
    cards = page.locator("[data-lab-card]")
    try:
        page.goto(f"{live_server.url}/")
        expect(cards).to_have_count(DEMO_LAB_COUNT)

        # The search form is a plain GET form.
        page.get_by_role("searchbox").fill("shell")
        page.get_by_role("button", name="Search").click()
        expect(page).to_have_url(re.compile(r"\?q=shell(&|$)"))
        expect(cards).to_have_count(1)
        expect(cards.first).to_contain_text("Linux shell basics")
        expect(page.get_by_role("searchbox")).to_have_value("shell")

        # A difficulty link on a card shows only the labs of that difficulty.
        page.get_by_role("link", name="Clear filters").click()
        expect(cards).to_have_count(DEMO_LAB_COUNT)
        page.get_by_role("link", name="Difficulty: Intermediate").click()
        expect(page).to_have_url(re.compile(r"\?difficulty=intermediate$"))
        expect(cards).to_have_count(1)
        expect(cards.first).to_contain_text("multi-stage build")
        expect(page.locator("#catalog-difficulty")).to_have_value("intermediate")

        # A tag link on that card shows every lab with the tag, whatever its difficulty.
        cards.first.get_by_role("link", name="#docker", exact=True).click()
        expect(page).to_have_url(re.compile(r"\?tag=docker$"))
        expect(cards).to_have_count(3)
        for card in cards.all():
            expect(card.get_by_role("link", name="#docker", exact=True)).to_be_visible()
        expect(page.locator("#catalog-tag")).to_have_value("docker")
        expect(page.get_by_text("Linux shell basics")).to_have_count(0)

        # The form narrows the tag further: the Dockerfile labs include two beginner ones.
        page.locator("#catalog-difficulty").select_option("beginner")
        page.get_by_role("button", name="Search").click()
        expect(page).to_have_url(re.compile(r"difficulty=beginner&tag=docker$"))
        expect(cards).to_have_count(2)

        assert scripted == []
    finally:
        context.close()
