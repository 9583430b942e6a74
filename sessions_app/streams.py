"""The session page's live streams (Server-Sent Events): its progress log and state as they change
and, for staff, what the environment prints.

GET /sessions/<id>/stream/ (the learner and staff, as the session page; 404 for anyone else):
    event: state     {"state", "html"}: the status region ("status" partial) to swap in; sent first,
                     then on every change of state
    event: progress  id: the SessionEvent's pk; {"id", "level", "message", "time", "datetime"}
    event: end       the session has ended (or is gone): the page closes the stream
    ": heartbeat"    a comment line after LAB_STREAM_HEARTBEAT_SECONDS without anything else, so
                     proxies keep an idle stream open
    Resuming: with Last-Event-ID (the browser's reconnect) or ?after=<pk> (the newest line the
    page shows), only later lines come; without either, the newest STATUS_EVENTS.

GET /sessions/<id>/output/stream/ (staff only; 404 for anyone else): Runner.output, asked every
LAB_OUTPUT_POLL_SECONDS (a short call in a small pool of threads of its own: staff are few)
    event: output        {"text"}: what the environment printed since the last one (the newest
                         output first; a reconnected stream starts there again)
    event: runner-error  {"message", "permanent"}: the runner cannot say (permanent: the stream
                         ends; otherwise it asks again later). Not "error", which EventSource
                         already uses for a lost connection.
    event: end           the session has ended

An open stream holds neither a database connection nor a thread: the views are async, each read is
a short call in a worker thread that closes its connection before returning, and between reads a
stream waits on a push notice (sessions_app/live.py, published by Session.log and
Session.transition) or on a timer: LAB_STREAM_RECHECK_SECONDS, in case a notice was lost. Django
gives every ASGI request a thread of its own for thread-sensitive work, held until the response
ends; labsite/asgi.py serves these URLs with one shared thread instead (webserver/long_lived.py).
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, TypeVar
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connections
from django.http import Http404, HttpRequest, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.loader import render_to_string
from django.utils import dateformat, timezone
from django.views.decorators.http import require_GET

from runners.base import RunnerError
from sessions_app import live
from sessions_app.access import get_session_for_user
from sessions_app.models import Session, SessionEvent
from sessions_app.views import STATUS_EVENTS, status_context

T = TypeVar("T")

# How long the browser waits before reconnecting a dropped stream (the SSE "retry:" field).
RECONNECT_MS = 2000
# Lines read at once; more are read straight after.
READ_BATCH = 200
# Bytes of output sent in one event.
OUTPUT_CHUNK = 65536
# Runner calls for staff's output streams: a hung engine ties up these, never the streams' reads.
_output_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="labs-output")


def _closing(func: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(func)
    def run(*args: Any) -> T:
        try:
            return func(*args)
        finally:
            connections.close_all()  # this thread serves other streams next: it keeps no connection

    return run


async def _read(func: Callable[..., T], *args: Any) -> T:
    """Run a short blocking read in a worker thread of the shared pool, its connection closed after."""
    return await sync_to_async(_closing(func), thread_sensitive=False)(*args)


def _event(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"  # JSON keeps to one line


HEARTBEAT = ": heartbeat\n\n"


def _event_stream(events: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def _resume_point(request: HttpRequest) -> int | None:
    """The newest line the page has: Last-Event-ID (a reconnect) wins over ?after=. ValueError if bad."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError(raw)
    return int(raw)


def _visible_session(user: Any, pk: UUID) -> Session:
    return get_session_for_user(user, pk)  # Http404 for anyone but the learner and staff


async def _release_request_connection() -> None:
    """Loading the session cookie and the user opened a connection in the request's own
    (thread-sensitive) thread, which nothing uses again until the stream ends: close it now."""
    await sync_to_async(connections.close_all)()


# ---- the progress log and state ----------------------------------------------------------------


@dataclass
class _Snapshot:
    state: str | None  # None: the session is gone
    ended: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False  # a full batch: read again at once
    html: str | None = None  # the status region, when the state is not the one the page has


