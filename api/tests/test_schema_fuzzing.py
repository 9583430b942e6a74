"""Schemathesis generates requests from the published schema, valid and not: no answer is a 500, and
every documented answer has the documented shape."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.tests.conftest import API


@pytest.fixture
def api_schema(db):
    """The schema, called through Django's WSGI handler in this process (and this test's transaction:
    as Django's test client does, requests must not close the database connection when they end)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi(f"{API}/openapi.json", get_wsgi_application())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def no_rate_limit(settings):
    """Hundreds of requests with one token: the rate limit has tests of its own (test_rate_limit.py)."""
    settings.LAB_API_RATE_LIMIT = None


def test_no_generated_request_gets_a_500(api_schema, owner, token_for, lab, no_rate_limit):
    """Each operation in turn (schemathesis's own pytest plugin does not run under pytest 9)."""
    token = token_for(owner)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 13  # 12 paths, /sessions with GET and POST

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        call()
