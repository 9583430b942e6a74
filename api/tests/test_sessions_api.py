"""Labs and my sessions through the API: the same verbs, quotas and access rules as the pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from api.tests.conftest import Api
from labs.models import Lab
from runners import fake
from sessions_app.models import EndReason, Session, State


@pytest.fixture
def draft_lab(container_image):
    return Lab.objects.create(slug="draft", title="Draft", image=container_image, runner="fake", published=False)


def test_learners_list_the_published_labs_they_may_start(owner_api, lab, draft_lab):
    body = owner_api.get("/labs").json()
    assert body["count"] == 1
    assert body["items"][0]["slug"] == lab.slug
    assert body["items"][0]["url"] == lab.get_absolute_url()
    assert owner_api.get(f"/labs/{draft_lab.slug}").status_code == 404


def test_staff_list_every_lab_since_they_may_start_drafts(staff_api, lab, draft_lab):
    assert {item["slug"] for item in staff_api.get("/labs").json()["items"]} == {lab.slug, draft_lab.slug}


def test_a_lab_lists_its_steps_by_number(owner_api, lab):
    body = owner_api.get(f"/labs/{lab.slug}").json()
    assert body["steps"] == [{"order": 1, "title": "Greet", "has_check": False}]
    assert body["has_final_check"] is False


def test_starting_a_lab_runs_a_session_on_the_runner(owner_api, owner, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_api.post("/sessions", {"lab": lab.slug})
    assert response.status_code == 201
    body = response.json()
    session = Session.objects.get(pk=body["id"])
    assert (session.user, session.lab) == (owner, lab)
    assert body["state"] == State.REQUESTED  # answered before the job ran; the job ran on commit
    session.refresh_from_db()
    assert session.state == State.RUNNING
    assert session.runner_state["env_id"] in fake.ENVIRONMENTS
    got = owner_api.get(f"/sessions/{session.pk}").json()
    assert got["state"] == "running" and got["seconds_left"] > 0 and got["url"] == session.get_absolute_url()


def test_a_full_quota_is_409_with_the_session_that_holds_it(owner_api, owner, lab, running):
    response = owner_api.post("/sessions", {"lab": lab.slug})
    assert response.status_code == 409
    assert response.json()["session"] == str(running.pk)
    assert "limit 1" in response.json()["detail"]
    assert Session.objects.count() == 1


def test_an_unpublished_lab_cannot_be_started_by_a_learner(owner_api, draft_lab):
    response = owner_api.post("/sessions", {"lab": draft_lab.slug})
    assert response.status_code == 404
    assert not Session.objects.exists()


def test_a_disabled_image_is_409_with_the_reason(owner_api, lab):
    lab.image.active = False
    lab.image.save()
    response = owner_api.post("/sessions", {"lab": lab.slug})
    assert response.status_code == 409
    assert "disabled" in response.json()["detail"]


def test_my_sessions_are_mine_only(owner_api, other_api, running):
    assert [s["id"] for s in owner_api.get("/sessions").json()["items"]] == [str(running.pk)]
    assert other_api.get("/sessions").json() == {"items": [], "count": 0}


def test_extending_pushes_the_time_limit_back(owner_api, running):
    before = running.expires_at
    response = owner_api.post(f"/sessions/{running.pk}/extend")
    assert response.status_code == 200
    running.refresh_from_db()
    assert running.expires_at - before == timedelta(minutes=running.lab.extension_minutes)
    assert response.json()["extensions_left"] == running.lab.max_extensions - 1


def test_extending_past_the_labs_extensions_is_409(owner_api, running):
    running.lab.max_extensions = 0
    running.lab.save()
    response = owner_api.post(f"/sessions/{running.pk}/extend")
    assert response.status_code == 409
    assert response.json()["detail"] == "No extensions left: this lab allows 0."


def test_stopping_tears_the_session_down(owner_api, running, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_api.post(f"/sessions/{running.pk}/stop")
    assert response.status_code == 200
    running.refresh_from_db()
    assert (running.state, running.end_reason) == (State.STOPPED, EndReason.LEARNER)
    assert fake.ENVIRONMENTS == {}
    assert owner_api.post(f"/sessions/{running.pk}/stop").status_code == 200  # twice is harmless


@pytest.mark.parametrize("method,suffix", [
    ("get", ""), ("post", "/extend"), ("post", "/stop"), ("post", "/checks"), ("get", "/attempts"),
    ("get", "/attempts/1"),
])
def test_another_learners_session_is_404(other_api, running, method, suffix):
    response = getattr(other_api, method)(f"/sessions/{running.pk}{suffix}")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such session"}
    running.refresh_from_db()
    assert running.state == State.RUNNING and running.extensions_used == 0


@pytest.mark.parametrize("method,path", [
    ("get", "/labs"), ("get", "/labs/hello-shell"), ("get", "/sessions"), ("post", "/sessions"),
    ("get", "/sessions/{pk}"), ("post", "/sessions/{pk}/stop"), ("post", "/sessions/{pk}/extend"),
    ("post", "/sessions/{pk}/checks"), ("get", "/sessions/{pk}/attempts"), ("get", "/staff/sessions"),
    ("post", "/staff/sessions/{pk}/stop"), ("get", "/staff/attempts"),
])
def test_anonymous_callers_get_401_everywhere(anonymous_api, running, method, path):
    response = getattr(anonymous_api, method)(path.format(pk=running.pk))
    assert response.status_code == 401
    running.refresh_from_db()
    assert running.state == State.RUNNING


def test_staff_may_look_at_and_stop_a_learners_session(staff_api, running, django_capture_on_commit_callbacks):
    assert staff_api.get(f"/sessions/{running.pk}").json()["user"] == running.user.username
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_api.post(f"/sessions/{running.pk}/stop").status_code == 200
    running.refresh_from_db()
    assert (running.state, running.end_reason) == (State.STOPPED, EndReason.STAFF)
    assert running.events.filter(message__contains="stella, API").exists()


def test_a_nonsense_session_id_is_422_not_500(owner_api):
    response = owner_api.get("/sessions/not-a-uuid")
    assert response.status_code == 422


def test_a_deleted_user_token_does_not_reach_their_sessions(owner, token_for, running):
    token = token_for(owner)
    owner.delete()
    assert Api(Client(), token).get("/sessions").status_code == 401
