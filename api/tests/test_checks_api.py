"""Running a check and reading its verdict through the API: judge.actions.request_check, as the Check button."""

from __future__ import annotations

import pytest

from judge.models import Attempt
from judge.tests import judge_fixtures
from judge.tests.judge_fixtures import put

checked_lab = judge_fixtures.checked_lab


@pytest.fixture
def checked(start, owner, checked_lab):
    return start(owner, checked_lab)


def check(api, session, capture, step=None):
    with capture(execute=True):
        response = api.post(f"/sessions/{session.pk}/checks", {"step": step} if step else {})
    return response


def test_a_passing_step_check_reads_passed(owner_api, checked, django_capture_on_commit_callbacks):
    put(checked, "hello.txt", "hello\n")
    response = check(owner_api, checked, django_capture_on_commit_callbacks, step=1)
    assert response.status_code == 202
    assert response.json()["status"] == "queued"  # answered before its job ran on commit
    verdict = owner_api.get(f"/sessions/{checked.pk}/attempts/{response.json()['id']}").json()
    assert (verdict["status"], verdict["verdict"], verdict["passed"], verdict["step"]) == ("done", "passed", True, 1)
    assert verdict["failures"] == []


def test_a_failing_final_check_reads_its_failure_codes(owner_api, checked, django_capture_on_commit_callbacks):
    response = check(owner_api, checked, django_capture_on_commit_callbacks)
    attempt = Attempt.objects.get(pk=response.json()["id"])
    assert attempt.step is None and attempt.passed is False
    verdict = owner_api.get(f"/sessions/{checked.pk}/attempts/{attempt.pk}").json()
    assert verdict["verdict"] == "not passed" and verdict["step"] is None
    assert [f["code"] for f in verdict["failures"]] == [f["code"] for f in attempt.result["failures"]]
    assert verdict["failures"] and all(f["message"] for f in verdict["failures"])
    listed = owner_api.get(f"/sessions/{checked.pk}/attempts").json()
    assert [a["id"] for a in listed["items"]] == [attempt.pk]


def test_a_locked_step_is_409_with_the_judges_reason(owner_api, checked):
    response = owner_api.post(f"/sessions/{checked.pk}/checks", {"step": 3})
    assert response.status_code == 409
    assert response.json()["detail"] == "Pass the earlier steps first: this step is still locked."
    assert not Attempt.objects.exists()


def test_a_step_the_lab_does_not_have_is_404(owner_api, checked):
    assert owner_api.post(f"/sessions/{checked.pk}/checks", {"step": 9}).status_code == 404


def test_a_step_number_below_one_is_422(owner_api, checked):
    response = owner_api.post(f"/sessions/{checked.pk}/checks", {"step": 0})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "step"


def test_a_stopped_session_cannot_be_checked(owner_api, checked, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        owner_api.post(f"/sessions/{checked.pk}/stop")
    response = owner_api.post(f"/sessions/{checked.pk}/checks")
    assert response.status_code == 409
    assert "running session" in response.json()["detail"]


def test_staff_may_read_verdicts_but_checks_are_the_learners(staff_api, owner_api, checked,
                                                            django_capture_on_commit_callbacks):
    attempt_id = check(owner_api, checked, django_capture_on_commit_callbacks).json()["id"]
    assert staff_api.get(f"/sessions/{checked.pk}/attempts/{attempt_id}").status_code == 200
    assert staff_api.post(f"/sessions/{checked.pk}/checks").status_code == 404
    assert Attempt.objects.count() == 1


def test_an_attempt_of_another_session_is_404(owner_api, other_api, checked, other_learner, checked_lab, start,
                                              django_capture_on_commit_callbacks):
    attempt_id = check(owner_api, checked, django_capture_on_commit_callbacks).json()["id"]
    others = start(other_learner, checked_lab)
    assert other_api.get(f"/sessions/{others.pk}/attempts/{attempt_id}").status_code == 404
