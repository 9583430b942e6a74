"""A small client for QEMU's machine protocol (QMP): JSON lines over a unix socket.

    with QMPClient.connect("/run/vm/qmp.sock", timeout=5) as qmp:
        qmp.execute("query-status")                # {"status": "running", "running": true, ...}
        qmp.execute("getfd", {"fdname": "state"}, fds=[fd])
        qmp.wait_event("SHUTDOWN", timeout=10)

The server greets with {"QMP": {...}}; the client answers with qmp_capabilities and may then run
commands. Every command carries an id and the reply with that id is its answer; events ({"event":
...}) can arrive at any time and are kept, in order, until `wait_event` or `take_events` reads them.

Blocking and single-threaded by design: one conversation at a time per connection, and QEMU serves
one client per QMP socket, so callers serialise their use of a socket. After a timeout the
connection may still receive the late answer, so it is closed and any further use raises.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

MAX_MESSAGE = 16 * 1024 * 1024  # far above any reply we ask for; stops a runaway peer


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
    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self._sock = sock
        self.timeout = timeout
        self._buffer = bytearray()
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._ids = itertools.count(1)
        self._closed = False
        self.greeting: dict[str, Any] = {}

    @classmethod
    def connect(cls, path: str, timeout: float = 10.0, negotiate: bool = True) -> QMPClient:
        """Connect, read the greeting and (by default) leave capabilities negotiation mode."""
        deadline = time.monotonic() + timeout
        try:
            sock = connect_unix(path, timeout)
        except OSError as exc:
            raise QMPError(f"cannot connect to {path}: {exc.strerror or exc}") from exc
        client = cls(sock, timeout)
        try:
            greeting = client._read_message(deadline)
            if "QMP" not in greeting:
                raise QMPError(f"not a QMP greeting: {str(greeting)[:200]}")
            client.greeting = greeting["QMP"]
            if negotiate:
                client.execute("qmp_capabilities", timeout=max(deadline - time.monotonic(), 0.1))
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
        self._check_open()
        request_id = f"labs-{next(self._ids)}"
        message: dict[str, Any] = {"execute": command, "id": request_id}
        if arguments:
            message["arguments"] = arguments
        payload = json.dumps(message).encode() + b"\n"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            if fds:
                # The descriptors must ride on the first byte of the command that names them.
                sent = socket.send_fds(self._sock, [payload], list(fds))
                if sent < len(payload):
                    self._sock.sendall(payload[sent:])
            else:
                self._sock.sendall(payload)
        except OSError as exc:
            self.close()
            raise QMPError(f"{command}: the connection broke ({exc.strerror or exc})") from exc
        while True:
            reply = self._read_message(deadline, what=command)
            if "event" in reply:
                self._events.append(reply)
                continue
            if reply.get("id") != request_id:
                continue  # an answer to a command whose caller gave up; never ours
            if "error" in reply:
                error = reply["error"] or {}
                raise QMPCommandError(command, str(error.get("class", "GenericError")), str(error.get("desc", "")))
            return reply.get("return")

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
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)

        def wanted(event: dict[str, Any]) -> bool:
            return event.get("event") in names and (match is None or match(event))

        while True:
            for event in list(self._events):
                if wanted(event):
                    self._events.remove(event)
                    return event
            self._check_open()
            message = self._read_message(deadline, what=f"waiting for {'/'.join(sorted(names))}")
            if "event" in message:
                self._events.append(message)

    def take_events(self) -> list[dict[str, Any]]:
        """Every event received so far, oldest first; the queue is emptied."""
        events = list(self._events)
        self._events.clear()
        return events

    # plumbing -------------------------------------------------------------------------------
    def _read_message(self, deadline: float, what: str = "greeting") -> dict[str, Any]:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline]).strip()
                del self._buffer[: newline + 1]
                if not line:
                    continue
                try:
                    message = json.loads(line)
                except ValueError as exc:
                    self.close()
                    raise QMPError(f"{what}: QEMU sent something that is not JSON: {line[:200]!r}") from exc
                if not isinstance(message, dict):
                    self.close()
                    raise QMPError(f"{what}: unexpected message {line[:200]!r}")
                return message
            if len(self._buffer) > MAX_MESSAGE:
                self.close()
                raise QMPError(f"{what}: message larger than {MAX_MESSAGE} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise QMPTimeout(f"{what}: no answer from QEMU in time")
            try:
                ready, _, _ = select.select([self._sock], [], [], remaining)
                if not ready:
                    continue
                chunk = self._sock.recv(65536)
            except OSError as exc:
                self.close()
                raise QMPError(f"{what}: the connection broke ({exc.strerror or exc})") from exc
            if not chunk:
                self.close()
                raise QMPError(f"{what}: QEMU closed the connection")
            self._buffer.extend(chunk)

    def _check_open(self) -> None:
        if self._closed:
            raise QMPError("the QMP connection is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
