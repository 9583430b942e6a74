"""Recorded terminals (labs with record_terminal): one asciinema v2 cast per terminal of a session.

A terminal is a tab name in a session. Its shell outlives the WebSocket (tmux), so a page reload
or a network drop attaches the same shell again under the same name; its recording then goes on
in the same cast file and TerminalRecording row. Event times continue from the earlier ones
(the wall-clock time since the cast's header, never going back), a marker event says
"reconnected" and a resize event gives the new window's size. A new tab name gets a recording
of its own. A recording that stopped at its size limit stays stopped: reconnecting does not
start another.

Inside the server process, the connections of one terminal share one writer, so a reconnect
that arrives before the old connection's end is noticed (or a duplicated browser tab) never
interleaves writes to the file. Only the newest connection's output is recorded (every
connection shows the same tmux pane); when it leaves, the one before takes over. The last to
leave closes the file and marks the row ended. The player (admin replay) shortens long pauses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from consoles.models import TerminalRecording
from consoles.terminals import CastRecorder, TerminalRequest, cast_header, recording_limit
from sessions_app.models import Session

log = logging.getLogger(__name__)

RECONNECTED = "reconnected"
STOPPED_PREFIX = "recording stopped"  # CastRecorder's marker when it stops early
MAX_HEADER_BYTES = 64 * 1024
TAIL_BYTES = 256 * 1024  # enough to hold the last event of any cast


# ---- the row and the file (blocking: called through database_sync_to_async) ---------------------


@dataclass(frozen=True)
class CastTarget:
    """Where a connection's recording goes: a new cast, or an earlier one to go on with."""

    recording_id: int
    path: Path
    size: int  # bytes already in the file
    elapsed: float  # seconds since the header's timestamp at which the next event comes
    resumed: bool
    stopped: bool = False  # the cast had already stopped at its size limit: nothing more is recorded


