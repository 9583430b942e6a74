"""LAB_ALLOW_SIGNUP: local sign-up can be closed while local sign-in keeps working."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user
from django.urls import reverse

from tests.settings_env import settings_value

pytestmark = pytest.mark.django_db

SIGNUP = reverse("account_signup")
LOGIN = reverse("account_login")


def signup_form(username: str = "newbie") -> dict[str, str]:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password1": "plenty-of-entropy-here-91",
        "password2": "plenty-of-entropy-here-91",
    }


def template_names(response: Any) -> list[str]:
    return [t.name for t in response.templates]


@pytest.fixture
def signup_closed(settings: Any) -> None:
    settings.ACCOUNT_ALLOW_SIGNUP = False


def test_the_sign_up_page_says_sign_up_is_closed(client, signup_closed):
    response = client.get(SIGNUP)

    assert response.status_code == 200
    assert "account/signup_closed.html" in template_names(response)


def test_posting_the_sign_up_form_creates_no_user_when_closed(client, signup_closed, django_user_model):
    response = client.post(SIGNUP, signup_form())

    assert "account/signup_closed.html" in template_names(response)
    assert not django_user_model.objects.filter(username="newbie").exists()
    assert not get_user(client).is_authenticated


def test_local_sign_in_still_works_when_sign_up_is_closed(client, signup_closed, owner, password):
    response = client.post(LOGIN, {"login": "olivia", "password": password})

    assert response.status_code == 302
    assert get_user(client).pk == owner.pk


def test_sign_in_by_email_still_works_when_sign_up_is_closed(client, signup_closed, owner, password):
    client.post(LOGIN, {"login": "olivia@example.com", "password": password})

    assert get_user(client).pk == owner.pk


def test_sign_up_creates_and_signs_in_a_user_when_open(client, settings, django_user_model):
    settings.ACCOUNT_ALLOW_SIGNUP = True

    response = client.post(SIGNUP, signup_form())

    assert response.status_code == 302
    user = django_user_model.objects.get(username="newbie")
    assert get_user(client).pk == user.pk
    assert not user.is_staff


@pytest.mark.parametrize(("raw", "expected"), [("false", "False"), ("0", "False"), ("true", "True")])
def test_lab_allow_signup_in_the_environment_sets_account_allow_signup(raw, expected):
    result = settings_value("ACCOUNT_ALLOW_SIGNUP", LAB_ALLOW_SIGNUP=raw)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_sign_up_is_open_when_lab_allow_signup_is_unset():
    result = settings_value("ACCOUNT_ALLOW_SIGNUP", unset=["LAB_ALLOW_SIGNUP"])

    assert result.stdout.strip() == "True", result.stderr


def test_a_value_that_is_not_a_boolean_stops_the_settings_from_loading():
    result = settings_value("ACCOUNT_ALLOW_SIGNUP", LAB_ALLOW_SIGNUP="maybe")

    assert result.returncode != 0
    assert "LAB_ALLOW_SIGNUP='maybe' is not a boolean" in result.stderr
