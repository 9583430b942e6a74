import pytest

from sessions_app.models import TRANSITIONS, InvalidTransition, Session, StaleTransition, State


@pytest.fixture
def session(owner, lab):
    return Session.objects.create(user=owner, lab=lab, runner_name="fake")


def test_a_new_session_is_requested(session):
    assert session.state == State.REQUESTED


def test_the_happy_path_runs_requested_provisioning_running_stopping_stopped(session):
    for state in (State.PROVISIONING, State.RUNNING, State.STOPPING, State.STOPPED):
        session.transition(state)
    session.refresh_from_db()
    assert session.state == State.STOPPED
    assert session.ended_at is not None


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (source, target)
        for source in State
        for target in State
        if target not in TRANSITIONS[source]
    ],
)
def test_every_transition_outside_the_table_raises(session, source, target):
    Session.objects.filter(pk=session.pk).update(state=source)
    session.refresh_from_db()
    with pytest.raises(InvalidTransition):
        session.transition(target)
    session.refresh_from_db()
    assert session.state == source


def test_ended_states_are_final():
    for state in (State.STOPPED, State.FAILED, State.EXPIRED):
        assert TRANSITIONS[state] == frozenset()


def test_a_stale_copy_cannot_move_a_session_another_worker_already_moved(session):
    stale = Session.objects.get(pk=session.pk)
    session.transition(State.PROVISIONING)
    with pytest.raises(StaleTransition):
        stale.transition(State.PROVISIONING)
    assert stale.state == State.PROVISIONING  # refreshed to the truth


def test_transition_saves_the_changes_with_the_state(session):
    session.transition(State.FAILED, error="engine unreachable")
    session.refresh_from_db()
    assert (session.state, session.error) == (State.FAILED, "engine unreachable")


def test_bulk_transition_uses_the_same_table(session):
    with pytest.raises(InvalidTransition):
        Session.objects.filter(pk=session.pk).transition_all(State.REQUESTED, State.RUNNING)
    assert Session.objects.filter(pk=session.pk).transition_all(State.REQUESTED, State.PROVISIONING) == 1


def test_the_database_refuses_an_unknown_state(session):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Session.objects.filter(pk=session.pk).update(state="dancing")


# The table of issue 2 (requested → provisioning → running → stopping → stopped | failed | expired),
# written out by hand so an edit to TRANSITIONS cannot silently change what the tests above derive.
# Edges beyond the straight line, and who takes them:
#   requested → stopping      the learner cancels before a worker picks the job up (actions.stop_session)
#   requested → failed        the reaper fails a start whose job was lost (reaping.fail_stuck_starts)
#   provisioning → stopping   the learner stops while the environment starts (provisioning adopts and removes it)
#   provisioning → failed     the runner cannot start it, or the reaper finds the start hung
#   running → failed          the reconciler finds the environment vanished (reconcile.fail_vanished)
#   stopping → expired        teardown of a session stopped by its time limit or idle timeout
#   stopping → failed         teardown could not remove the environment (provisioning.teardown)
#   waiting → requested       a slot freed on the runner (admission.admit); waiting → stopped: left the line
EXPECTED_TRANSITIONS = {
    "waiting": {"requested", "stopped"},
    "requested": {"provisioning", "stopping", "failed"},
    "provisioning": {"running", "stopping", "failed"},
    "running": {"stopping", "failed"},
    "stopping": {"stopped", "expired", "failed"},
    "stopped": set(),
    "failed": set(),
    "expired": set(),
}


def test_the_transition_table_is_exactly_the_intended_one():
    actual = {str(source): {str(target) for target in targets} for source, targets in TRANSITIONS.items()}
    assert actual == EXPECTED_TRANSITIONS
    assert {state.value for state in State} == set(EXPECTED_TRANSITIONS)
