"""Browser terminals: a runner's TerminalStream bridged to a WebSocket, and asciinema recordings.

The consumer (`consoles/consumers.py`) speaks the wire protocol; this module does
the work that must not block the event loop or grow without bound:

- Output: the stream's file descriptor is watched with `loop.add_reader`; when it is readable we
  drain it with zero-timeout polls into frames of at most FRAME_BYTES, so a read never blocks.
- Flow control, end to end: the browser acknowledges the bytes it has rendered
  (`{"type": "ack", "bytes": n}`, n counted since its previous ack). Reading stops while more than
  HIGH_WATER bytes are unacknowledged and resumes below LOW_WATER, so a flood (`yes`) keeps at most
  HIGH_WATER + one frame in flight per terminal, and the shell itself is slowed by its PTY filling.
  Acks are the client's word, so the bridge also waits, before each read, until the server's own
  write buffer toward the client is below a bound (`client_writable`, see consumers/flow.py): a
  client that acks everything but never reads its socket cannot grow the server's memory either.
- Input: small keystroke frames are written directly when the descriptor is writable (the echo
  path must stay sub-millisecond); anything larger, or arriving while a write is pending, goes to a
  per-terminal writer task that writes in a worker thread, with a bounded queue.
- Recording: output is decoded with an incremental UTF-8 decoder (a character split across two
  reads is kept whole) into asciinema v2 events, buffered and appended to the cast file in a worker
  thread, stopping at LAB_RECORDING_MAX_BYTES. Which file, and how a reconnect goes on recording
  into the same one, is consoles/recordings.py.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import re
import select
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeGuard
from urllib.parse import parse_qs

from django.conf import settings

from runners.base import RunnerError, TerminalStream
from sessions_app.models import Session

log = logging.getLogger(__name__)

HIGH_WATER = 2 * 1024 * 1024  # stop reading the shell past this many unacknowledged bytes
LOW_WATER = 512 * 1024  # and resume once the browser has caught up to below this
FRAME_BYTES = 64 * 1024  # largest output frame
MAX_INPUT_FRAME = 64 * 1024  # larger input frames are dropped
MAX_CONTROL_FRAME = 4096  # larger JSON control frames are dropped
MAX_PENDING_INPUT = 1024 * 1024  # input queued behind a slow shell; beyond this it is dropped
DIRECT_WRITE_BYTES = 1024  # input up to this size is written on the event loop when writable
ACTIVITY_SECONDS = 10.0  # at most one activity write per terminal in this interval
# Keys typed before a new shell has printed anything wait for its first output (at most this long):
# tmux and readline flush pending input when they put the terminal in raw mode, so keys sent
# while they start would be lost. A console that stays silent until spoken to (a VM's serial
# line) gets the keys after this grace.
FIRST_OUTPUT_GRACE_SECONDS = 1.5
MAX_COLS, MAX_ROWS = 500, 200
DEFAULT_COLS, DEFAULT_ROWS = 80, 24
NAME_RE = re.compile(r"[a-z0-9-]{1,16}")
TERM = "xterm-256color"


# ---- the request and control frames -----------------------------------------------------------
@dataclass(frozen=True)
class TerminalRequest:
    name: str
    cols: int
    rows: int


def clamp_size(cols: int, rows: int) -> tuple[int, int]:
    return max(1, min(MAX_COLS, cols)), max(1, min(MAX_ROWS, rows))


def _query_int(values: list[str] | None, default: int) -> int:
    try:
        return int(values[0]) if values else default
    except ValueError:
        return default


def parse_request(query_string: bytes) -> TerminalRequest | None:
    """The tab name and first size from `?name=&cols=&rows=`; None when the name is unusable."""
    query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    name = query.get("name", ["1"])[0]
    if not NAME_RE.fullmatch(name):
        return None
    cols, rows = clamp_size(_query_int(query.get("cols"), DEFAULT_COLS), _query_int(query.get("rows"), DEFAULT_ROWS))
    return TerminalRequest(name=name, cols=cols, rows=rows)


@dataclass(frozen=True)
class Resize:
    cols: int
    rows: int


@dataclass(frozen=True)
class Ack:
    bytes: int


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class StepsChanged:
    """The page saw a step start: foreground scripts may be waiting for the first terminal."""


Control = Resize | Ack | Ping | StepsChanged


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_control(text: str) -> Control | None:
    """A client text frame as a control message, or None for anything malformed."""
    if len(text) > MAX_CONTROL_FRAME:
        return None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    if kind == "ping":
        return Ping()
    if kind == "steps":
        return StepsChanged()
    if kind == "ack":
        count = message.get("bytes")
        return Ack(count) if _is_int(count) and count >= 0 else None
    if kind == "resize":
        cols, rows = message.get("cols"), message.get("rows")
        if _is_int(cols) and _is_int(rows):
            return Resize(*clamp_size(cols, rows))
    return None


# ---- attaching ------------------------------------------------------------------------------
def attach(session: Session, request: TerminalRequest) -> tuple[TerminalStream, bool]:
    """Open the terminal (blocking: run it in a thread); also say whether an existing shell was kept
    (asked of the runner first: open_terminal joins or creates without saying which)."""
    runner, state = session.runner(), session.runner_state
    reattached = runner.terminal_exists(state, request.name)
    stream = runner.open_terminal(state, cols=request.cols, rows=request.rows, name=request.name)
    return stream, reattached


# ---- foreground scripts ---------------------------------------------------------------------
FOREGROUND_TERMINAL = "1"  # Killercoda runs foreground scripts in the first terminal
FOREGROUND_PREFIX = "/tmp/.labs-foreground."  # noqa: S108 - in the session, made by mktemp there
STAGE_FOREGROUND = f'umask 077; f=$(mktemp {FOREGROUND_PREFIX}XXXXXX) && cat > "$f" && printf %s "$f"'


def stage_foreground(session: Session, script: str) -> bytes:
    """Put a foreground script into the session as the learner's own file; return what to type into
    the terminal to run it there (blocking: run it in a thread). Sourced, as if typed: a `cd` or an
    `export` in it stays in the learner's shell; the leading space keeps it out of the history."""
    runner, state = session.runner(), session.runner_state
    staged = runner.exec(state, ["sh", "-c", STAGE_FOREGROUND], stdin=script.replace("\r\n", "\n").encode(),
                         timeout=15)
    path = staged.stdout.decode(errors="replace").strip()
    if not staged.ok or not path.startswith(FOREGROUND_PREFIX):
        raise RunnerError("cannot put the step's terminal script into the session: "
                          f"{staged.stderr.decode(errors='replace').strip()[-200:] or 'failed'}")
    return f" . {path}; rm -f {path}\r".encode()


