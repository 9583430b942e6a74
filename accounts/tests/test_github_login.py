"""GitHub sign-in end to end: allauth talks real HTTP to the GitHub double."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp
from django.contrib.auth import get_user
from django.test import Client
from django.urls import reverse

from accounts.tests.conftest import CALLBACK_URL
from accounts.tests.github_double import GitHubDouble

pytestmark = pytest.mark.django_db


def start_github_login(client: Client) -> str:
    """Press "Sign in with GitHub"; return the URL allauth sends the browser to."""
    response = client.post(reverse("github_login"))
    assert response.status_code == 302
    return response["Location"]


def authorize_on_github(authorize_url: str) -> dict[str, str]:
    """The browser visits GitHub's consent page; return the query GitHub redirects back with."""
    reply = requests.get(authorize_url, allow_redirects=False, timeout=10)
    assert reply.status_code == 302, reply.text
    callback = urlsplit(reply.headers["Location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == CALLBACK_URL
    return {name: values[0] for name, values in parse_qs(callback.query).items()}


def return_from_github(client: Client, params: dict[str, str]) -> Any:
    return client.get(reverse("github_callback"), params)


def sign_in_with_github(client: Client) -> Any:
    return return_from_github(client, authorize_on_github(start_github_login(client)))


def template_names(response: Any) -> list[str]:
    return [t.name for t in response.templates]


def test_github_sign_in_creates_a_logged_in_user_with_the_github_identity(client, github, octocat):
    response = sign_in_with_github(client)

    assert response.status_code == 302
    assert response["Location"] == reverse("labs:catalog")
    user = get_user(client)
    assert user.is_authenticated
    account = SocialAccount.objects.get(provider="github")
    assert account.user == user
    assert account.uid == "583231"
    assert account.extra_data["login"] == "octocat"
    assert user.username == "octocat"
    assert user.email == "octocat@example.org"
    primary = EmailAddress.objects.get(user=user, email="octocat@example.org")
    assert primary.primary and primary.verified
    assert not EmailAddress.objects.get(user=user, email="octo@work.example.com").verified


def test_the_authorize_request_carries_our_client_id_callback_scopes_and_state(client, github, octocat):
    authorize_url = start_github_login(client)
    assert authorize_url.startswith(f"{github.url}/login/oauth/authorize?")

    authorize_on_github(authorize_url)

    [sent] = github.requests_to("/login/oauth/authorize")
    app = SocialApp.objects.get(provider="github")
    assert sent.param("client_id") == app.client_id
    assert sent.param("redirect_uri") == CALLBACK_URL
    assert sent.param("response_type") == "code"
    assert set((sent.param("scope") or "").split()) == {"read:user", "user:email"}
    assert len(sent.param("state") or "") >= 12


def test_allauth_exchanges_the_code_with_our_secret_and_calls_the_api_with_the_token(client, github, octocat):
    params = authorize_on_github(start_github_login(client))

    return_from_github(client, params)

    [exchange] = github.requests_to("/login/oauth/access_token", "POST")
    app = SocialApp.objects.get(provider="github")
    assert exchange.form["client_id"] == [app.client_id]
    assert exchange.form["client_secret"] == [app.secret]
    assert exchange.form["code"] == [params["code"]]
    assert exchange.form["redirect_uri"] == [CALLBACK_URL]
    assert exchange.form["grant_type"] == ["authorization_code"]
    assert "application/json" not in exchange.header("accept")  # so GitHub answers form-encoded
    token = exchange.reply.split("access_token=")[1].split("&")[0]
    for path in ("/api/v3/user", "/api/v3/user/emails"):
        [call] = github.requests_to(path)
        assert call.header("authorization") == f"token {token}"
        assert call.status == 200


def test_a_second_github_sign_in_reuses_the_same_user(client, github, octocat, django_user_model):
    sign_in_with_github(client)
    first = get_user(client)
    client.logout()
    octocat.name = "Mona Lisa Octocat"

    response = sign_in_with_github(client)

    assert response.status_code == 302
    assert get_user(client).pk == first.pk
    assert django_user_model.objects.count() == 1
    account = SocialAccount.objects.get()
    assert account.extra_data["name"] == "Mona Lisa Octocat"
    assert len(github.requests_to("/login/oauth/access_token")) == 2


def test_a_tampered_state_is_refused_before_any_code_is_exchanged(client, github, octocat, django_user_model):
    params = authorize_on_github(start_github_login(client))
    params["state"] = params["state"][:-2] + ("xy" if not params["state"].endswith("xy") else "zz")

    response = return_from_github(client, params)

    assert response.status_code == 401
    assert "socialaccount/authentication_error.html" in template_names(response)
    assert not get_user(client).is_authenticated
    assert github.requests_to("/login/oauth/access_token") == []
    assert not django_user_model.objects.exists()


def test_a_callback_without_a_login_started_in_this_browser_is_refused(client, github, octocat):
    params = authorize_on_github(start_github_login(client))
    stranger = Client()

    response = return_from_github(stranger, params)

    assert "socialaccount/authentication_error.html" in template_names(response)
    assert not get_user(stranger).is_authenticated
    assert github.requests_to("/login/oauth/access_token") == []


def test_a_bad_code_shows_the_error_page_and_logs_nobody_in(client, github, octocat, django_user_model):
    params = authorize_on_github(start_github_login(client))
    params["code"] = "0" * 20

    response = return_from_github(client, params)

    assert response.status_code == 401
    assert "socialaccount/authentication_error.html" in template_names(response)
    assert not get_user(client).is_authenticated
    assert not django_user_model.objects.exists()
    [exchange] = github.requests_to("/login/oauth/access_token")
    assert "error=bad_verification_code" in exchange.reply
    assert github.requests_to("/api/v3/user") == []


def test_a_code_cannot_be_used_twice(client, github, octocat, django_user_model):
    params = authorize_on_github(start_github_login(client))
    return_from_github(client, params)
    client.logout()

    state = authorize_on_github(start_github_login(client))["state"]
    response = return_from_github(client, {"code": params["code"], "state": state})

    assert "socialaccount/authentication_error.html" in template_names(response)
    assert not get_user(client).is_authenticated


def test_cancelling_on_github_lands_on_the_cancelled_page(client, github, octocat, django_user_model):
    github.deny = True
    params = authorize_on_github(start_github_login(client))
    assert params["error"] == "access_denied"

    response = return_from_github(client, params)

    assert response.status_code == 302
    assert response["Location"] == reverse("socialaccount_login_cancelled")
    assert not django_user_model.objects.exists()


def test_github_sign_in_stays_open_when_local_sign_up_is_closed(client, github, octocat, settings):
    settings.ACCOUNT_ALLOW_SIGNUP = False

    response = sign_in_with_github(client)

    assert response.status_code == 302
    assert get_user(client).is_authenticated
    assert SocialAccount.objects.filter(uid="583231").exists()


def test_a_github_login_name_taken_by_a_local_user_gets_another_username(
    client, github, octocat, django_user_model, password
):
    local = django_user_model.objects.create_user("octocat", "someone@example.com", password)

    sign_in_with_github(client)

    user = get_user(client)
    assert user.pk != local.pk
    assert user.username != "octocat"
    assert SocialAccount.objects.get().user_id == user.pk


def test_github_credentials_from_the_environment_work_without_a_social_app_row(client, github, octocat, settings):
    app = SocialApp.objects.get(provider="github")
    settings.SOCIALACCOUNT_PROVIDERS["github"]["APPS"] = [
        {"client_id": app.client_id, "secret": app.secret, "key": ""}
    ]
    app.delete()

    response = sign_in_with_github(client)

    assert response.status_code == 302
    assert get_user(client).is_authenticated


# -- the double itself speaks GitHub's wire format ---------------------------------------------------


@pytest.fixture
def oauth_app(github_double_server: GitHubDouble) -> Any:
    return github_double_server.register_app("http://app.example/callback/")


def authorize_query(app: Any, **overrides: str) -> dict[str, str]:
    return {"client_id": app.client_id, "redirect_uri": app.callback_url, "scope": "read:user user:email",
            "state": "s1", **overrides}


def get_code(double: GitHubDouble, app: Any) -> str:
    reply = requests.get(f"{double.url}/login/oauth/authorize", params=authorize_query(app),
                         allow_redirects=False, timeout=10)
    return parse_qs(urlsplit(reply.headers["Location"]).query)["code"][0]


def test_the_double_answers_json_when_asked_and_form_encoding_otherwise(github_double_server, oauth_app):
    double = github_double_server
    double.signed_in = double.add_user("mona", id=1)
    form = {"client_id": oauth_app.client_id, "client_secret": oauth_app.client_secret}

    as_json = requests.post(f"{double.url}/login/oauth/access_token", timeout=10,
                            data={**form, "code": get_code(double, oauth_app)},
                            headers={"Accept": "application/json"})
    as_form = requests.post(f"{double.url}/login/oauth/access_token", timeout=10,
                            data={**form, "code": get_code(double, oauth_app)})

    assert as_json.headers["Content-Type"].startswith("application/json")
    assert as_json.json()["token_type"] == "bearer"
    assert as_json.json()["scope"] == "read:user,user:email"
    assert as_json.json()["access_token"].startswith("gho_")
    assert as_form.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(as_form.text)["token_type"] == ["bearer"]


def test_the_double_rejects_a_wrong_secret_and_a_reused_code_with_status_200(github_double_server, oauth_app):
    double = github_double_server
    double.signed_in = double.add_user("mona", id=1)
    code = get_code(double, oauth_app)
    url = f"{double.url}/login/oauth/access_token"
    json_accept = {"Accept": "application/json"}

    wrong_secret = requests.post(url, data={"client_id": oauth_app.client_id, "client_secret": "nope",
                                            "code": code}, headers=json_accept, timeout=10)
    good = {"client_id": oauth_app.client_id, "client_secret": oauth_app.client_secret, "code": code}
    first = requests.post(url, data=good, headers=json_accept, timeout=10)
    second = requests.post(url, data=good, headers=json_accept, timeout=10)

    assert wrong_secret.status_code == 200
    assert wrong_secret.json()["error"] == "incorrect_client_credentials"
    assert "access_token" in first.json()
    assert second.status_code == 200
    assert second.json()["error"] == "bad_verification_code"
    assert second.json()["error_description"] == "The code passed is incorrect or expired."


def test_the_double_api_needs_a_valid_token_and_the_email_scope(github_double_server, oauth_app):
    double = github_double_server
    mona = double.add_user("mona", id=7, emails=[
        {"email": "mona@example.org", "primary": True, "verified": True, "visibility": "public"},
    ])
    full = double.issue_token(mona)
    profile_only = double.issue_token(mona, scopes=("read:user",))
    api = double.api_url

    anonymous = requests.get(f"{api}/user", timeout=10)
    forged = requests.get(f"{api}/user", headers={"Authorization": "token gho_forged"}, timeout=10)
    bearer = requests.get(f"{api}/user", headers={"Authorization": f"Bearer {full}"}, timeout=10)
    emails = requests.get(f"{api}/user/emails", headers={"Authorization": f"token {full}"}, timeout=10)
    no_scope = requests.get(f"{api}/user/emails", headers={"Authorization": f"token {profile_only}"}, timeout=10)

    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == "Requires authentication"
    assert forged.status_code == 401
    assert forged.json()["message"] == "Bad credentials"
    assert bearer.status_code == 200
    assert bearer.json()["id"] == 7
    assert bearer.json()["email"] is None
    assert bearer.json()["html_url"] == f"{double.url}/mona"
    assert bearer.headers["X-OAuth-Scopes"] == "read:user, user:email"
    assert emails.json() == [{"email": "mona@example.org", "primary": True, "verified": True,
                              "visibility": "public"}]
    assert no_scope.status_code == 404


def test_the_double_refuses_unknown_clients_and_foreign_redirect_uris(github_double_server, oauth_app):
    double = github_double_server
    double.signed_in = double.add_user("mona", id=1)
    url = f"{double.url}/login/oauth/authorize"

    unknown = requests.get(url, params=authorize_query(oauth_app, client_id="Iv1.unknown"),
                           allow_redirects=False, timeout=10)
    foreign = requests.get(url, params=authorize_query(oauth_app, redirect_uri="http://evil.example/cb"),
                           allow_redirects=False, timeout=10)
    no_state = requests.get(url, params={k: v for k, v in authorize_query(oauth_app).items() if k != "state"},
                            allow_redirects=False, timeout=10)
    bad_scope = requests.get(url, params=authorize_query(oauth_app, scope="read:user everything"),
                             allow_redirects=False, timeout=10)

    assert unknown.status_code == 404
    assert foreign.status_code == 302
    location = urlsplit(foreign.headers["Location"])
    assert location.netloc == "app.example"
    assert parse_qs(location.query)["error"] == ["redirect_uri_mismatch"]
    assert no_state.status_code == 400
    assert bad_scope.status_code == 400