def _line(event: SessionEvent) -> dict[str, Any]:
    local = timezone.localtime(event.created_at)
    return {"id": event.pk, "level": event.level, "message": event.message,
            "time": dateformat.time_format(local, "H:i:s"),
            "datetime": event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _snapshot(request: HttpRequest, session_id: UUID, after: int | None, known_state: str | None,
              rerender: bool = False) -> _Snapshot:
    """What changed since `after` and `known_state`. `rerender`: render the status region even in
    the same state (a notice may be about something else it shows, such as a watchdog notice); the
    stream sends it only if it differs from what the page has."""
    session = Session.objects.select_related("lab", "lab__image", "user").filter(pk=session_id).first()
    if session is None:
        return _Snapshot(state=None, ended=True)
    lines = SessionEvent.objects.filter(session_id=session_id)
    if after is None:
        events = list(lines.order_by("-pk")[:STATUS_EVENTS])[::-1]
        more = False
    else:
        events = list(lines.filter(pk__gt=after).order_by("pk")[:READ_BATCH])
        more = len(events) == READ_BATCH
    snapshot = _Snapshot(state=session.state, ended=session.is_ended, events=[_line(e) for e in events], more=more)
    if (session.state != known_state or rerender) and not more:
        snapshot.html = render_to_string("sessions_app/detail.html#status", status_context(session),
                                         request=request).strip()
    return snapshot


async def _session_events(request: HttpRequest, session_id: UUID, after: int | None) -> AsyncIterator[str]:
    heartbeat = float(settings.LAB_STREAM_HEARTBEAT_SECONDS)
    recheck = float(settings.LAB_STREAM_RECHECK_SECONDS)
    yield f"retry: {RECONNECT_MS}\n\n"
    known_state: str | None = None
    sent_html: str | None = None
    noticed = False  # a notice asked for the status region anew
    last_write = time.monotonic()
    async with live.listen(session_id) as listener:  # before the first read: no change goes unheard
        while True:
            snapshot = await _read(_snapshot, request, session_id, after, known_state, noticed)
            noticed = False
            for line in snapshot.events:
                yield _event("progress", line, event_id=line["id"])
                after = line["id"]
            if after is None:
                after = 0  # no lines yet: every later one is new
            if snapshot.html is not None and (snapshot.state != known_state or snapshot.html != sent_html):
                known_state, sent_html = snapshot.state, snapshot.html
                yield _event("state", {"state": snapshot.state, "html": snapshot.html})
            else:
                snapshot.html = None
            if snapshot.ended and not snapshot.more:
                yield _event("end", {"state": snapshot.state})
                return
            if snapshot.events or snapshot.html is not None:
                last_write = time.monotonic()
            if snapshot.more:
                continue
            next_read = time.monotonic() + recheck
            while True:
                now = time.monotonic()
                if await listener.wait(max(0.0, min(next_read, last_write + heartbeat) - now)):
                    noticed = listener.take_status_asked()
                    break  # a notice: read what changed
                now = time.monotonic()
                if now >= next_read:
                    break
                if now >= last_write + heartbeat:
                    yield HEARTBEAT
                    last_write = now


@login_required
@require_GET
async def session_stream(request: HttpRequest, pk: UUID) -> HttpResponseBase:
    """The session's progress log and state, live (see the module's docstring)."""
    user = await request.auser()
    request.user = user  # the status region is rendered in worker threads: no second look-up there
    try:
        after = _resume_point(request)
    except ValueError:
        return HttpResponseBadRequest("Last-Event-ID and ?after= must be the number of a progress line.")
    session = await _read(_visible_session, user, pk)
    await _release_request_connection()
    return _event_stream(_session_events(request, session.pk, after))


# ---- staff: the environment's output ------------------------------------------------------------


@dataclass
class _Output:
    data: bytes
    cursor: float | None
    ended: bool


def _output_once(session_id: UUID, cursor: float | None) -> _Output:
    session = Session.objects.select_related("lab").filter(pk=session_id).first()
    if session is None or session.is_ended:
        return _Output(b"", cursor, ended=True)
    if not session.runner_state:
        return _Output(b"", cursor, ended=False)  # still starting: nothing to read yet
    data, cursor = session.runner().output(session.runner_state, since=cursor, max_bytes=OUTPUT_CHUNK)
    return _Output(data, cursor, ended=False)


async def _output_events(session_id: UUID) -> AsyncIterator[str]:
    poll = float(settings.LAB_OUTPUT_POLL_SECONDS)
    heartbeat = float(settings.LAB_STREAM_HEARTBEAT_SECONDS)
    yield f"retry: {RECONNECT_MS}\n\n"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two reads
    cursor: float | None = None
    last_write = time.monotonic()
    failing = False
    while True:
        try:
            read = await sync_to_async(_closing(_output_once), thread_sensitive=False,
                                       executor=_output_threads)(session_id, cursor)
        except RunnerError as exc:
            if exc.permanent or not failing:
                yield _event("runner-error", {"message": str(exc), "permanent": exc.permanent})
                last_write = time.monotonic()
            if exc.permanent:
                return
            failing = True
        else:
            failing = False
            cursor = read.cursor
            text = decoder.decode(read.data)
            if text:
                yield _event("output", {"text": text})
                last_write = time.monotonic()
            if read.ended:
                yield _event("end", {})
                return
            if len(read.data) >= OUTPUT_CHUNK:
                continue  # more is waiting
        if time.monotonic() - last_write >= heartbeat:
            yield HEARTBEAT
            last_write = time.monotonic()
        await asyncio.sleep(poll)


@login_required
@require_GET
async def output_stream(request: HttpRequest, pk: UUID) -> HttpResponseBase:
    """Staff follow what the session's environment prints (see the module's docstring)."""
    user = await request.auser()
    if not user.is_staff:
        raise Http404("No such session")
    session = await _read(_visible_session, user, pk)
    await _release_request_connection()
    return _event_stream(_output_events(session.pk))
