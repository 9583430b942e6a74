"""What the web preview tests share: a real daphne serving the platform, a real upstream app
(http.server) and a real WebSocket echo server, and a running session that points at them.

Daphne runs in a thread of the test process, once per process (Twisted's reactor cannot be
restarted), so it sees the test database and the in-memory fake runner. Tests that talk to it
need committed data: they use `transactional_db`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from runners import get_runner
from sessions_app.models import Session, State
from sessions_app.specs import spec_for

BLOCK = bytes(range(256)) * 256  # 64 KiB of a known pattern


# ---- the learner's app -------------------------------------------------------------------------


@dataclass
class UpstreamState:
    """What the upstream app saw, and switches a test flips to pace it."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    release_slow: threading.Event = field(default_factory=threading.Event)
    slow_finished: threading.Event = field(default_factory=threading.Event)
    upload_started: threading.Event = field(default_factory=threading.Event)
    hang_peer_closed: threading.Event = field(default_factory=threading.Event)


class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: UpstreamState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- helpers
    def _read_body(self, on_chunk: Any = None) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = length
                while remaining:
                    data = self.rfile.read(min(remaining, 65536))
                    digest.update(data)
                    size += len(data)
                    remaining -= len(data)
                    if on_chunk:
                        on_chunk(size)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 65536))
                if not data:
                    break
                digest.update(data)
                size += len(data)
                remaining -= len(data)
                if on_chunk:
                    on_chunk(size)
        return size, digest.hexdigest()

    def _json(self, payload: Any, status: int = 200, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- routes
    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        record = {"method": self.command, "path": self.path, "headers": self.headers.items()}
        self.state.requests.append(record)
        if url.path == "/upload":

            def started(size: int) -> None:
                if size >= 65536:
                    self.state.upload_started.set()

            size, digest = self._read_body(started)
            self._json({"size": size, "sha256": digest, "te": self.headers.get("Transfer-Encoding")})
            return
        size, digest = self._read_body()
        record["body_size"] = size
        if url.path == "/redirect":
            self.send_response(int(query.get("status", ["302"])[0]))
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path.endswith("/cookies"):
            self._json({"ok": True}, headers=[("Set-Cookie", value) for value in query["set"]])
        elif url.path == "/policies":
            self._json({"ok": True}, headers=[
                ("X-Frame-Options", "DENY"),
                ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
                ("Strict-Transport-Security", "max-age=0"),
                ("Clear-Site-Data", '"cookies"'),
                ("Service-Worker-Allowed", "/"),
            ])
        elif url.path == "/with-headers":  # answers with the headers given as ?header=Name:value
            self._json({"ok": True}, headers=[tuple(h.split(":", 1)) for h in query["header"]])  # type: ignore[misc]
        elif url.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"first chunk\n")
            self.state.release_slow.wait(15)
            self._chunk(b"the rest\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.state.slow_finished.set()
        elif url.path == "/hang":
            # Sends one chunk, then waits for whoever is reading to hang up.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"waiting\n")
            self.connection.settimeout(15)
            try:
                if self.connection.recv(1) == b"":
                    self.state.hang_peer_closed.set()
            except OSError:
                self.state.hang_peer_closed.set()
            self.close_connection = True
        elif url.path == "/big":
            total = int(query["bytes"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            sent = 0
            while sent < total:
                piece = BLOCK[: min(len(BLOCK), total - sent)]
                self.wfile.write(piece)
                sent += len(piece)
        elif url.path == "/page":
            body = b"<!doctype html><title>Learner app</title><h1>Hello from the learner's app</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        else:
            self._json({"method": self.command, "path": self.path, "headers": self.headers.items(),
                        "body_size": size, "body_sha256": digest})

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


@dataclass
class Upstream:
    server: ThreadingHTTPServer
    state: UpstreamState

    @property
    def port(self) -> int:
        return self.server.server_address[1]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = UpstreamState()
    handler = type("Handler", (UpstreamHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Upstream(server, state)
    state.release_slow.set()
    server.shutdown()
    server.server_close()


@dataclass
class WsUpstream:
    port: int
    seen: list[dict[str, Any]]


@pytest.fixture
def ws_upstream() -> Iterator[WsUpstream]:
    """A WebSocket echo app; "whoami" answers with what the handshake carried."""
    from websockets.sync.server import serve

    seen: list[dict[str, Any]] = []

    def handler(ws: Any) -> None:
        request = ws.request
        seen.append({"path": request.path, "headers": list(request.headers.raw_items())})
        for message in ws:
            if message == "whoami":
                ws.send(json.dumps({"path": request.path, "subprotocol": ws.subprotocol,
                                    "headers": list(request.headers.raw_items())}))
            elif message == "close-4321":
                ws.close(4321, "app says bye")
            else:
                ws.send(message)

    def pick(connection: Any, offered: list[str]) -> str | None:  # one of ours, or none at all
        return next((p for p in offered if p in ("chat.v2", "chat.v1")), None)

    server = serve(handler, "127.0.0.1", 0, select_subprotocol=pick, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield WsUpstream(server.socket.getsockname()[1], seen)
    server.shutdown()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the platform --------------------------------------------------------------------------------


class _Daphne:
    """The platform's server (webserver.serve: daphne with request bodies limited and streamed)
    serving labsite.asgi.application on 127.0.0.1, in a thread of this process."""

    def __init__(self) -> None:
        import daphne.server  # noqa: F401  # first: it installs Twisted's asyncio reactor

        from labsite.asgi import application
        from webserver.serve import LimitedServer

        self.server = LimitedServer(
            application=application,
            endpoints=["tcp:port=0:interface=127.0.0.1"],
            signal_handlers=False,
            verbosity=0,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daphne-under-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.listening_addresses:
            if self.error is not None or time.monotonic() > deadline:
                pytest.fail(f"daphne did not start: {self.error!r}")
            time.sleep(0.02)
        self.port = self.server.listening_addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # reported by the waiting test
            self.error = exc


_daphne: _Daphne | None = None


@pytest.fixture
def worker_connections(transactional_db: None) -> Iterator[None]:
    """Consumers reach the database from asgiref's shared worker thread; its connections are
    closed afterwards so the test database can be flushed and, at the end, dropped."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture
def daphne(worker_connections: None) -> _Daphne:
    global _daphne
    if _daphne is None:
        _daphne = _Daphne()
    return _daphne


# ---- sessions and users ------------------------------------------------------------------------------


def start_session(user: Any, lab: Any) -> Session:
    """A running session on the fake runner (whose endpoint() is 127.0.0.1:<port>)."""
    session = Session.objects.create(user=user, lab=lab, runner_name="fake", state=State.PROVISIONING)
    session = Session.objects.select_related("lab__image", "user").get(pk=session.pk)
    result = get_runner("fake").start(spec_for(session))
    now = timezone.now()
    session.transition(State.RUNNING, runner_state=result.state, endpoints=result.endpoints, started_at=now,
                       expires_at=now + timedelta(hours=1))
    return session


@pytest.fixture
def closed_port() -> int:
    return free_port()


@pytest.fixture
def preview_lab(lab: Any, upstream: Upstream, ws_upstream: WsUpstream, closed_port: int) -> Any:
    lab.exposed_ports = [upstream.port, ws_upstream.port, closed_port]
    lab.save(update_fields=["exposed_ports"])
    return lab


@pytest.fixture
def running_session(owner: Any, preview_lab: Any) -> Session:
    return start_session(owner, preview_lab)


def session_cookie(user: Any) -> str:
    """The platform's session cookie for `user`, as a browser would hold it."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def preview_url(daphne: _Daphne, session: Session, port: int, path: str = "") -> str:
    return f"{daphne.url}/sessions/{session.pk}/preview/{port}/{path}"


def headers_of(payload: dict[str, Any]) -> dict[str, list[str]]:
    """The echo app's header list as lower-cased name → values."""
    out: dict[str, list[str]] = {}
    for name, value in payload["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out