# ---- flow control ---------------------------------------------------------------------------
class FlowControl:
    """Bytes sent to the browser versus bytes it says it has rendered."""

    def __init__(self, high: int = HIGH_WATER, low: int = LOW_WATER) -> None:
        self.high = high
        self.low = low
        self.sent = 0
        self.acked = 0

    @property
    def unacked(self) -> int:
        return self.sent - self.acked

    def record_sent(self, count: int) -> None:
        self.sent += count

    def record_ack(self, count: int) -> None:
        # An ack can never cover bytes not yet sent (a confused or hostile client).
        self.acked = min(self.sent, self.acked + count)

    @property
    def must_pause(self) -> bool:
        return self.unacked > self.high

    @property
    def may_resume(self) -> bool:
        return self.unacked < self.low


# ---- recording --------------------------------------------------------------------------------
FLUSH_BYTES = 256 * 1024  # write to disk once this much is buffered
FLUSH_SECONDS = 1.0  # or this long after the first buffered event
MAX_PENDING_RECORDING = 8 * 1024 * 1024  # a disk this slow stops the recording instead of memory growing


def cast_header(width: int, height: int, started: float, title: str = "") -> str:
    header: dict[str, Any] = {"version": 2, "width": width, "height": height, "timestamp": int(started),
                              "env": {"TERM": TERM, "SHELL": "/bin/sh"}}
    if title:
        header["title"] = title
    return json.dumps(header, ensure_ascii=False) + "\n"


