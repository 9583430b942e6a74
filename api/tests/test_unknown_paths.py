"""Addresses under /api/ that name no endpoint answer the API's JSON 404, never the site's HTML page:
another version, a typo, an id that is not one, whatever the method and whoever asks."""

from __future__ import annotations

import pytest
from django.test import Client

from api.tests.conftest import Api
from api.v1 import UNKNOWN_PATH

pytestmark = pytest.mark.django_db

PATHS = ["/api/", "/api/v2/", "/api/v2/labs", "/api/v1/nonexistent", "/api/v1/labs/extra/parts",
         "/api/v1/sessions/00000000-0000-0000-0000-000000000000/nope",
         "/api/whatever.html"]


def assert_json_404(response) -> None:
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": UNKNOWN_PATH}
    assert b"<html" not in response.content.lower()


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_path_is_a_json_404_for_anyone(path, owner, token_for):
    assert_json_404(Client().get(path, headers={"Accept": "text/html"}))  # even when a browser asks
    assert_json_404(Client().get(path, headers={"Authorization": f"Bearer {token_for(owner)}"}))


def test_a_post_to_an_unknown_path_is_a_json_404_not_a_csrf_page(owner):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    assert_json_404(browser.post("/api/v2/sessions", "{}", content_type="application/json"))
    assert_json_404(Client().delete("/api/v1/nonexistent"))


def test_known_endpoints_still_answer(owner_api, lab):
    assert owner_api.get("/labs").status_code == 200
    assert Client().get("/api/v1/openapi.json").status_code == 200


def test_a_missing_session_still_says_so_in_its_own_words(owner_api):
    response = owner_api.get("/sessions/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json() != {"detail": UNKNOWN_PATH}


def test_other_addresses_keep_the_sites_html_404(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert client.get("/api-tokens/nope/").status_code == 404  # not under /api/
    assert client.get("/api-tokens/nope/")["Content-Type"].startswith("text/html")


def test_the_api_client_helper_sees_the_same(anonymous_api: Api):
    assert_json_404(anonymous_api.get("/nonexistent"))
