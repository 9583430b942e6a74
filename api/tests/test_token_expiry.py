"""Tokens may expire: chosen on the page (30, 90 or 365 days, or never); an expired token is refused
with 401 and a message that says it expired, and the page marks it expired."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from api.tests.conftest import Api

pytestmark = pytest.mark.django_db


def made_on_the_page(client: Client, expires: str) -> tuple[ApiToken, str]:
    response = client.post(reverse("api_tokens:create"), {"name": f"for {expires}", "scope": "read",
                                                          "expires": expires})
    assert response.status_code == 201, response.content.decode()
    token = re.search(r'id="new-token" value="([^"]+)"', response.content.decode()).group(1)
    row = ApiToken.objects.get(name=f"for {expires}")
    assert token.startswith(row.prefix)
    return row, token


@pytest.mark.parametrize("days", [30, 90, 365])
def test_the_page_makes_a_token_expiring_after_the_chosen_days(owner_client, owner, days):
    before = timezone.now()
    row, _ = made_on_the_page(owner_client, str(days))
    assert row.expires_at is not None
    assert before + timedelta(days=days) <= row.expires_at <= timezone.now() + timedelta(days=days)


def test_the_page_makes_a_token_that_never_expires(owner_client, owner, lab):
    row, token = made_on_the_page(owner_client, "never")
    assert row.expires_at is None
    assert Api(Client(), token).get("/labs").status_code == 200


def test_the_page_offers_the_lifetimes_with_ninety_days_chosen(owner_client):
    page = owner_client.get(reverse("api_tokens:list")).content.decode()
    choices = re.findall(r'<input type="radio" name="expires" value="([^"]+)"[^>]*>', page)
    assert choices == ["30", "90", "365", "never"]
    assert re.search(r'name="expires" value="90"[^>]*checked', page)


def test_an_unknown_lifetime_is_refused_with_the_form_again(owner_client, owner):
    response = owner_client.post(reverse("api_tokens:create"), {"name": "x", "scope": "read", "expires": "7"})
    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()
    assert not ApiToken.objects.exists()


def test_a_token_works_until_it_expires_then_gets_401_saying_so(owner, lab):
    row, token = ApiToken.issue(owner, "ci", ApiToken.Scope.READ, expires_in_days=30)
    api = Api(Client(), token)
    assert api.get("/labs").status_code == 200
    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get("/labs")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    detail = response.json()["detail"]
    assert detail.startswith("This token expired on ") and "/api-tokens/" in detail
    # it is refused before anything else: a write on an expired read token is 401 too, not 403
    assert api.post("/sessions", {"lab": lab.slug}).status_code == 401


def test_an_expired_token_is_not_recorded_as_used(owner, lab):
    row, token = ApiToken.issue(owner, "ci", ApiToken.Scope.READ, expires_in_days=1)
    ApiToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(days=1))
    assert Api(Client(), token).get("/labs").status_code == 401
    row.refresh_from_db()
    assert row.last_used_at is None


def test_the_page_marks_expired_tokens_and_shows_when_others_expire(owner_client, owner):
    expired, _ = ApiToken.issue(owner, "old script", ApiToken.Scope.READ, expires_in_days=30)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=2))
    current, _ = ApiToken.issue(owner, "current", ApiToken.Scope.READ, expires_in_days=90)
    forever, _ = ApiToken.issue(owner, "forever", ApiToken.Scope.READ)
    page = owner_client.get(reverse("api_tokens:list")).content.decode()

    def row_html(token: ApiToken) -> str:
        return re.search(rf'<tr data-token="{token.pk}"(.*?)</tr>', page, re.S).group(0)

    assert "data-expired" in row_html(expired) and "Expired" in row_html(expired)
    assert "data-expired" not in row_html(current) and "Expired" not in row_html(current)
    assert current.expires_at is not None and f'datetime="{current.expires_at:%Y-%m-%d}' in row_html(current)
    assert re.search(r'data-label="Expires"><span class="muted">never</span>', row_html(forever))


def test_staff_see_the_expiry_in_the_admin(client, staff_user, owner):
    row, _ = ApiToken.issue(owner, "lms", ApiToken.Scope.WRITE, expires_in_days=30)
    client.force_login(staff_user)
    listing = client.get(reverse("admin:api_apitoken_changelist")).content.decode()
    assert "Expires at" in listing
    assert client.get(reverse("admin:api_apitoken_change", args=[row.pk])).status_code == 200
