"""QEMU's machine protocol (QMP) for our synchronous callers, spoken by QEMU's own `qemu.qmp`.

    with QMPClient.connect("/run/vm/qmp.sock", timeout=5) as qmp:
        qmp.execute("query-status")                # {"status": "running", "running": true, ...}
        qmp.execute("getfd", {"fdname": "state"}, fds=[fd])
        qmp.wait_event("SHUTDOWN", timeout=10)

The protocol (greeting, qmp_capabilities, command ids, routing replies and events) is
`qemu.qmp.QMPClient`'s. This module only makes it synchronous and keeps our error classes: each
QMPClient runs the asyncio client on a private event loop of its own, only inside our calls (on the
caller's thread, or a helper thread where the caller's own loop is running), and closes that loop in
close(). Events are kept, in order, until `wait_event` or
`take_events` reads them. Every failure leaves as QMPError (QMPCommandError for QEMU's own error
answer, QMPTimeout for no answer in time), never as one of qemu.qmp's or asyncio's exceptions.

Blocking and single-threaded: one conversation at a time per connection, and QEMU serves one client
per QMP socket, so callers serialise their use of a socket. After a timeout the connection may still
receive the late answer, so it is closed and any further use raises.

What stays ours, measured against qemu.qmp 0.0.6:
- `connect_unix`: qemu.qmp connects by path with asyncio, which refuses a path longer than a unix
  address holds ("AF_UNIX path too long"), and our session directories can be that deep. So we
  connect the socket (through /proc/self/fd for long paths, with a timeout) and hand it to
  qemu.qmp, which takes a connected socket as its address. The VNC bridge uses it too.
- not the legacy wrapper `qemu.qmp.legacy.QEMUMonitorProtocol`: its connect() has no timeout and
  blocked with no end when QEMU did not greet (a second client while the first holds the socket),
  and it installs an event loop on the calling thread that nothing ever closes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from qemu.qmp import ExecInterruptedError, ExecuteError, Runstate, StateError
from qemu.qmp import QMPClient as _AsyncQMPClient
from qemu.qmp import QMPError as _LibraryError

_T = TypeVar("_T")
CLOSE_TIMEOUT = 2.0  # hanging up only flushes what is already written; QEMU reads it at once


class _DebugOnly(logging.LoggerAdapter):  # type: ignore[type-arg]
    """qemu.qmp logs every failure it raises at ERROR (a connect that timed out, a peer that hung
    up). We raise each as QMPError and our callers decide what it means, so its messages go to
    runners.qmp at DEBUG: there when asked for, never an alarm of their own."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)


_library_log = _DebugOnly(logging.getLogger(__name__), {})


