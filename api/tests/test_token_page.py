"""The API tokens page: a user makes a token (shown once), sees their own, and revokes them."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from api.models import MAX_TOKENS_PER_USER, ApiToken
from api.tests.conftest import Api
from tests.test_content_security_policy import assert_strict_page


def make(client, name="ci", scope="write", expires="90"):
    return client.post(reverse("api_tokens:create"), {"name": name, "scope": scope, "expires": expires})


def test_anonymous_visitors_are_sent_to_sign_in(client, db):
    response = client.get(reverse("api_tokens:list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_the_page_is_in_the_site_nav(owner_client):
    page = owner_client.get(reverse("sessions:list")).content.decode()
    assert f'href="{reverse("api_tokens:list")}"' in page


def test_a_new_token_is_shown_once_and_works(owner_client, owner, lab):
    response = make(owner_client, "grading script", "read")
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    token = re.search(r'id="new-token" value="([^"]+)"', response.content.decode()).group(1)
    row = ApiToken.objects.get(user=owner)
    assert (row.name, row.scope) == ("grading script", "read")
    assert token.startswith(row.prefix)
    assert Api(Client(), token).get("/labs").status_code == 200
    again = owner_client.get(reverse("api_tokens:list")).content.decode()
    assert token not in again
    assert "grading script" in again and row.prefix in again


def test_a_token_without_a_name_or_scope_is_refused_with_the_form_again(owner_client, owner):
    response = owner_client.post(reverse("api_tokens:create"), {"name": "", "scope": "admin"})
    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoking_a_token_stops_it_working(owner_client, owner, lab):
    token = re.search(r'id="new-token" value="([^"]+)"', make(owner_client).content.decode()).group(1)
    row = ApiToken.objects.get(user=owner)
    response = owner_client.post(reverse("api_tokens:revoke", args=[row.pk]), follow=True)
    assert "revoked" in response.content.decode()
    assert not ApiToken.objects.exists()
    assert Api(Client(), token).get("/labs").status_code == 401


def test_nobody_sees_or_revokes_anothers_tokens(client, owner, other_learner):
    row, _ = ApiToken.issue(owner, "olivias", ApiToken.Scope.WRITE)
    client.force_login(other_learner)
    assert "olivias" not in client.get(reverse("api_tokens:list")).content.decode()
    assert client.post(reverse("api_tokens:revoke", args=[row.pk])).status_code == 404
    assert ApiToken.objects.filter(pk=row.pk).exists()


def test_a_user_has_at_most_the_limit_of_tokens(owner_client, owner):
    for n in range(MAX_TOKENS_PER_USER):
        ApiToken.issue(owner, f"t{n}", ApiToken.Scope.READ)
    response = make(owner_client)
    assert response.status_code == 302
    assert ApiToken.objects.filter(user=owner).count() == MAX_TOKENS_PER_USER


def test_the_page_keeps_the_strict_policy(owner_client, owner):
    ApiToken.issue(owner, "listed", ApiToken.Scope.READ)
    assert assert_strict_page(owner_client.get(reverse("api_tokens:list")))
    assert assert_strict_page(make(owner_client))
