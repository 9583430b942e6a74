"""Progress through a lab: which steps passed, and which are still locked."""

from __future__ import annotations

from judge.models import Attempt
from judge.progress import final_passed, locked_steps, step_progress
from judge.tests import judge_fixtures

# The shared fixtures, under the names the tests ask for.
checked_lab = judge_fixtures.checked_lab
running = judge_fixtures.running


def done(session, step, passed: bool) -> Attempt:
    return Attempt.objects.create(user=session.user, session=session, lab=session.lab, step=step,
                                  status=Attempt.Status.DONE, passed=passed)


def test_steps_start_unchecked_and_later_steps_locked(running):
    steps = list(running.lab.steps.order_by("order"))
    assert step_progress(running) == {step.pk: None for step in steps}
    assert locked_steps(running) == {steps[1].pk, steps[2].pk}


def test_a_passed_step_stays_passed_after_a_later_failed_attempt(running):
    first = running.lab.steps.get(order=1)
    done(running, first, True)
    done(running, first, False)
    assert step_progress(running)[first.pk] is True


def test_a_step_without_checks_never_holds_the_next_one_back(running):
    first, _second, third = running.lab.steps.order_by("order")
    done(running, first, True)
    assert locked_steps(running) == set()
    done(running, third, False)
    assert step_progress(running)[third.pk] is False


def test_queued_and_errored_attempts_do_not_count(running):
    first = running.lab.steps.get(order=1)
    Attempt.objects.create(user=running.user, session=running, lab=running.lab, step=first)
    Attempt.objects.create(user=running.user, session=running, lab=running.lab, step=first,
                           status=Attempt.Status.ERROR)
    assert step_progress(running)[first.pk] is None


def test_the_final_check_is_tracked_apart_from_the_steps(running):
    assert final_passed(running) is None
    done(running, None, False)
    assert final_passed(running) is False
    done(running, None, True)
    assert final_passed(running) is True
