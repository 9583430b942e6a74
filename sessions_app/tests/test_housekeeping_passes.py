"""Each finished reaper or reconciler pass leaves a HousekeepingPass row (read by /metrics), and the
table keeps only the last day: every pass prunes its own kind's older rows, never its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from sessions_app.models import HousekeepingPass

pytestmark = pytest.mark.django_db

REAP, RECONCILE = HousekeepingPass.Kind.REAP, HousekeepingPass.Kind.RECONCILE


def test_a_pass_prunes_its_kinds_rows_older_than_a_day():
    now = timezone.now()
    keep = HousekeepingPass.KEEP_HOURS
    old_reap = HousekeepingPass.objects.create(kind=REAP, started_at=now - timedelta(hours=keep, minutes=1),
                                               duration_seconds=1.0)
    recent_reap = HousekeepingPass.objects.create(kind=REAP, started_at=now - timedelta(hours=keep - 1),
                                                  duration_seconds=1.0)
    old_reconcile = HousekeepingPass.objects.create(kind=RECONCILE, started_at=now - timedelta(hours=keep + 5),
                                                    duration_seconds=1.0)
    new = HousekeepingPass.record(REAP, now, 0.5, sessions_handled=2)
    left = set(HousekeepingPass.objects.values_list("pk", flat=True))
    assert left == {recent_reap.pk, old_reconcile.pk, new.pk}  # the reconciler prunes its own rows
    assert old_reap.pk not in left
    assert (new.kind, new.duration_seconds, new.sessions_handled, new.orphans_removed) == (REAP, 0.5, 2, 0)


def test_the_latest_pass_is_kept_even_after_a_long_pause():
    """A loop back after days away still leaves its new row (pruning never takes the row just written)."""
    long_ago = timezone.now() - timedelta(days=3)
    HousekeepingPass.record(RECONCILE, long_ago, 2.0, orphans_removed=1)
    row = HousekeepingPass.record(RECONCILE, timezone.now(), 1.0)
    assert list(HousekeepingPass.objects.values_list("pk", flat=True)) == [row.pk]


def test_the_reap_command_records_a_pass_per_run(lab):
    call_command("reap_sessions")
    call_command("reap_sessions")
    rows = list(HousekeepingPass.objects.filter(kind=REAP))
    assert len(rows) == 2
    assert all(row.duration_seconds >= 0 and row.orphans_removed == 0 for row in rows)
