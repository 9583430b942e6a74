"""Open live streams cost no database connection and no thread each: many streams of the session
page against the real server (daphne, labsite.asgi) on PostgreSQL, counted in pg_stat_activity and
in the server's threads; and a change made in another process (here, the test's) still reaches
every one of them at once, through the Redis channel layer, not through the slow re-read."""

from __future__ import annotations

import os
import time

import pytest
import redis
from django.db import connection

from sessions_app import live
from sessions_app.models import Session, State
from sessions_app.tests.sse_client import SseStream
from tests.e2e.live_server import (  # noqa: F401  # the server's fixtures (extra_server_env: below)
    asgi_live_server,
    collected_static,
    extra_lab_runners,
)

pytestmark = pytest.mark.slow

STREAMS = 30
RECHECK_SECONDS = 120  # longer than the test waits: only a push notice can deliver in time


@pytest.fixture
def extra_server_env() -> dict[str, str]:
    return {"LAB_STREAM_RECHECK_SECONDS": str(RECHECK_SECONDS)}


def _connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _settle(measure, seconds: float = 1.0) -> int:
    """The figure once it has stopped moving (connections close a moment after their last query)."""
    time.sleep(seconds)
    return measure()


def test_open_streams_hold_no_connection_and_no_thread_each(asgi_live_server, client, owner, lab) -> None:  # noqa: F811
    if connection.vendor != "postgresql":
        pytest.fail("this test counts PostgreSQL's connections: run it with DATABASE_URL=postgres://…")
    session = Session.objects.create(user=owner, lab=lab, state=State.PROVISIONING, runner_name="fake")
    session.log("Queued.")
    client.force_login(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    port = asgi_live_server.port
    pid = asgi_live_server.process.pid
    path = f"/sessions/{session.pk}/stream/"

    # One stream first, so what every process starts once (pools, the channel layer) is there.
    warm = SseStream(port, path, cookie)
    assert warm.status == 200 and warm.headers["content-type"].startswith("text/event-stream")
    warm.events_until("state")
    warm.close()
    connections_before = _settle(_connections)
    threads_before = _threads(pid)

    streams = [SseStream(port, path, cookie) for _ in range(STREAMS)]
    try:
        for stream in streams:
            assert stream.status == 200
            first = stream.events_until("state")
            assert [e.json()["message"] for e in first if e.kind == "progress"] == ["Queued."]
            assert first[-1].json()["state"] == "provisioning"
        connections_open = _settle(_connections)
        threads_open = _threads(pid)
        print(f"\n{STREAMS} open streams: PostgreSQL connections {connections_before} -> {connections_open}, "
              f"server threads {threads_before} -> {threads_open}")
        assert connections_open - connections_before <= 1, "open streams hold database connections"
        # The worker threads of the shared pools may grow to their bound (a handful), never one per stream.
        assert threads_open - threads_before <= 8, "open streams hold threads"

        # A change in another process reaches every stream at once (the re-read is minutes away).
        started = time.monotonic()
        Session.objects.get(pk=session.pk).log("Pulling image labs/tiny:test")
        for stream in streams:
            line = stream.next_event(timeout=5)
            assert line.kind == "progress" and line.json()["message"] == "Pulling image labs/tiny:test"
        fresh = Session.objects.get(pk=session.pk)
        fresh.transition(State.RUNNING)
        for stream in streams:
            assert stream.next_event(timeout=5).json()["state"] == "running"
        print(f"a log line and a state change reached {STREAMS} streams in {time.monotonic() - started:.2f} s")
        assert time.monotonic() - started < 10
        assert _settle(_connections) - connections_before <= 1
    finally:
        for stream in streams:
            stream.close()

    # Closed pages leave nothing subscribed: each stream left its session's group as it ended.
    group = f"asgi:group:{live.group_name(session.pk)}"
    members = redis.Redis.from_url(os.environ["REDIS_URL"])
    deadline = time.monotonic() + 10
    while members.zcard(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert members.zcard(group) == 0
