"""Signing in with GitHub where it is not set up, or set up twice: a page that says so, never a 500.

Real pages through the test client; the GitHub app comes from the settings (GITHUB_CLIENT_ID) or
from a SocialApp row, as an operator sets it up.
"""

from __future__ import annotations

from typing import Any

import pytest
from allauth.socialaccount.models import SocialApp
from django.contrib.sites.models import Site
from django.urls import reverse

pytestmark = pytest.mark.django_db

GITHUB_PATHS = ["/accounts/github/login/", "/accounts/github/login/callback/"]


@pytest.fixture
def no_github(settings: Any) -> None:
    """No GitHub app in the settings; the tests add one in the database where they need it."""
    github = {k: v for k, v in settings.SOCIALACCOUNT_PROVIDERS["github"].items() if k != "APPS"}
    settings.SOCIALACCOUNT_PROVIDERS = {**settings.SOCIALACCOUNT_PROVIDERS, "github": github}
    SocialApp.objects.filter(provider="github").delete()


def add_github_app(settings: Any, client_id: str) -> None:
    app = SocialApp.objects.create(provider="github", name="GitHub", client_id=client_id, secret="s3cret")
    app.sites.add(Site.objects.get(pk=settings.SITE_ID))


def test_the_sign_in_page_offers_no_github_button_when_github_is_not_set_up(client, no_github):
    response = client.get(reverse("account_login"))

    assert response.status_code == 200
    assert "/accounts/github/login/" not in response.content.decode()
    assert "Continue with GitHub" not in response.content.decode()


@pytest.mark.parametrize("path", GITHUB_PATHS)
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_github_urls_say_github_is_not_available_when_it_is_not_set_up(client, no_github, path, method):
    response = getattr(client, method)(path)

    assert response.status_code == 404
    page = response.content.decode()
    assert "Signing in with GitHub is not available" in page
    assert reverse("account_login") in page  # the way on: the ordinary sign-in
    assert "GITHUB_CLIENT_ID" not in page  # how to set it up is for staff


def test_staff_are_told_how_to_set_github_up(client, no_github, staff_user):
    client.force_login(staff_user)

    response = client.get("/accounts/github/login/")

    assert response.status_code == 404
    page = response.content.decode()
    assert 'data-github-setup="missing"' in page
    assert "GITHUB_CLIENT_ID" in page and "GITHUB_CLIENT_SECRET" in page
    assert reverse("admin:socialaccount_socialapp_changelist") in page


def test_github_set_up_twice_is_explained_to_staff_instead_of_a_500(client, no_github, staff_user, settings):
    add_github_app(settings, "Iv1.first")
    add_github_app(settings, "Iv1.second")
    client.force_login(staff_user)

    response = client.post("/accounts/github/login/")

    assert response.status_code == 503
    assert 'data-github-setup="ambiguous"' in response.content.decode()
    assert "more than once" in response.content.decode()


def test_github_set_up_once_leads_to_github(client, no_github, settings):
    add_github_app(settings, "Iv1.only")

    response = client.post("/accounts/github/login/")

    assert response.status_code == 302
    assert "client_id=Iv1.only" in response["Location"]
    assert "Continue with GitHub" in client.get(reverse("account_login")).content.decode()
