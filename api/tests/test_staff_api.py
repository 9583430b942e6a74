"""Staff endpoints: every session, stopping any, everyone's attempts; refused to learners."""

from __future__ import annotations

import pytest

from api.staff import STAFF_ONLY
from judge.models import Attempt
from sessions_app.models import EndReason, Session, State


@pytest.fixture
def two_sessions(start, owner, other_learner, lab):
    return start(owner, lab), start(other_learner, lab)


@pytest.mark.parametrize("method,path", [
    ("get", "/staff/sessions"), ("post", "/staff/sessions/{pk}/stop"), ("get", "/staff/attempts"),
])
def test_learners_are_refused_staff_endpoints(owner_api, two_sessions, method, path):
    own = two_sessions[0]
    response = getattr(owner_api, method)(path.format(pk=own.pk))
    assert response.status_code == 403
    assert response.json() == {"detail": STAFF_ONLY}
    own.refresh_from_db()
    assert own.state == State.RUNNING


def test_staff_list_every_session_and_filter_them(staff_api, two_sessions, owner):
    listed = staff_api.get("/staff/sessions").json()
    assert listed["count"] == 2
    assert {s["id"] for s in listed["items"]} == {str(s.pk) for s in two_sessions}
    mine = staff_api.get("/staff/sessions", user=owner.username).json()
    assert [s["id"] for s in mine["items"]] == [str(two_sessions[0].pk)]
    assert staff_api.get("/staff/sessions", state="stopped").json()["count"] == 0
    assert staff_api.get("/staff/sessions", state="nonsense").status_code == 422


def test_staff_list_pages_with_limit_and_offset(staff_api, two_sessions):
    first = staff_api.get("/staff/sessions", limit=1).json()
    second = staff_api.get("/staff/sessions", limit=1, offset=1).json()
    assert first["count"] == second["count"] == 2
    assert first["items"][0]["id"] != second["items"][0]["id"]


def test_staff_stop_any_session_with_their_name_in_its_log(staff_api, two_sessions,
                                                         django_capture_on_commit_callbacks):
    target = two_sessions[1]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_api.post(f"/staff/sessions/{target.pk}/stop")
    assert response.status_code == 200
    target.refresh_from_db()
    assert (target.state, target.end_reason) == (State.STOPPED, EndReason.STAFF)
    assert target.events.filter(message__contains="stella, API").exists()
    assert Session.objects.get(pk=two_sessions[0].pk).state == State.RUNNING


def test_staff_list_everyones_attempts(staff_api, two_sessions, owner, other_learner, lab):
    for session in two_sessions:
        Attempt.objects.create(user=session.user, session=session, lab=lab, status=Attempt.Status.DONE,
                               passed=session.user == owner, result={"passed": session.user == owner})
    everyone = staff_api.get("/staff/attempts").json()
    assert {a["user"] for a in everyone["items"]} == {owner.username, other_learner.username}
    passed = staff_api.get("/staff/attempts", passed="true").json()["items"]
    assert [(a["user"], a["verdict"]) for a in passed] == [(owner.username, "passed")]
    assert staff_api.get("/staff/attempts", user=other_learner.username).json()["count"] == 1
