"""A scrape costs the same few aggregated queries however many rows there are."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from metrics.tests.conftest import make_session, scrape
from sessions_app.models import State

pytestmark = pytest.mark.django_db

QUERIES_PER_SCRAPE = 7  # live sessions, running, starts, start times, stops, hints, attempts


def test_a_scrape_runs_a_fixed_number_of_queries(rows, lab, owner, now, settings):
    settings.REDIS_URL = ""  # the queue figures are Redis, not queries
    with CaptureQueriesContext(connection) as few:
        assert scrape().status == 200
    for minutes in range(40):
        make_session(lab, owner, State.RUNNING, runner_name="fake", created=now - timedelta(minutes=minutes),
                     started=now - timedelta(minutes=minutes, seconds=-5))
    with CaptureQueriesContext(connection) as many:
        result = scrape()
    assert result.value("labs_sessions_running", lab="hello-shell", runner="fake") == 42
    assert len(few) == len(many) == QUERIES_PER_SCRAPE
