"""Fixtures for the watchdog's tests: a running session on the in-memory runner, the watchdog itself
with the test's thresholds, and a real HTTP receiver for the webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runners import fake, get_runner
from sessions_app.models import Session, State
from sessions_app.specs import spec_for
from watchdog.rules import thresholds
from watchdog.watching import Watchdog


@pytest.fixture
def running_session(owner, lab) -> Session:
    """A running session of `lab` (fake runner, 100 MB disk, 128 MB memory)."""
    lab.disk_mb = 100
    lab.memory_mb = 128
    lab.save()
    session = Session.objects.create(user=owner, lab=lab, state=State.REQUESTED, runner_name="fake")
    result = get_runner("fake").start(spec_for(session))
    Session.objects.filter(pk=session.pk).update(state=State.RUNNING, runner_state=result.state)
    session.refresh_from_db()
    return session


def use_disk(session: Session, megabytes: int) -> None:
    fake.ENVIRONMENTS[session.runner_state["env_id"]]["disk_used"] = megabytes << 20


@pytest.fixture
def make_watchdog(settings) -> Callable[..., Watchdog]:
    """A watchdog with the defaults, overridden per kind as LAB_WATCHDOG_THRESHOLDS would."""

    def _make(**overrides: dict[str, Any]) -> Watchdog:
        settings.LAB_WATCHDOG_THRESHOLDS = overrides
        return Watchdog(thresholds(settings.LAB_WATCHDOG_THRESHOLDS))

    return _make


@dataclass
class Received:
    path: str
    content_type: str
    body: Any


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on a loopback port that keeps every POST it gets (parsed as JSON) and
    answers `status` after `delay` seconds."""
    state = Receiver(url="")
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            state.received.append(Received(self.path, self.headers.get("Content-Type", ""), body))
            state.arrived.set()
            if state.delay:
                release.wait(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads what arrived; stderr stays quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="webhook receiver", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)