def recording_name(session_id: str, terminal_name: str, when: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    month = time.strftime("%Y/%m", time.gmtime(when))
    return f"recordings/{month}/{session_id}-{terminal_name}-{stamp}-{int(when * 1000) % 1000:03d}.cast"


def open_recording(session: Session, request: TerminalRequest) -> CastTarget:
    """The terminal's latest recording, to go on with; a new one (row and file with its header) if
    it has none or its file cannot be continued."""
    with transaction.atomic():
        # Two connections of one session arriving together must not both create a recording.
        Session.objects.select_for_update().filter(pk=session.pk).first()
        latest = (TerminalRecording.objects.filter(session=session, terminal_name=request.name)
                  .order_by("-started_at", "-pk").first())
        if latest is not None:
            target = _continue(latest)
            if target is not None:
                if not target.stopped:
                    TerminalRecording.objects.filter(pk=latest.pk).update(ended_at=None)
                return target
        return _create(session, request)


def _create(session: Session, request: TerminalRequest) -> CastTarget:
    now = time.time()
    name = recording_name(str(session.pk), request.name, now)
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"{session.lab.slug} — {session.user.get_username()} — terminal {request.name}"
    header = cast_header(request.cols, request.rows, now, title)
    path.write_text(header, encoding="utf-8")
    recording = TerminalRecording.objects.create(
        session=session, terminal_name=request.name, file=name, width=request.cols, height=request.rows,
    )
    return CastTarget(recording.pk, path, len(header.encode()), 0.0, resumed=False)


def _continue(recording: TerminalRecording) -> CastTarget | None:
    """How to append to an earlier cast: its size and the time of its last event. A partly
    written last line (the server died mid-write) is cut off first. None if the file is gone
    or is not a cast."""
    path = Path(settings.MEDIA_ROOT) / str(recording.file.name)
    try:
        with path.open("r+b") as handle:
            header = json.loads(handle.readline(MAX_HEADER_BYTES))
            if not isinstance(header, dict) or header.get("version") != 2:
                raise ValueError("not an asciinema v2 header")
            started = float(header["timestamp"])
            body_start = handle.tell()
            size = handle.seek(0, 2)
            tail_start = max(body_start, size - TAIL_BYTES)
            handle.seek(tail_start)
            tail = handle.read()
            if tail and not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n") + 1
                tail = tail[:cut]
                size = tail_start + cut
                handle.truncate(size)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("terminal recording %s cannot be continued (%s): starting a new one", recording.pk, exc)
        return None
    last_time, last_code, last_text = 0.0, "", ""
    for line in reversed(tail.splitlines()):
        try:
            event = json.loads(line)
            last_time, last_code, last_text = float(event[0]), str(event[1]), str(event[2])
            break
        except (ValueError, TypeError, IndexError):
            continue  # the first line of the tail may be cut in the middle
    stopped = last_code == "m" and last_text.startswith(STOPPED_PREFIX)
    elapsed = max(last_time, time.time() - started)
    return CastTarget(recording.pk, path, size, elapsed, resumed=True, stopped=stopped)


def finish_recording(recording_id: int, size: int) -> None:
    TerminalRecording.objects.filter(pk=recording_id).update(ended_at=timezone.now(), size_bytes=size)


# ---- live casts: the connections of one terminal in this process --------------------------------


@dataclass(eq=False)
class _Terminal:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: int = 0  # joins and leaves under way, waiting for the lock or holding it
    recorder: CastRecorder | None = None
    recording_id: int | None = None
    feeds: list[CastFeed] = field(default_factory=list)  # oldest first; the newest is recorded


_live: dict[tuple[str, str], _Terminal] = {}


def _enter(key: tuple[str, str]) -> _Terminal:
    terminal = _live.setdefault(key, _Terminal())
    terminal.busy += 1
    return terminal


def _exit(key: tuple[str, str], terminal: _Terminal) -> None:
    terminal.busy -= 1
    if not terminal.busy and not terminal.feeds and terminal.recorder is None and _live.get(key) is terminal:
        del _live[key]


class CastFeed:
    """One connection's side of its terminal's recording (what TerminalBridge.recorder holds)."""

    def __init__(self, key: tuple[str, str], terminal: _Terminal) -> None:
        self._key = key
        self._terminal = terminal

    @property
    def recorded(self) -> bool:
        feeds = self._terminal.feeds
        return bool(feeds) and feeds[-1] is self and self._terminal.recorder is not None

    def output(self, data: bytes) -> None:
        if self.recorded:
            self._terminal.recorder.output(data)  # type: ignore[union-attr]

    def resize(self, cols: int, rows: int) -> None:
        if self.recorded:
            self._terminal.recorder.resize(cols, rows)  # type: ignore[union-attr]

    async def close(self) -> int | None:
        """Leave the recording; the last connection out closes the file and marks the row ended
        (returning the file's size)."""
        terminal = _enter(self._key)
        try:
            async with terminal.lock:
                was_recorded = self.recorded
                if self in terminal.feeds:
                    terminal.feeds.remove(self)
                recorder = terminal.recorder
                if recorder is None:
                    return None
                if terminal.feeds:
                    if was_recorded:
                        recorder.restart_decoder()  # the connection before takes over
                    return None
                terminal.recorder = None
                size = await recorder.close()
                if terminal.recording_id is not None:
                    await database_sync_to_async(finish_recording)(terminal.recording_id, size)
                return size
        finally:
            _exit(self._key, terminal)


async def join(session: Session, request: TerminalRequest) -> CastFeed | None:
    """Record this connection of a terminal: into the cast its other connections are writing, else
    into its latest recording (a reconnect), else into a new one. None when its recording
    already stopped at the size limit."""
    key = (str(session.pk), request.name)
    terminal = _enter(key)
    try:
        async with terminal.lock:
            if terminal.recorder is None:
                target = await database_sync_to_async(open_recording)(session, request)
                if target.stopped:
                    return None
                terminal.recorder = CastRecorder(target.path, written=target.size, max_bytes=recording_limit(),
                                                 elapsed=target.elapsed)
                terminal.recording_id = target.recording_id
                reconnected = target.resumed
            else:
                terminal.recorder.restart_decoder()  # the newest connection is the one recorded
                reconnected = True
            if reconnected:
                terminal.recorder.marker(RECONNECTED)
                terminal.recorder.resize(request.cols, request.rows)
            feed = CastFeed(key, terminal)
            terminal.feeds.append(feed)
            return feed
    finally:
        _exit(key, terminal)


def live_terminals() -> list[tuple[str, str]]:
    """(session id, terminal name) of the terminals being recorded in this process."""
    return list(_live)