class OutputRecorder(Protocol):
    """What the bridge records a terminal's output through (a CastRecorder, or a connection's
    share of one: consoles.recordings.CastFeed)."""

    def output(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    async def close(self) -> int | None: ...


class CastRecorder:
    """Appends asciinema v2 events to a cast file whose header is already written.

    Events are built on the event loop (cheap) and written by one worker thread at a time, so a
    slow disk never stalls the terminal; the buffer and the file are both bounded. A recorder
    going on with an earlier cast starts its clock at `elapsed` (seconds since the header's
    timestamp); event times never go backwards.
    """

    def __init__(self, path: Path, *, written: int, max_bytes: int, elapsed: float = 0.0) -> None:
        self.path = path
        self.written = written  # bytes already in the file (the header, and any earlier events)
        self.max_bytes = max_bytes
        self.stopped = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = time.monotonic() - elapsed
        self._last = elapsed
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._file: IO[str] | None = None
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def output(self, data: bytes) -> None:
        if not self.stopped:
            text = self._decoder.decode(data)
            if text:
                self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        if not self.stopped:
            self._event("r", f"{cols}x{rows}")

    def marker(self, label: str) -> None:
        if not self.stopped:
            self._event("m", label)

    def restart_decoder(self) -> None:
        """Output now comes from another connection: end the last one's text (a character it left
        cut off shows as one replacement character) and decode the next from a clean state."""
        tail = self._decoder.decode(b"", final=True)
        if tail and not self.stopped:
            self._event("o", tail)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _now(self) -> float:
        self._last = max(self._last, round(time.monotonic() - self._started, 6))
        return self._last

    def _event(self, code: str, text: str) -> None:
        line = json.dumps([self._now(), code, text], ensure_ascii=False) + "\n"
        size = len(line.encode())
        if self.written + self._pending_bytes + size > self.max_bytes:
            self._stop("recording stopped: size limit reached")
            return
        if self._pending_bytes + size > MAX_PENDING_RECORDING:
            log.warning("terminal recording %s stopped: the disk cannot keep up", self.path)
            self._stop("recording stopped: the disk could not keep up")
            return
        self._pending.append(line)
        self._pending_bytes += size
        if self._pending_bytes >= FLUSH_BYTES:
            self._wake.set()

    def _stop(self, why: str) -> None:
        self.stopped = True
        # A marker event: players show it, and staff see why the replay ends early. Always small,
        # so it is allowed past the limit by its own few bytes.
        line = json.dumps([self._now(), "m", why]) + "\n"
        self._pending.append(line)
        self._pending_bytes += len(line.encode())
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=FLUSH_SECONDS)
            self._wake.clear()
            if self._pending:
                chunk, size = "".join(self._pending), self._pending_bytes
                self._pending, self._pending_bytes = [], 0
                try:
                    await asyncio.to_thread(self._append, chunk)
                except OSError as exc:
                    log.warning("terminal recording %s stopped: %s", self.path, exc)
                    self.stopped = True
                    self._pending, self._pending_bytes = [], 0
                else:
                    self.written += size
            if self._closing and not self._pending:
                return

    def _append(self, chunk: str) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(chunk)
        self._file.flush()

    async def close(self) -> int:
        """Write what is left (including a character cut off at the end); return the file's size."""
        if not self.stopped:
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._event("o", tail)
        self._closing = True
        self._wake.set()
        try:
            await asyncio.shield(self._writer)
        finally:
            if self._file is not None:
                await asyncio.to_thread(self._file.close)
        return self.written


