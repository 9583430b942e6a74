"""A request body on its way from the socket to the ASGI application, never held whole.

daphne (webserver/serve.py's request class) feeds the chunks as they arrive and the application
takes them with `receive()`. Past `high_water` bytes waiting, reading from the client's socket
pauses; it resumes once the application has taken enough. So the server holds at most about
`high_water` plus one socket read of any body, whatever its size, and a slow application slows
the client down instead of filling memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class RequestBody:
    def __init__(
        self, pause_reading: Callable[[], None], resume_reading: Callable[[], None],
        high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
    ) -> None:
        self._pause_reading = pause_reading
        self._resume_reading = resume_reading
        self._high_water = high_water
        self._low_water = low_water
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._paused = False
        self._complete = False
        self._end_delivered = False
        self._disconnected = False
        self._changed = asyncio.Event()

    @property
    def held(self) -> int:
        """Bytes received and not yet taken by the application."""
        return self._held

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (not necessarily been taken)."""
        return self._complete

    # -- the server's side (Twisted callbacks, on the event loop's thread) --------------------

    def feed(self, data: bytes) -> None:
        if not data or self._disconnected:
            return
        self._chunks.append(data)
        self._held += len(data)
        self._changed.set()
        if self._held >= self._high_water:
            # Asked again on every chunk past the mark: something else (Twisted resuming the
            # transport after a write) may have resumed reading meanwhile.
            self._paused = True
            self._pause_reading()

    def end(self) -> None:
        self._complete = True
        self._changed.set()

    def disconnect(self) -> None:
        """The client left, the response is complete, or the body was refused: no more body."""
        self._disconnected = True
        self._chunks.clear()
        self._held = 0
        self._changed.set()

    # -- the application's side: ASGI `receive` ---------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while True:
            if self._disconnected:
                return {"type": "http.disconnect"}
            if self._chunks:
                data = self._chunks.popleft()
                self._held -= len(data)
                if self._paused and self._held <= self._low_water:
                    self._paused = False
                    self._resume_reading()
                last = self._complete and not self._chunks
                self._end_delivered = last
                return {"type": "http.request", "body": data, "more_body": not last}
            if self._complete and not self._end_delivered:
                self._end_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # Nothing to give yet (or the body is done and only a disconnect can come).
            self._changed.clear()
            await self._changed.wait()
