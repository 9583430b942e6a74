"""Fixtures for the accounts tests: a running GitHub double wired into allauth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.github.views import GitHubOAuth2Adapter
from django.contrib.sites.models import Site

from accounts.tests import github_double
from accounts.tests.github_double import GitHubDouble, OAuthApp

CALLBACK_URL = "http://testserver/accounts/github/login/callback/"


@pytest.fixture
def github_double_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubDouble]:
    """The GitHub double, serving on 127.0.0.1 for the length of one test."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield from github_double.running()


@pytest.fixture
def github(github_double_server: GitHubDouble, settings: Any, monkeypatch: pytest.MonkeyPatch,
           db: None) -> GitHubDouble:
    """allauth's GitHub provider pointed at the double, with one OAuth app registered on both sides.

    The app is a SocialApp row on Site 1, the way an operator adds it in the admin. The adapter
    computes its URLs from GITHUB_URL at import time, so its class attributes are patched here.
    """
    double = github_double_server
    github_settings = {k: v for k, v in settings.SOCIALACCOUNT_PROVIDERS["github"].items() if k != "APPS"}
    github_settings["GITHUB_URL"] = double.url
    settings.SOCIALACCOUNT_PROVIDERS = {**settings.SOCIALACCOUNT_PROVIDERS, "github": github_settings}
    for name, value in {
        "web_url": double.url,
        "api_url": double.api_url,
        "access_token_url": f"{double.url}/login/oauth/access_token",
        "authorize_url": f"{double.url}/login/oauth/authorize",
        "profile_url": f"{double.api_url}/user",
        "emails_url": f"{double.api_url}/user/emails",
    }.items():
        monkeypatch.setattr(GitHubOAuth2Adapter, name, value)

    oauth_app: OAuthApp = double.register_app(CALLBACK_URL)
    social_app = SocialApp.objects.create(
        provider="github", name="GitHub", client_id=oauth_app.client_id, secret=oauth_app.client_secret
    )
    social_app.sites.add(Site.objects.get(pk=settings.SITE_ID))
    return double


@pytest.fixture
def octocat(github: GitHubDouble) -> Any:
    """A GitHub user with a private address, signed in to GitHub in the test's browser."""
    user = github.add_user(
        "octocat",
        id=583231,
        name="The Octocat",
        public_email=None,
        emails=[
            {"email": "octocat@example.org", "primary": True, "verified": True, "visibility": "private"},
            {"email": "octo@work.example.com", "primary": False, "verified": False, "visibility": None},
        ],
    )
    github.signed_in = user
    return user
