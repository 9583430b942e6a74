"""The smoke test: a learner signs in, searches the catalog and opens a lab, in a real Chromium."""

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def demo_catalog(transactional_db):
    call_command("import_lab", str(settings.LAB_DEMO_CATALOG), verbosity=0)


def test_a_learner_signs_in_searches_and_opens_a_lab(live_server, page, owner, password, demo_catalog):
    sign_in(page, live_server.url, owner.username, password)
    assert_no_error_page(page)
    assert page.get_by_text(f"Sign out ({owner.username})").is_visible()

    page.goto(f"{live_server.url}/")
    page.get_by_role("searchbox").fill("multi-stage")
    page.wait_for_timeout(600)  # the HTMX search fires after typing pauses
    page.wait_for_load_state("networkidle")
    cards = page.locator("[data-lab-card]")
    assert cards.count() == 1
    assert "q=multi-stage" in page.url  # the search is in the address bar, so it can be shared

    cards.first.get_by_role("link").first.click()
    page.wait_for_load_state("networkidle")
    assert_no_error_page(page)
    assert "multi-stage build" in page.get_by_role("heading", level=1).inner_text()
    assert page.get_by_role("button", name="Start lab").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "smoke-lab-detail.png"), full_page=True)


def test_the_catalog_works_without_javascript(live_server, chromium, demo_catalog):
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/?q=shell")
    assert page.locator("[data-lab-card]").count() == 1
    context.close()
