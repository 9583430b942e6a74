"""A runner's capacity and the line for its slots (sessions_app/admission.py), on the fake runner."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from sessions_app import actions, admission, reaping
from sessions_app.models import SLOT_STATES, RunnerCapacity, Session, State
from tests.concurrency import at_once


@pytest.fixture
def start(lab, django_capture_on_commit_callbacks):
    """Start `lab` for `user` with the on-commit jobs run (the fake runner's provision runs inline)."""
    def _start(user):
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(user, lab)
        session.refresh_from_db()
        return session

    return _start


@pytest.fixture
def learners(django_user_model):
    def _make(count, prefix="learner"):
        return [django_user_model.objects.create_user(f"{prefix}{i}", f"{prefix}{i}@example.com", "pw-123456789")
                for i in range(count)]

    return _make


def _stop_and_tear_down(session, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    session.refresh_from_db()


def test_without_a_capacity_every_start_is_provisioned_as_before(start, learners):
    sessions = [start(user) for user in learners(3)]
    assert [s.state for s in sessions] == [State.RUNNING] * 3
    assert all(s.events.first().message.startswith("Queued") for s in sessions)


def test_a_start_past_the_capacity_waits_with_no_job_and_is_admitted_when_a_slot_frees(
        start, learners, lab, django_capture_on_commit_callbacks):
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    first_user, second_user, third_user = learners(3)
    first = start(first_user)
    second = start(second_user)
    third = start(third_user)
    assert first.state == State.RUNNING
    assert (second.state, third.state) == (State.WAITING, State.WAITING)
    assert second.runner_state == {} and not second.events.filter(message__contains="Creating").exists()
    assert admission.place_in_line(second).position == 1
    assert admission.place_in_line(third).position == 2

    _stop_and_tear_down(first, django_capture_on_commit_callbacks)
    assert first.state == State.STOPPED
    second.refresh_from_db()
    third.refresh_from_db()
    assert second.state == State.RUNNING  # admitted, and its queued provision job ran
    assert third.state == State.WAITING
    assert admission.place_in_line(third).position == 1


def test_a_failed_start_frees_its_slot_for_the_next_in_line(learners, lab, django_capture_on_commit_callbacks):
    from sessions_app.jobs import provision_session

    lab.runner = "fake-failing"
    lab.save()
    RunnerCapacity.objects.create(runner="fake-failing", max_sessions=1)
    first_user, second_user = learners(2)
    first = actions.start_session(first_user, lab)  # its job not run yet: it holds the slot
    second = actions.start_session(second_user, lab)
    assert (first.state, second.state) == (State.REQUESTED, State.WAITING)
    with django_capture_on_commit_callbacks(execute=True):
        provision_session(str(first.pk))
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == State.FAILED
    # Admitted, and its own provision job ran (and failed the same way on this runner).
    assert second.events.filter(message__startswith="Your turn").exists()
    assert second.state == State.FAILED


def test_the_page_shows_the_place_in_line_and_an_honest_eta(start, learners, client, lab):
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    running_user, first_user, waiting_user = learners(3)
    running = start(running_user)
    Session.objects.filter(pk=running.pk).update(expires_at=timezone.now() + timedelta(minutes=20, seconds=30))
    start(first_user)
    waiting = start(waiting_user)
    client.force_login(waiting_user)

    page = client.get(reverse("sessions:detail", args=[waiting.pk])).content.decode()
    assert "You are number 2 in line" in page
    # Second in line needs a second slot to free: only one session holds a deadline, so no ETA is claimed.
    assert "minute" not in page.split("You are number 2 in line")[1].split("</p>")[0]
    assert "Cancel" in page

    first_in_line = Session.objects.get(user=first_user)
    client.force_login(first_user)
    status = client.get(reverse("sessions:status", args=[first_in_line.pk])).content.decode()
    assert "You are number 1 in line: about 21 minutes to wait" in status


def test_cancelling_while_waiting_ends_at_once_and_moves_the_line_up(start, learners, client, lab):
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    running_user, first_user, second_user = learners(3)
    start(running_user)
    first = start(first_user)
    second = start(second_user)
    client.force_login(first_user)
    response = client.post(reverse("sessions:stop", args=[first.pk]))
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.state == State.STOPPED and first.end_reason == "learner"
    assert first.events.last().message.startswith("Left the line")
    assert admission.place_in_line(second).position == 1
    # Another learner cannot cancel someone else's place.
    response = client.post(reverse("sessions:stop", args=[second.pk]))
    assert response.status_code == 404
    second.refresh_from_db()
    assert second.state == State.WAITING


def test_a_waiting_session_counts_against_the_users_quota(start, learners):
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    running_user, waiting_user = learners(2)
    start(running_user)
    assert start(waiting_user).state == State.WAITING
    with pytest.raises(actions.QuotaExceeded):
        start(waiting_user)


def test_the_reaper_admits_the_line_after_staff_raise_the_capacity(start, learners,
                                                                   django_capture_on_commit_callbacks):
    capacity = RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    users = learners(4)
    sessions = [start(user) for user in users]
    assert [s.state for s in sessions] == [State.RUNNING, State.WAITING, State.WAITING, State.WAITING]
    capacity.max_sessions = 3
    capacity.save()
    with django_capture_on_commit_callbacks(execute=True):
        reaping.reap()
    states = [Session.objects.get(pk=s.pk).state for s in sessions]
    assert states == [State.RUNNING, State.RUNNING, State.RUNNING, State.WAITING]


def test_staff_see_the_waiting_sessions_in_the_admin(start, learners, client, staff_user):
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    first_user, waiting_user = learners(2)
    start(first_user)
    waiting = start(waiting_user)
    client.force_login(staff_user)
    page = client.get(reverse("admin:sessions_app_session_changelist"), {"state": "waiting"}).content.decode()
    assert str(waiting.pk)[:8] in page
    capacities = client.get(reverse("admin:sessions_app_runnercapacity_changelist")).content.decode()
    assert "fake" in capacities


def _race(lab, users, capacity):
    """Every user starts `lab` at the same instant; returns the sessions, oldest first."""
    if connection.vendor != "postgresql":
        pytest.fail("this race test must run on PostgreSQL (set DATABASE_URL)")
    RunnerCapacity.objects.create(runner="fake", max_sessions=capacity)
    pending = list(users)
    original_create = Session.objects.create

    def slow_create(**kwargs):
        time.sleep(0.005)  # widen the window between the count and the insert
        return original_create(**kwargs)

    def attempt():
        return actions.start_session(pending.pop(), lab).pk

    return slow_create, attempt


@pytest.mark.django_db(transaction=True)
def test_simultaneous_starts_admit_exactly_the_capacity_and_queue_the_rest_in_order(
        lab, learners, monkeypatch, django_capture_on_commit_callbacks):
    users = learners(50, prefix="racer")
    slow_create, attempt = _race(lab, users, capacity=10)
    monkeypatch.setattr(Session.objects, "create", slow_create)

    ids = at_once(attempt, count=50, timeout=120)
    assert len(ids) == len(set(ids)) == 50  # none lost, none doubled
    sessions = list(Session.objects.order_by("created_at", "pk"))
    assert len(sessions) == 50 and len({s.user_id for s in sessions}) == 50
    assert all(s.state in SLOT_STATES for s in sessions[:10])  # the fake runner's job ran on commit
    assert [s.state for s in sessions[10:]] == [State.WAITING] * 40
    assert [admission.place_in_line(s).position for s in sessions[10:]] == list(range(1, 41))

    # Ending admitted sessions lets the waiting ones in, oldest first, never past the capacity.
    for ended, admitted in zip(sessions[:5], sessions[10:15], strict=True):
        _stop_and_tear_down(Session.objects.get(pk=ended.pk), django_capture_on_commit_callbacks)
        assert Session.objects.get(pk=admitted.pk).state == State.RUNNING
        assert Session.objects.filter(state__in=SLOT_STATES).count() == 10
    assert [Session.objects.get(pk=s.pk).state for s in sessions[15:]] == [State.WAITING] * 35


def test_the_pages_of_those_still_waiting_are_told_when_the_line_moves(start, learners, monkeypatch,
                                                                        django_capture_on_commit_callbacks):
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    running_user, first_user, second_user = learners(3)
    start(running_user)
    first = start(first_user)
    second = start(second_user)
    told = []
    monkeypatch.setattr(admission.live, "publish", lambda session_id, status=False: told.append((session_id, status)))
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(first)
    assert (second.pk, True) in told  # its status region re-renders with "number 1"


def test_a_lab_on_the_default_runner_is_counted_on_the_runner_default_stands_for(
        start, learners, lab, monkeypatch, django_capture_on_commit_callbacks):
    # Most labs name "default"; staff cap the concrete runner ("docker" on most machines), which is
    # also what provisioning records: the Start must count against it, or nothing would ever wait.
    import runners

    monkeypatch.setattr(runners, "_auto_default_alias", lambda configs: "fake")
    lab.runner = "default"
    lab.save()
    RunnerCapacity.objects.create(runner="fake", max_sessions=1)
    first_user, second_user = learners(2)
    first = start(first_user)
    second = start(second_user)
    assert (first.runner_name, first.state) == ("fake", State.RUNNING)
    assert (second.runner_name, second.state) == ("fake", State.WAITING)
    _stop_and_tear_down(first, django_capture_on_commit_callbacks)
    second.refresh_from_db()
    assert second.state == State.RUNNING


def test_without_any_capacity_the_start_does_not_resolve_the_runner(start, learners, lab, monkeypatch):
    # "default" asks the Docker engine whether it is up: not on every Start when no capacity is set.
    import runners

    def engine_asked(configs):
        raise AssertionError("the default runner was resolved in the request")

    monkeypatch.setattr(runners, "_auto_default_alias", engine_asked)
    lab.runner = "default"
    lab.save()
    assert admission.runner_of_start("default", lab.image.kind) == "default"
