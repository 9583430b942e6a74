"""Back-pressure toward a browser's WebSocket under daphne, shared by every console relay.

Awaiting an ASGI `send` under daphne returns at once: the frame goes into Twisted's unbounded
write buffer for that client. A client that stops reading its socket (slow link, a hostile
script that acks terminal output it never reads) would make the server buffer without limit.
So each relay registers a ClientFlow as a streaming producer on daphne's transport: Twisted
pauses it once more than `high_water` bytes wait to be written and resumes it when the buffer
has drained, and the relay reads nothing more from its source (VNC server, shell, learner's
app) while paused. The same transport can also stop reading from the browser while the
relay's other side is not taking input (`pause_reading` / `resume_reading`).

Under other servers (or the Channels test communicator) no transport is found and the relay
relies on `send` itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

# Twisted pauses its producer past `bufferSize` unsent bytes (64 KiB by default, less than one
# VNC frame) and resumes it only once everything is sent; this much slack lets the next frame be
# ready meanwhile without letting one client hold more than about this in server memory.
DEFAULT_HIGH_WATER = 1024 * 1024


class ClientFlow:
    """Flow control toward (and, on demand, from) one browser's WebSocket connection."""

    def __init__(self, protocol: Any | None, high_water: int = DEFAULT_HIGH_WATER) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self._protocol = protocol
        self._reading_paused = False
        if protocol is not None:
            try:
                transport = protocol.transport
                if getattr(transport, "producer", None) is not None:
                    # daphne hands the socket from its HTTP channel to the WebSocket protocol on
                    # upgrade but leaves the channel registered as producer; it is done with it.
                    transport.unregisterProducer()
                protocol.registerProducer(self, True)
                transport.bufferSize = high_water  # also Twisted's read size, which is harmless
            except Exception:  # a transport without producer support
                log.warning("cannot register on the WebSocket transport; no flow control toward the client",
                            exc_info=True)
                self._protocol = None

    @classmethod
    def for_send(cls, send: Any, high_water: int = DEFAULT_HIGH_WATER) -> ClientFlow:
        return cls(find_daphne_protocol(send), high_water)

    @property
    def active(self) -> bool:
        """Whether a server transport was found (False under the test communicator)."""
        return self._protocol is not None

    async def wait_writable(self) -> None:
        """Return at once unless the client's write buffer is above the high-water mark."""
        await self._writable.wait()

    # Twisted IPushProducer, called by the transport on the event loop's thread.
    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self._writable.set()  # the connection is gone; the consumer's disconnect ends the relay

    def pause_reading(self) -> None:
        if self._protocol is not None and not self._reading_paused:
            self._reading_paused = True
            self._protocol.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._protocol is not None and self._reading_paused:
            self._reading_paused = False
            self._protocol.transport.resumeProducing()

    def close(self) -> None:
        self.resume_reading()
        if self._protocol is not None:
            try:
                if getattr(self._protocol.transport, "producer", None) is self:
                    self._protocol.unregisterProducer()
            except Exception:  # the transport may already be torn down
                log.debug("unregistering from the client's transport failed", exc_info=True)
            self._protocol = None
        self._writable.set()


def find_daphne_protocol(send: Any, depth: int = 8) -> Any | None:
    """Find daphne's protocol object behind an ASGI `send` callable, if there is one.

    daphne hands the application `partial(server.handle_reply, protocol)` (the WebSocket
    protocol, or the Twisted request for HTTP); Channels' session middleware wraps it in a
    bound method whose owner keeps it as `real_send`.
    """
    current = send
    for _ in range(depth):
        if isinstance(current, functools.partial):
            for arg in current.args:
                if callable(getattr(arg, "registerProducer", None)) and hasattr(arg, "transport"):
                    return arg
            current = current.func
            continue
        owner = getattr(current, "__self__", None)
        inner = getattr(owner, "real_send", None) or getattr(current, "__wrapped__", None)
        if inner is None:
            return None
        current = inner
    return None
