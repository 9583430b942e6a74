"""Reaper and reconciler figures, from their HousekeepingPass rows: the last pass's duration and
age, and the orphans removed and sessions handled in the window, by kind; from rows at known times,
and after real passes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from metrics.tests.conftest import scrape
from runners import fake, get_runner, reset_cache
from runners.base import SessionSpec
from sessions_app import actions
from sessions_app.models import HousekeepingPass, Session, State
from sessions_app.reaping import reap
from sessions_app.reconcile import reconcile

pytestmark = pytest.mark.django_db

FAKES = ("fake", "fake-slow", "fake-failing")


def test_the_last_pass_and_the_windows_sums_by_kind(passes, now):
    result = scrape()
    assert result.series("labs_housekeeping_last_pass_seconds") == {
        frozenset({("kind", "reap")}): 0.125, frozenset({("kind", "reconcile")}): 2.0}
    since = result.series("labs_housekeeping_since_last_pass_seconds")
    # the reaper's last pass started 30 s before `now` and took 0.125 s; the scrape came a moment later
    assert 29.875 <= since[frozenset({("kind", "reap")})] < 29.875 + 30
    assert 598 <= since[frozenset({("kind", "reconcile")})] < 598 + 30
    # the passes 20 and 25 minutes ago are outside the window
    assert result.series("labs_housekeeping_orphans_removed_15m") == {
        frozenset({("kind", "reap")}): 0, frozenset({("kind", "reconcile")}): 4}
    assert result.series("labs_housekeeping_sessions_handled_15m") == {
        frozenset({("kind", "reap")}): 4, frozenset({("kind", "reconcile")}): 1}


def test_a_last_pass_before_the_window_counts_zero_in_it(now):
    HousekeepingPass.objects.create(kind=HousekeepingPass.Kind.RECONCILE, started_at=now - timedelta(hours=1),
                                    duration_seconds=1.5, orphans_removed=3)
    result = scrape()
    assert result.value("labs_housekeeping_last_pass_seconds", kind="reconcile") == 1.5
    assert result.value("labs_housekeeping_orphans_removed_15m", kind="reconcile") == 0
    assert result.value("labs_housekeeping_since_last_pass_seconds", kind="reconcile") >= 3600 - 1.5


def test_a_kind_that_never_ran_has_no_series(db):
    result = scrape()
    assert result.status == 200
    for name in ("labs_housekeeping_last_pass_seconds", "labs_housekeeping_since_last_pass_seconds",
                 "labs_housekeeping_orphans_removed_15m", "labs_housekeeping_sessions_handled_15m"):
        assert result.series(name) == {}


@pytest.fixture
def only_fake_runners(settings):
    """The reconciler visits only the in-memory runners here (test_reconcile isolates the real ones)."""
    settings.LAB_RUNNERS = {alias: config for alias, config in settings.LAB_RUNNERS.items() if alias in FAKES}
    reset_cache()


def test_real_reaper_and_reconciler_passes_show_in_the_figures(only_fake_runners, owner, other_learner, lab,
                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        expired = actions.start_session(owner, lab)
        kept = actions.start_session(other_learner, lab)
    Session.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for _ in range(2):  # environments no session owns
        get_runner("fake").start(SessionSpec(session_id=str(uuid.uuid4()), user_id=owner.pk, username="x",
                                             lab_slug="x", image="x"))
    assert len(fake.ENVIRONMENTS) == 4

    with django_capture_on_commit_callbacks(execute=True):
        reaped = reap()
    reconciled = reconcile()
    assert (reaped.expired, reconciled.orphans_removed) == (1, 2)
    assert Session.objects.get(pk=kept.pk).state == State.RUNNING

    result = scrape()
    reap_row = HousekeepingPass.objects.get(kind=HousekeepingPass.Kind.REAP)
    reconcile_row = HousekeepingPass.objects.get(kind=HousekeepingPass.Kind.RECONCILE)
    assert result.value("labs_housekeeping_last_pass_seconds", kind="reap") == pytest.approx(
        reap_row.duration_seconds)
    assert result.value("labs_housekeeping_last_pass_seconds", kind="reconcile") == pytest.approx(
        reconcile_row.duration_seconds)
    assert 0 <= result.value("labs_housekeeping_since_last_pass_seconds", kind="reconcile") < 60
    assert result.value("labs_housekeeping_orphans_removed_15m", kind="reconcile") == 2
    assert result.value("labs_housekeeping_orphans_removed_15m", kind="reap") == 0
    assert result.value("labs_housekeeping_sessions_handled_15m", kind="reap") == 1
    assert result.value("labs_housekeeping_sessions_handled_15m", kind="reconcile") == 0
