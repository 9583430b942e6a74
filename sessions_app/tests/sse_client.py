"""A Server-Sent Events client on a plain socket, for tests against a real daphne: it reads exactly
when asked, so a test can hold many streams open at once and look at the server meanwhile."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    kind: str  # "message" when the event names none; "comment" for ": ..." lines
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    """GET `path` with `cookie`; `status` and `headers` once connected, then `next_event()`."""

    def __init__(self, port: int, path: str, cookie: str = "", last_event_id: str | None = None,
                 timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Cookie: {cookie}\r\n{extra}\r\n".encode()
        )
        self._raw = b""
        while b"\r\n\r\n" not in self._raw:
            self._recv()
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._text = ""

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the stream")
        self._raw += data

    def _body(self) -> None:
        """Move what has arrived of the body into the text buffer (undoing chunked encoding)."""
        if not self.chunked:
            if not self._raw:
                self._recv()
            self._text += self._raw.decode()
            self._raw = b""
            return
        while True:
            if b"\r\n" not in self._raw:
                self._recv()
                continue
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                raise EOFError("the stream ended")
            if len(rest) < size + 2:
                self._recv()
                continue
            self._text += rest[:size].decode()
            self._raw = rest[size + 2:]
            return

    def next_event(self, timeout: float = 10.0, comments: bool = False) -> Event:
        """The next event (comment lines too when asked); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while "\n\n" in self._text:
                block, self._text = self._text.split("\n\n", 1)
                event = _parse(block)
                if event is not None and (comments or event.kind != "comment"):
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event in time")
            self.sock.settimeout(left)
            try:
                self._body()
            except TimeoutError:
                raise TimeoutError("no event in time") from None

    def events_until(self, kind: str, timeout: float = 10.0) -> list[Event]:
        """Every event up to and including the first of `kind`."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            event = self.next_event(timeout=max(0.01, deadline - time.monotonic()))
            seen.append(event)
            if event.kind == kind:
                return seen

    def close(self) -> None:
        self.sock.close()


def _parse(block: str) -> Event | None:
    kind, data, event_id, comment = "message", [], None, None
    for line in block.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "retry":
            return Event("retry", value)
    if not data and comment is not None:
        return Event("comment", comment)
    if not data:
        return None
    return Event(kind, "\n".join(data), event_id)
