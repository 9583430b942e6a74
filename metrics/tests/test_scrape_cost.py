"""A scrape costs the same few aggregated queries however many rows there are."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metrics.collector import PlatformCollector
from metrics.tests.conftest import make_session, scrape
from sessions_app.models import HousekeepingPass, State

pytestmark = pytest.mark.django_db

# PlatformCollector's own: live sessions, running, starts, start times, first output times, stops,
# hints, attempts, housekeeping. The view may hold other collectors; the whole scrape is checked for
# a fixed count too.
QUERIES_PER_COLLECT = 9


def collect_queries() -> int:
    with CaptureQueriesContext(connection) as queries:
        list(PlatformCollector().collect())
    return len(queries)


def test_a_scrape_runs_a_fixed_number_of_queries(rows, lab, owner, now, settings):
    settings.REDIS_URL = ""  # the queue figures are Redis, not queries
    with CaptureQueriesContext(connection) as few:
        assert scrape().status == 200
    few_collect = collect_queries()
    for minutes in range(40):
        make_session(lab, owner, State.RUNNING, runner_name="fake", created=now - timedelta(minutes=minutes),
                     started=now - timedelta(minutes=minutes, seconds=-5),
                     first_output=now - timedelta(minutes=minutes, seconds=-6))
        for kind in HousekeepingPass.Kind:
            HousekeepingPass.objects.create(kind=kind, started_at=now - timedelta(minutes=minutes),
                                            duration_seconds=0.5, orphans_removed=1)
    with CaptureQueriesContext(connection) as many:
        result = scrape()
    assert result.value("labs_sessions_running", lab="hello-shell", runner="fake") == 42
    assert result.value("labs_housekeeping_orphans_removed_15m", kind="reconcile") == 4 + 15
    assert len(few) == len(many)
    assert few_collect == collect_queries() == QUERIES_PER_COLLECT
