"""Signing in with GitHub only where it is set up.

allauth's GitHub views raise (a 500) when no GitHub app is configured, or when two are (one in the
settings and one in the admin). The sign-in page then shows no GitHub button, but the URLs stay
reachable; here they answer a page that says why instead, with what to do for staff.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from functools import wraps

from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.github import views as github_views
from django.core.exceptions import MultipleObjectsReturned
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

PROVIDER = "github"


class GitHubSetup(Enum):
    READY = "ready"
    MISSING = "missing"  # no app in the settings nor in the admin
    AMBIGUOUS = "ambiguous"  # more than one, and allauth cannot tell which to use


def github_setup(request: HttpRequest | None) -> GitHubSetup:
    """Whether GitHub sign-in works on this site, by allauth's own rules for choosing the app."""
    try:
        get_adapter(request).get_app(request, provider=PROVIDER)
    except SocialApp.DoesNotExist:
        return GitHubSetup.MISSING
    except MultipleObjectsReturned:
        return GitHubSetup.AMBIGUOUS
    return GitHubSetup.READY


def unavailable_page(request: HttpRequest, setup: GitHubSetup) -> HttpResponse:
    # Not set up is a missing page; set up twice is the server's fault until staff fix it.
    status = 404 if setup is GitHubSetup.MISSING else 503
    return render(request, "account/github_unavailable.html", {"setup": setup.value}, status=status)


def _only_when_set_up(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        setup = github_setup(request)
        if setup is not GitHubSetup.READY:
            return unavailable_page(request, setup)
        return view(request, *args, **kwargs)

    return guarded


# Before allauth's own patterns (labsite/urls.py), under the same paths and names.
urlpatterns = [
    path("github/login/", _only_when_set_up(github_views.oauth2_login), name="github_login"),
    path("github/login/callback/", _only_when_set_up(github_views.oauth2_callback), name="github_callback"),
]
