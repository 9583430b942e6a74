"""The API's docs page (Swagger UI, its own copy of its assets) in Chromium under the site's
Content-Security-Policy: it draws the schema and tries endpoints with the browser's session,
sending the CSRF token on a POST."""

from __future__ import annotations

import json
import urllib.request

import pytest
from playwright.sync_api import expect

from sessions_app.models import Session
from tests.e2e.conftest import assert_no_error_page, chromium, page, sign_in  # noqa: F401 - fixtures
from tests.e2e.live_server import (  # noqa: F401 - fixtures
    asgi_live_server,
    collected_static,
    extra_lab_runners,
    extra_server_env,
    set_server_password,
)

pytestmark = pytest.mark.browser

ACTION_MS = 30_000


def try_it(docs, operation_id: str, body: dict | None = None) -> tuple[str, str]:
    """Open an operation, "Try it out", fill the body, "Execute": the status and body it shows."""
    block = docs.locator(f"[id$='-{operation_id}']")
    block.locator(".opblock-summary").first.click()
    block.get_by_role("button", name="Try it out").click()
    if body is not None:
        block.locator("textarea.body-param__text").fill(json.dumps(body))
    block.get_by_role("button", name="Execute").click()
    row = block.locator(".responses-table.live-responses-table .response").first
    expect(row).to_be_visible(timeout=ACTION_MS)
    return row.locator(".response-col_status").inner_text().strip(), row.locator(".microlight").first.inner_text()


def test_the_docs_page_draws_the_schema_and_tries_endpoints_under_the_policy(
    asgi_live_server, page, owner, password, lab  # noqa: F811 - the fixtures
):
    set_server_password(owner, password)
    url = asgi_live_server.url
    sign_in(page, url, owner.username, password)
    response = page.goto(f"{url}/api/v1/docs")
    assert response is not None and response.ok
    assert "script-src" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Browser Labs API", timeout=ACTION_MS)

    status, body = try_it(page, "api_endpoints_list_labs")
    assert status == "200" and lab.slug in body
    status, body = try_it(page, "api_endpoints_start_session", {"lab": lab.slug})
    assert status == "201", body
    assert Session.objects.get().user == owner
    assert_no_error_page(page)


def test_a_token_made_on_its_page_works_from_a_script(asgi_live_server, page, owner, password, lab):  # noqa: F811
    set_server_password(owner, password)
    url = asgi_live_server.url
    sign_in(page, url, owner.username, password)
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("grading script")
    page.get_by_label("Read and write").check()
    page.get_by_label("In 30 days").check()
    page.get_by_role("button", name="Make token").click()
    token = page.locator("#new-token").input_value()
    assert token.startswith("labs_")
    expect(page.locator("tr[data-token]")).to_contain_text("grading script")
    expect(page.locator('tr[data-token] td[data-label="Expires"] time')).to_have_count(1)
    assert_no_error_page(page)

    request = urllib.request.Request(f"{url}/api/v1/labs", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert [item["slug"] for item in json.load(response)["items"]] == [lab.slug]

    page.reload()
    assert token not in page.content()
