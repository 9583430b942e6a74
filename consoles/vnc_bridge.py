"""The parts of the graphical console bridge that are not Channels plumbing.

noVNC speaks raw RFB over binary WebSocket frames; the bridge copies bytes between that
WebSocket and the session's VNC server without parsing the protocol. What lives here:
where the VNC server is (only ever from the runners' record of it, `runners.base.vnc_endpoint_of`, or
the session's own runner when that record says to ask it, `runner_vnc_port`), which WebSocket
subprotocol to accept, and which client frames count as the learner being active. Flow
control toward the browser is consoles/flow.py, shared with the other consoles.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runners.base import Endpoint
from runners.qmp import connect_unix

if TYPE_CHECKING:
    from sessions_app.models import Session

log = logging.getLogger(__name__)

# Close codes the session page knows (4403 and 4409 are shared with the terminal console).
CLOSE_FORBIDDEN = 4403
CLOSE_UNAVAILABLE = 4409
CLOSE_UPSTREAM_FAILED = 4502

# noVNC 1.7 requests no subprotocol by default (its `wsProtocols` option is empty); older
# noVNC and some embedders ask for "binary". Base64 framing ("base64") is not supported.
SUBPROTOCOL_BINARY = "binary"

# Read from the VNC server ahead of the browser, up to this much; past it, reading pauses until
# half of it is sent on. Enough to keep reading while daphne flushes a frame to the browser.
READ_AHEAD_BYTES = 2 * 1024 * 1024
# The largest WebSocket frame sent to the browser (noVNC's receive queue grows to fit).
MAX_FRAME_BYTES = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0
# Above this much unsent data toward the VNC server, stop reading the browser's socket.
UPSTREAM_HIGH_WATER_BYTES = 64 * 1024
ACTIVITY_INTERVAL_SECONDS = 10.0

# RFB client-to-server message type of FramebufferUpdateRequest (RFC 6143 §7.5.3): 10 bytes.
_FBU_REQUEST = 3
_FBU_REQUEST_BYTES = 10


def runner_vnc_port(endpoints: Any) -> int | None:
    """The VNC port of a record that names no address but says the session's runner must be asked for
    one ({"vnc": {"port": 5900, "through": "runner"}}: the Kubernetes runner outside the cluster, whose
    loopback tunnels exist only in the process that asked). None for any other record."""
    vnc = endpoints.get("vnc") if isinstance(endpoints, dict) else None
    if not isinstance(vnc, dict) or vnc.get("through") != "runner":
        return None
    port = vnc.get("port")
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None


def runner_vnc_endpoint(session: Session, port: int) -> Endpoint:
    """Where the session's runner says its VNC server is reachable from this process (blocking: run it
    in a thread). RunnerError when it cannot say."""
    return session.runner().endpoint(session.runner_state, port)


def choose_subprotocol(offered: list[str] | tuple[str, ...] | None) -> str | None:
    """The subprotocol to accept: "binary" when the client offers it, else none."""
    return SUBPROTOCOL_BINARY if offered and SUBPROTOCOL_BINARY in offered else None


class VncConnection(asyncio.Protocol):
    """The socket to the VNC server, as an asyncio protocol.

    Not asyncio streams: a StreamReader copies every byte into its buffer and again out of
    it. Here the bytes objects the socket produced are queued as they are and handed on
    whole (joined only when several wait). Reading from the server pauses once
    READ_AHEAD_BYTES wait in the queue; writes toward it pause the caller (`drain`) while the
    transport's buffer is above asyncio's high-water mark.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._reading_paused = False
        self._eof = False
        self._data_ready = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._lost: BaseException | None = None

    # asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        self._data_ready.set()
        if self._queued >= READ_AHEAD_BYTES and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._data_ready.set()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc or ConnectionResetError("the VNC server closed the connection")
        self._data_ready.set()
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # what the bridge uses
    async def read(self) -> bytes:
        """What the server has sent (up to MAX_FRAME_BYTES in one piece); b"" at the end."""
        while not self._chunks:
            if self._eof:
                return b""
            self._data_ready.clear()
            await self._data_ready.wait()
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:  # several socket reads waiting: one frame instead of many small ones
            parts, size = [], 0
            while self._chunks and size + len(self._chunks[0]) <= MAX_FRAME_BYTES:
                part = self._chunks.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts) if parts else self._chunks.popleft()
        self._queued -= len(data)
        if self._reading_paused and self._queued <= READ_AHEAD_BYTES // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    @property
    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    @property
    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def drain(self) -> None:
        """Wait until the server has taken enough of what was written; raise if it is gone."""
        await self._can_write.wait()
        if self._lost is not None:
            raise ConnectionResetError("the VNC server closed the connection") from self._lost

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_vnc(target: Endpoint, timeout: float = CONNECT_TIMEOUT_SECONDS) -> VncConnection:
    """Connect to the VNC server; raises OSError or TimeoutError when it does not answer."""
    loop = asyncio.get_running_loop()
    if target.unix_path:
        # connect_unix reaches sockets whose path is too long for an address (a deep data dir).
        sock = await asyncio.wait_for(asyncio.to_thread(connect_unix, target.unix_path, timeout), timeout)
        sock.setblocking(False)
        connecting = loop.create_unix_connection(VncConnection, sock=sock)
    elif target.host and target.port:
        connecting = loop.create_connection(VncConnection, target.host, target.port)
    else:
        raise OSError(f"no VNC address in {target!r}")
    _transport, connection = await asyncio.wait_for(connecting, timeout)
    return connection


def is_user_input(frame: bytes) -> bool:
    """Whether a client frame carries input (keys, pointer, clipboard, resizes, the handshake).

    noVNC asks for a new FramebufferUpdate after every update it draws, so a console left
    open on a changing screen sends those forever; they must not keep an idle session alive.
    A frame made only of FramebufferUpdateRequests is not input; anything else is.
    """
    if not frame or len(frame) % _FBU_REQUEST_BYTES:
        return bool(frame)
    return any(frame[i] != _FBU_REQUEST for i in range(0, len(frame), _FBU_REQUEST_BYTES))


class ActivityThrottle:
    """Lets an activity write through at most once per interval (the first one at once)."""

    def __init__(self, interval: float = ACTIVITY_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True

