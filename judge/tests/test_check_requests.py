"""Who may ask for a check, and when: owner only, running sessions, open steps, one at a time."""

from __future__ import annotations

import pytest

from judge import actions
from judge.models import Attempt
from judge.tests import judge_fixtures
from judge.tests.judge_fixtures import check, put
from sessions_app.models import State

# The shared fixtures, under the names the tests ask for.
checked_lab = judge_fixtures.checked_lab
running = judge_fixtures.running


def test_only_the_sessions_owner_may_ask(running, other_learner):
    with pytest.raises(actions.JudgeActionError, match="Only the learner"):
        actions.request_check(running, None, other_learner)


def test_a_session_that_is_not_running_cannot_be_checked(running):
    running.transition(State.STOPPING)
    with pytest.raises(actions.JudgeActionError, match="running session"):
        actions.request_check(running, None, running.user)
    assert not Attempt.objects.exists()


def test_a_step_without_checks_has_nothing_to_check(running):
    with pytest.raises(actions.JudgeActionError, match="nothing to check"):
        actions.request_check(running, running.lab.steps.get(order=2), running.user)


def test_a_locked_step_opens_once_the_steps_before_it_pass(running, django_capture_on_commit_callbacks):
    third = running.lab.steps.get(order=3)
    with pytest.raises(actions.JudgeActionError, match="locked"):
        actions.request_check(running, third, running.user)
    put(running, "hello.txt", "hello\n")
    assert check(running, running.lab.steps.get(order=1), django_capture_on_commit_callbacks).passed
    assert check(running, third, django_capture_on_commit_callbacks).passed is False  # open now, answer missing


def test_labs_that_do_not_lock_steps_let_any_step_be_checked(running, django_capture_on_commit_callbacks):
    running.lab.unlock_steps_in_order = False
    running.lab.save()
    attempt = check(running, running.lab.steps.get(order=3), django_capture_on_commit_callbacks)
    assert attempt.status == Attempt.Status.DONE


def test_a_second_click_while_a_check_runs_returns_the_same_attempt(running):
    queued = Attempt.objects.create(user=running.user, session=running, lab=running.lab)
    assert actions.request_check(running, None, running.user) == queued
    assert Attempt.objects.count() == 1


def test_another_check_must_wait_for_the_one_under_way(running):
    Attempt.objects.create(user=running.user, session=running, lab=running.lab)  # the final check, queued
    with pytest.raises(actions.JudgeActionError, match="still running"):
        actions.request_check(running, running.lab.steps.get(order=1), running.user)


def test_an_attempt_whose_worker_died_stops_blocking_the_session(running, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    stuck = Attempt.objects.create(user=running.user, session=running, lab=running.lab,
                                   status=Attempt.Status.RUNNING)
    Attempt.objects.filter(pk=stuck.pk).update(created_at=timezone.now() - timedelta(hours=1))
    attempt = check(running, None, django_capture_on_commit_callbacks)
    assert attempt != stuck and attempt.status == Attempt.Status.DONE
    stuck.refresh_from_db()
    assert stuck.status == Attempt.Status.ERROR and "interrupted" in stuck.result["error"]