# ---- the bridge -------------------------------------------------------------------------------
class TerminalBridge:
    """Moves bytes between one TerminalStream and one WebSocket, on the event loop."""

    def __init__(
        self,
        stream: TerminalStream,
        *,
        send_output: Callable[[bytes], Awaitable[None]],
        on_exit: Callable[[], Awaitable[None]],
        recorder: OutputRecorder | None = None,
        flow: FlowControl | None = None,
        client_writable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.stream = stream
        self.flow = flow or FlowControl()
        self._client_writable = client_writable
        self.recorder = recorder
        self._send_output = send_output
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._fd = stream.fileno()
        # Zero-timeout readiness checks; poll, not select, since a busy server passes fd 1024.
        self._can_read = select.poll()
        self._can_read.register(self._fd, select.POLLIN)
        self._can_write = select.poll()
        self._can_write.register(self._fd, select.POLLOUT)
        self._readable: asyncio.Future[None] | None = None
        self._resumed = asyncio.Event()
        self._shell_spoke = asyncio.Event()
        self._input: deque[bytes] = deque()
        self._input_bytes = 0
        self._writer: asyncio.Task[None] | None = None
        self._size: tuple[int, int] | None = None
        self._resizer: asyncio.Task[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closing = False
        self.closed = False

    def start(self) -> None:
        self._pump = self._loop.create_task(self._run_pump())

    # output -------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        self._loop.remove_reader(self._fd)
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    async def _wait_readable(self) -> None:
        self._readable = self._loop.create_future()
        self._loop.add_reader(self._fd, self._on_readable)
        try:
            await self._readable
        finally:
            self._loop.remove_reader(self._fd)
            self._readable = None

    def _drain(self) -> tuple[bytes, bool]:
        """Read what is available now, up to one frame; never waits. Returns (data, ended)."""
        chunks: list[bytes] = []
        total = 0
        while total < FRAME_BYTES and self._can_read.poll(0):
            try:
                data = self.stream.read(FRAME_BYTES - total)
            except (RunnerError, OSError) as exc:
                log.info("terminal read failed: %s", exc)
                data = b""
            if not data:
                return b"".join(chunks), True
            chunks.append(data)
            total += len(data)
        return b"".join(chunks), False

    async def _run_pump(self) -> None:
        ended = False
        try:
            while not ended:
                if self._client_writable is not None:
                    # The client's socket is backed up: leave the output in the PTY (which then
                    # slows the shell) instead of in the server's write buffer.
                    await self._client_writable()
                await self._wait_readable()
                data, ended = self._drain()
                if data:
                    self._shell_spoke.set()
                    self.flow.record_sent(len(data))
                    if self.recorder is not None:
                        self.recorder.output(data)
                    await self._send_output(data)
                if self.flow.must_pause:
                    self._resumed.clear()
                    await self._resumed.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("terminal output pump failed")
        if not self.closed:
            await self._on_exit()

    def ack(self, count: int) -> None:
        self.flow.record_ack(count)
        if self.flow.may_resume:
            self._resumed.set()

    # input --------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send keystrokes to the shell without ever blocking the event loop."""
        if self.closed or not data:
            return
        shell_ready = self._shell_spoke.is_set()
        if not shell_ready or self._input or len(data) > DIRECT_WRITE_BYTES or not self._can_write.poll(0):
            if self._input_bytes + len(data) > MAX_PENDING_INPUT:
                log.info("terminal input dropped: %d bytes already waiting for the shell", self._input_bytes)
                return
            self._input.append(data)
            self._input_bytes += len(data)
            if self._writer is None or self._writer.done():
                self._writer = self._loop.create_task(self._write_queued())
            return
        try:
            self.stream.write(data)
        except (RunnerError, OSError) as exc:
            log.info("terminal write failed: %s", exc)  # the shell is gone; the pump reports the end

    async def _write_queued(self) -> None:
        if not self._shell_spoke.is_set():
            try:
                await asyncio.wait_for(self._shell_spoke.wait(), FIRST_OUTPUT_GRACE_SECONDS)
            except TimeoutError:
                self._shell_spoke.set()  # a silent console: stop holding keys back from now on
        while self._input and not self.closed:
            chunk = b"".join(self._input)
            self._input.clear()
            self._input_bytes = 0
            try:
                await asyncio.to_thread(self.stream.write, chunk)
            except (RunnerError, OSError) as exc:
                log.info("terminal write failed: %s", exc)
                self._input.clear()
                self._input_bytes = 0
                return

    def resize(self, cols: int, rows: int) -> None:
        """Resize in a thread (Docker resizes through the engine's API); only the latest size counts."""
        if self.closed:
            return
        if self.recorder is not None:
            self.recorder.resize(cols, rows)
        self._size = (cols, rows)
        if self._resizer is None or self._resizer.done():
            self._resizer = self._loop.create_task(self._apply_sizes())

    async def _apply_sizes(self) -> None:
        while self._size is not None and not self.closed:
            cols, rows = self._size
            self._size = None
            try:
                await asyncio.to_thread(self.stream.resize, cols, rows)
            except (RunnerError, OSError) as exc:
                log.info("terminal resize failed: %s", exc)

    # closing ------------------------------------------------------------------------------------
    async def close(self) -> int | None:
        """Stop everything and close the stream; returns the recording's size, if recording."""
        if self.closed or self._closing:
            return None
        self._closing = True
        if self._writer is not None and not self._writer.done() and self._input:
            # Keys typed just before the tab closed (perhaps held for the shell's first output)
            # still reach the shell: a tmux session lives on after the tab.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), FIRST_OUTPUT_GRACE_SECONDS + 2)
        self.closed = True
        tasks = [t for t in (self._pump, self._writer, self._resizer) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)
        # Shielded: a client that vanishes mid-close must not leave the shell or socket open.
        await asyncio.shield(asyncio.to_thread(close_quietly, self.stream))
        if self.recorder is not None:
            return await self.recorder.close()
        return None


def close_quietly(stream: TerminalStream) -> None:
    try:
        stream.close()
    except Exception:
        log.exception("closing a terminal failed")


def activity_due(last: float, now: float) -> bool:
    return now - last >= ACTIVITY_SECONDS


def recording_limit() -> int:
    return int(settings.LAB_RECORDING_MAX_BYTES)