def connect_unix(path: str, timeout: float) -> socket.socket:
    """Connect to a unix socket, even one whose path is longer than an address can hold (about
    107 bytes): that one is reached through a descriptor of its folder (/proc/self/fd/N/name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    folder_fd = None
    try:
        target = path
        if len(os.fsencode(path)) > 100:
            folder_fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
            target = f"/proc/self/fd/{folder_fd}/{os.path.basename(path)}"
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    finally:
        if folder_fd is not None:
            os.close(folder_fd)
    return sock


class QMPError(Exception):
    """The conversation failed: cannot connect, the peer hung up, or it broke the protocol."""


class QMPTimeout(QMPError):
    """No answer in time; the connection is closed."""


class QMPCommandError(QMPError):
    """QEMU answered a command with an error (`error_class` is e.g. "CommandNotFound")."""

    def __init__(self, command: str, error_class: str, description: str) -> None:
        super().__init__(f"{command}: {description} ({error_class})")
        self.command = command
        self.error_class = error_class
        self.description = description


class QMPClient:
    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.greeting: dict[str, Any] = {}
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._closed = False
        self._sock: socket.socket | None = None
        self._loop = asyncio.new_event_loop()
        self._qmp = _AsyncQMPClient()
        self._qmp.logger = _library_log  # type: ignore[assignment]  # used as a Logger: debug/error/log

    @classmethod
    def connect(cls, path: str, timeout: float = 10.0, negotiate: bool = True) -> QMPClient:
        """Connect, read the greeting and (by default) leave capabilities negotiation mode."""
        deadline = time.monotonic() + timeout
        try:
            sock = connect_unix(path, timeout)
        except OSError as exc:
            raise QMPError(f"cannot connect to {path}: {exc.strerror or exc}") from exc
        client = cls(timeout)
        client._sock = sock
        client._qmp.await_greeting = True
        client._qmp.negotiate = negotiate
        try:
            client._run(client._qmp.connect(sock), deadline - time.monotonic(), f"connecting to {path}")
            greeting = client._qmp.greeting
            if greeting is None:
                raise QMPError(f"connecting to {path}: no QMP greeting")
            client.greeting = {"version": dict(greeting.QMP.version), "capabilities": list(greeting.QMP.capabilities)}
        except BaseException:
            client.close()
            raise
        return client

    # commands -------------------------------------------------------------------------------
    def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        fds: Sequence[int] = (),
    ) -> Any:
        """Run one command and return its "return" value; `fds` travel with it (SCM_RIGHTS)."""
        if len(fds) > 1:
            # QEMU keeps only the descriptors of the last message it read, and getfd/add-fd take one.
            raise QMPError(f"{command}: one file descriptor per command, not {len(fds)}")

        async def run() -> Any:
            for fd in fds:
                self._qmp.send_fd_scm(fd)  # a byte of its own, ahead of the command that names it
            return await self._qmp.execute(command, arguments or None)

        return self._run(run(), self.timeout if timeout is None else timeout, command)

    # events -----------------------------------------------------------------------------------
    def wait_event(
        self,
        name: str | Sequence[str],
        timeout: float | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Return (and remove) the first event called `name` (or any of several names) that
        `match` accepts, waiting up to `timeout` seconds. Other events stay queued."""
        names = {name} if isinstance(name, str) else set(name)
        what = f"waiting for {'/'.join(sorted(names))}"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._collect_events()
            for event in list(self._events):
                if event.get("event") in names and (match is None or match(event)):
                    self._events.remove(event)
                    return event
            self._events.append(dict(self._run(self._qmp.events.get(), deadline - time.monotonic(), what)))

    def take_events(self) -> list[dict[str, Any]]:
        """Every event received so far, oldest first; the queue is emptied."""
        self._collect_events()
        events = list(self._events)
        self._events.clear()
        return events

    # plumbing -------------------------------------------------------------------------------
    def _collect_events(self) -> None:
        """Move what qemu.qmp's reader has heard into our queue, where `match` can pick from it."""
        if not self._loop.is_closed():
            self._events.extend(dict(event) for event in self._qmp.events.clear())

    def _run(self, work: Coroutine[Any, Any, _T], timeout: float, what: str) -> _T:
        """Drive one piece of the conversation on our loop; every failure leaves as QMPError."""
        if self._closed:
            work.close()
            raise QMPError(f"{what}: the QMP connection is closed")
        try:
            return self._drive(asyncio.wait_for(work, max(timeout, 0.0)))
        except ExecuteError as exc:
            # QEMU's own refusal: the connection stays usable.
            raise QMPCommandError(what, exc.error_class, str(exc)) from None
        except TimeoutError:  # before OSError, whose subclass it is
            self.close()
            raise QMPTimeout(f"{what}: no answer from QEMU in time") from None
        except (_LibraryError, OSError, EOFError) as exc:
            self.close()
            raise QMPError(f"{what}: {_reason(exc)}") from exc

    def _drive(self, awaitable: Coroutine[Any, Any, _T] | asyncio.Future[_T]) -> _T:
        """Run our loop until `awaitable` is done. A thread whose own loop is running (Playwright's
        sync API, a test's event loop) cannot run another one inside it, so there the loop runs on
        a short-lived helper thread while the caller blocks, as it would on a plain socket."""
        if _running_loop() is None:
            return self._loop.run_until_complete(awaitable)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="qmp") as helper:
            return helper.submit(self._loop.run_until_complete, awaitable).result()

    @property
    def closed(self) -> bool:
        return self._closed or self._qmp.runstate != Runstate.RUNNING

    def close(self) -> None:
        """Hang up and close our loop; never raises (a peer that already hung up is fine)."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        try:
            if self._qmp.runstate != Runstate.IDLE:
                # disconnect() re-raises what ended the reader (EOFError after quit): nothing to us.
                with contextlib.suppress(Exception):
                    self._drive(asyncio.wait_for(self._qmp.disconnect(), CLOSE_TIMEOUT))
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self._drive(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()
            if self._sock is not None:
                self._sock.close()  # already closed with qemu.qmp's transport, unless it never got it

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A caller that forgot close() must not leave a loop and its descriptors behind.
        with contextlib.suppress(Exception):
            self.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _reason(exc: BaseException) -> str:
    """A short cause: qemu.qmp's wrappers name the phase, the root cause says what happened."""
    if isinstance(exc, EOFError | ExecInterruptedError) or isinstance(getattr(exc, "exc", None), EOFError):
        return "QEMU closed the connection"
    if isinstance(exc, StateError):  # asked after the reader saw the end; its advice is not for us
        return "the QMP connection is closed (QEMU hung up)"
    if isinstance(exc, OSError):
        return f"the connection broke ({exc.strerror or exc})"
    return str(exc) or type(exc).__name__
