"""The API's test cast: tokens for the shared users, a JSON client, a running session on the fake runner."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from api.models import ApiToken
from sessions_app import actions
from sessions_app.models import Session, State

API = "/api/v1"


class Api:
    """Calls the API as a script would: JSON in and out, a bearer token when given one."""

    def __init__(self, client: Client, token: str = "") -> None:
        self.client = client
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **params: Any):
        return self.client.get(API + path, params, headers=self._headers())

    def post(self, path: str, body: Any = None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(API + path, data, content_type="application/json", headers=self._headers())


@pytest.fixture
def token_for():
    def make(user, scope: str = ApiToken.Scope.WRITE) -> str:
        return ApiToken.issue(user, f"{scope} token", scope)[1]

    return make


@pytest.fixture
def owner_api(owner, token_for) -> Api:
    return Api(Client(), token_for(owner))


@pytest.fixture
def other_api(other_learner, token_for) -> Api:
    return Api(Client(), token_for(other_learner))


@pytest.fixture
def staff_api(staff_user, token_for) -> Api:
    return Api(Client(), token_for(staff_user))


@pytest.fixture
def anonymous_api(db) -> Api:
    return Api(Client())


@pytest.fixture
def start(django_capture_on_commit_callbacks):
    """Start a session through the verb, its provisioning job run on commit (on the fake runner)."""

    def _start(user, lab) -> Session:
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(user, lab)
        session.refresh_from_db()
        return session

    return _start


@pytest.fixture
def running(start, owner, lab) -> Session:
    session = start(owner, lab)
    assert session.state == State.RUNNING
    return session
