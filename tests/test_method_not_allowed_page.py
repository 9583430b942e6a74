"""A POST-only address opened in a browser explains itself instead of showing a blank page."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.django_db


def test_stop_opened_by_its_link_shows_a_page(owner_client):
    response = owner_client.get(f"/sessions/{uuid.uuid4()}/stop/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    page = response.content.decode()
    assert "This address is a button, not a page" in page and "My sessions" in page


def test_a_client_not_asking_for_html_gets_the_bare_answer(owner_client):
    response = owner_client.get(f"/sessions/{uuid.uuid4()}/stop/", HTTP_ACCEPT="application/json")
    assert response.status_code == 405 and response.content == b""
