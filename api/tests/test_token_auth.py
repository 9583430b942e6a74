"""Who the API lets in: personal tokens (hashed at rest, read or write) and the signed-in browser with CSRF."""

from __future__ import annotations

import hashlib
import json

from django.test import Client

from api.auth import READ_ONLY_REFUSAL
from api.models import ApiToken
from api.tests.conftest import API, Api
from sessions_app.models import Session


def test_no_token_is_401(anonymous_api, lab):
    response = anonymous_api.get("/labs")
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


def test_a_wrong_token_is_401(owner, token_for, lab):
    real = token_for(owner)
    for wrong in ["nonsense", real[:-1] + ("A" if real[-1] != "A" else "B"), "labs_" + "x" * 43]:
        assert Api(Client(), wrong).get("/labs").status_code == 401


def test_a_revoked_token_is_401(owner, token_for, lab):
    token = token_for(owner)
    assert Api(Client(), token).get("/labs").status_code == 200
    ApiToken.objects.filter(user=owner).delete()
    assert Api(Client(), token).get("/labs").status_code == 401


def test_an_inactive_users_token_is_401(owner, token_for, lab):
    token = token_for(owner)
    owner.is_active = False
    owner.save()
    assert Api(Client(), token).get("/labs").status_code == 401


def test_a_read_token_reads_but_cannot_start_anything(owner, token_for, lab):
    api = Api(Client(), token_for(owner, ApiToken.Scope.READ))
    assert api.get("/sessions").status_code == 200
    response = api.post("/sessions", {"lab": lab.slug})
    assert response.status_code == 403
    assert response.json() == {"detail": READ_ONLY_REFUSAL}
    assert not Session.objects.exists()


def test_a_read_token_cannot_stop_extend_or_check(owner, token_for, running):
    api = Api(Client(), token_for(owner, ApiToken.Scope.READ))
    for action in ["stop", "extend", "checks"]:
        assert api.post(f"/sessions/{running.pk}/{action}").status_code == 403
    running.refresh_from_db()
    assert running.state == "running" and running.extensions_used == 0


def test_only_the_tokens_hash_is_kept_and_its_use_is_recorded(owner, lab):
    row, token = ApiToken.issue(owner, "ci", ApiToken.Scope.READ)
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert token.startswith(row.prefix) and len(token) >= 48
    assert row.last_used_at is None
    assert Api(Client(), token).get("/labs").status_code == 200
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_the_signed_in_browser_reads_with_its_cookie(owner_client, lab):
    response = owner_client.get(f"{API}/labs")
    assert response.status_code == 200
    assert [item["slug"] for item in response.json()["items"]] == [lab.slug]


def test_the_browser_must_send_the_csrf_token_to_change_anything(owner, lab, django_capture_on_commit_callbacks):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    browser.get("/")  # the page sets the csrftoken cookie
    body = json.dumps({"lab": lab.slug})
    refused = browser.post(f"{API}/sessions", body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Session.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        accepted = browser.post(f"{API}/sessions", body, content_type="application/json",
                                headers={"X-CSRFToken": browser.cookies["csrftoken"].value})
    assert accepted.status_code == 201
    assert Session.objects.get().user == owner


def test_a_token_needs_no_csrf_token(owner, token_for, lab, django_capture_on_commit_callbacks):
    api = Api(Client(enforce_csrf_checks=True), token_for(owner))
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/sessions", {"lab": lab.slug}).status_code == 201
