"""mark_active, the one verb every activity signal goes through: it counts only the signals the lab
chose (Lab.idle_signals), writes last_active_at with one conditional UPDATE, and stays cheap on hot
paths (at most one write per session per LAB_ACTIVITY_WRITE_SECONDS, and no query at all within it)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from labs.models import DEFAULT_IDLE_SIGNALS, IdleSignal
from sessions_app import actions
from sessions_app.models import Session, State

LONG_AGO = timedelta(minutes=10)


@pytest.fixture
def running(owner, lab) -> Session:
    now = timezone.now()
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING, started_at=now,
                                     expires_at=now + timedelta(hours=1), last_active_at=now - LONG_AGO)
    return Session.objects.select_related("lab").get(pk=session.pk)


def idle_again(session: Session) -> None:
    """The learner left: last_active_at long ago, and this process forgets it wrote lately."""
    Session.objects.filter(pk=session.pk).update(last_active_at=timezone.now() - LONG_AGO)
    actions.forget_activity_marks()


def last_active(session: Session):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session.pk).last_active_at


@pytest.mark.parametrize("signal", DEFAULT_IDLE_SIGNALS)
def test_by_default_terminal_editor_preview_and_cpu_count(running, signal) -> None:
    before = timezone.now()
    assert actions.mark_active(running, signal) is True
    assert last_active(running) >= before
    assert running.last_active_at == last_active(running)  # the instance says so too


def test_by_default_the_pages_heartbeat_does_not_count(running) -> None:
    assert actions.mark_active(running, IdleSignal.PAGE) is False
    assert last_active(running) == running.last_active_at


@pytest.mark.parametrize("signal", IdleSignal.values)
def test_each_signal_counts_exactly_when_the_lab_chose_it(running, signal) -> None:
    running.lab.idle_signals = [signal]
    running.lab.save(update_fields=["idle_signals"])
    for other in IdleSignal.values:
        if other != signal:
            assert actions.mark_active(running, other) is False, other
    assert last_active(running) == running.last_active_at
    assert actions.mark_active(running, signal) is True


def test_the_answer_to_the_idle_warning_always_counts(running) -> None:
    running.lab.idle_signals = ["cpu"]
    running.lab.save(update_fields=["idle_signals"])
    assert actions.mark_active(running, actions.ANSWER) is True


def test_an_unknown_signal_is_refused_clearly(running) -> None:
    with pytest.raises(ValueError, match="unknown activity signal 'keyboard'"):
        actions.mark_active(running, "keyboard")


def test_a_session_that_is_not_running_is_not_marked(running) -> None:
    Session.objects.filter(pk=running.pk).update(state=State.STOPPING)
    assert actions.mark_active(running, "terminal") is False
    assert last_active(running) == running.last_active_at


def test_writes_are_throttled_and_a_throttled_signal_costs_no_query(running, settings,
                                                                      django_assert_num_queries) -> None:
    settings.LAB_ACTIVITY_WRITE_SECONDS = 30
    with django_assert_num_queries(1):  # the lab came with the session: only the UPDATE
        assert actions.mark_active(running, "terminal") is True
    first = last_active(running)
    with django_assert_num_queries(0):
        for signal in ("terminal", "editor", "preview"):
            assert actions.mark_active(running, signal) is False
    assert last_active(running) == first


def test_another_processs_recent_write_is_not_repeated(running, settings, django_assert_num_queries) -> None:
    settings.LAB_ACTIVITY_WRITE_SECONDS = 30
    recent = timezone.now() - timedelta(seconds=10)
    Session.objects.filter(pk=running.pk).update(last_active_at=recent)  # written elsewhere 10 s ago
    with django_assert_num_queries(1):
        assert actions.mark_active(running, "terminal") is False
    assert last_active(running) == recent
    idle_again(running)
    assert actions.mark_active(running, "terminal") is True


def test_cpu_work_is_written_at_half_the_interval_so_no_watchdog_pass_is_skipped(running, settings) -> None:
    settings.LAB_ACTIVITY_WRITE_SECONDS = 30
    Session.objects.filter(pk=running.pk).update(last_active_at=timezone.now() - timedelta(seconds=20))
    assert actions.mark_active(running, "terminal") is False  # 20 s ago: inside the 30 s window
    actions.forget_activity_marks()
    assert actions.mark_active(running, "cpu") is True  # outside its 15 s window


def test_a_session_id_works_too(running, django_assert_num_queries) -> None:
    with django_assert_num_queries(2):  # the lab's signals, then the UPDATE
        assert actions.mark_active(str(running.pk), "editor") is True
    idle_again(running)
    assert actions.mark_active(running.pk, IdleSignal.PAGE) is False  # still the lab's choice
    assert actions.mark_active(uuid.uuid4(), "terminal") is False  # no such session
    with pytest.raises(ValueError, match="not a session id"):
        actions.mark_active("not-a-uuid", "terminal")


def test_the_labs_choice_is_read_from_the_lab_the_session_came_with(running) -> None:
    """Long-lived callers (a terminal's WebSocket) keep the session they loaded; a fresh load sees a change."""
    from labs.models import Lab

    Lab.objects.filter(pk=running.lab_id).update(idle_signals=["cpu"])
    assert actions.mark_active(Session.objects.select_related("lab").get(pk=running.pk), "terminal") is False
    assert actions.mark_active(running, "terminal") is True


@pytest.mark.django_db(transaction=True)
async def test_the_async_form_does_not_even_leave_the_event_loop_while_throttled(running, settings,
                                                                                monkeypatch) -> None:
    settings.LAB_ACTIVITY_WRITE_SECONDS = 30
    assert await actions.amark_active(running, "preview") is True

    def no_thread_nor_query(*args: object) -> bool:
        raise AssertionError("a throttled signal reached mark_active")

    monkeypatch.setattr(actions, "mark_active", no_thread_nor_query)
    assert await actions.amark_active(running, "preview") is False
