"""A check runs as an RQ job: the attempt goes queued → running → done (or error) with its result."""

from __future__ import annotations

import pytest

from judge import engine
from judge.engine import AttemptLog
from judge.models import Attempt
from judge.tests import judge_fixtures
from judge.tests.judge_fixtures import check, put
from runners import fake

# The shared fixtures, under the names the tests ask for.
checked_lab = judge_fixtures.checked_lab
running = judge_fixtures.running


def test_a_passing_step_check_records_its_result_and_duration(running, django_capture_on_commit_callbacks):
    put(running, "hello.txt", "hello world\n")
    attempt = check(running, running.lab.steps.get(order=1), django_capture_on_commit_callbacks)
    assert (attempt.status, attempt.passed) == (Attempt.Status.DONE, True)
    assert attempt.duration_ms is not None and attempt.duration_ms >= 0
    assert attempt.finished_at is not None
    assert attempt.result["checks"][0]["kind"] == "file"
    assert attempt.result["failures"] == []
    assert "==> [1/1] file hello.txt" in attempt.log
    assert "passed" in attempt.log


def test_a_failing_check_records_each_failure_with_code_message_and_hint(running,
                                                                        django_capture_on_commit_callbacks):
    attempt = check(running, running.lab.steps.get(order=1), django_capture_on_commit_callbacks)
    assert (attempt.status, attempt.passed) == (Attempt.Status.DONE, False)
    [failure] = attempt.result["failures"]
    assert failure["code"] == "file_missing"
    assert failure["message"] == "There is no file hello.txt in the workspace."
    assert failure["hint"]


def test_the_final_check_runs_the_labs_judge(running, django_capture_on_commit_callbacks):
    put(running, "hello.txt", "hello\n")
    attempt = check(running, None, django_capture_on_commit_callbacks)
    assert attempt.step is None
    assert attempt.passed is True
    assert [c["kind"] for c in attempt.result["checks"]] == ["file", "command"]


def test_the_attempt_is_queued_until_its_transaction_commits(running, django_capture_on_commit_callbacks):
    from judge import actions

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        attempt = actions.request_check(running, None, running.user)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.QUEUED and len(callbacks) == 1
    with django_capture_on_commit_callbacks(execute=True):
        callbacks[0]()  # enqueues the job, which runs inline once this block's transaction "commits"
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.DONE


def test_running_an_attempt_twice_changes_nothing(running, django_capture_on_commit_callbacks):
    put(running, "hello.txt", "hello\n")
    attempt = check(running, None, django_capture_on_commit_callbacks)
    assert engine.execute_attempt(attempt.pk) is None
    again = Attempt.objects.get(pk=attempt.pk)
    assert (again.status, again.passed, again.finished_at) == (attempt.status, attempt.passed, attempt.finished_at)


def test_an_attempt_already_running_elsewhere_is_left_alone(running):
    attempt = Attempt.objects.create(user=running.user, session=running, lab=running.lab,
                                     status=Attempt.Status.RUNNING)
    assert engine.execute_attempt(attempt.pk) is None
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.RUNNING


def test_a_vanished_environment_makes_an_error_not_a_failure(running, django_capture_on_commit_callbacks):
    fake.ENVIRONMENTS.clear()
    attempt = check(running, None, django_capture_on_commit_callbacks)
    assert (attempt.status, attempt.passed) == (Attempt.Status.ERROR, None)
    assert "not running" in attempt.result["error"]
    assert attempt.finished_at is not None


def test_checks_edited_into_something_invalid_make_an_error(running, django_capture_on_commit_callbacks):
    running.lab.judge = [{"kind": "file"}]
    running.lab.save()
    attempt = check(running, None, django_capture_on_commit_callbacks)
    assert attempt.status == Attempt.Status.ERROR
    assert "0.path: is required" in attempt.result["error"]


@pytest.mark.django_db
def test_the_streamed_log_is_written_to_the_row_as_it_grows(running):
    attempt = Attempt.objects.create(user=running.user, session=running, lab=running.lab)
    log = AttemptLog(attempt.pk, interval=0)
    log.write("Step 1/3 : FROM labs/python:3.11-slim\n")
    attempt.refresh_from_db()
    assert attempt.log == "Step 1/3 : FROM labs/python:3.11-slim\n"
    slow = AttemptLog(attempt.pk, interval=3600)
    slow.write("first\n")  # the first write goes out at once
    slow.write("held back\n")
    attempt.refresh_from_db()
    assert attempt.log == "first\n"
    slow.flush()
    attempt.refresh_from_db()
    assert attempt.log == "first\nheld back\n"


def test_a_huge_log_keeps_its_end():
    log = AttemptLog(0, interval=3600, limit=100)
    log._last_write = float("inf")  # never flush: no row to write to
    log._dirty = False
    for number in range(100):
        log.parts.append(f"line {number}\n")
        log.size += len(f"line {number}\n")
    text = log.text()
    assert text.endswith("line 99\n")
    assert text.startswith("[… ") and len(text) < 200
