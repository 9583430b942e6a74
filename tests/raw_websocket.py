"""A WebSocket client on a plain socket, for back-pressure tests against a real daphne.

Library clients read their socket in the background; these tests need a client that decides
exactly when (and whether) it reads, so that a server's write buffer can be made to fill.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import struct
import time
from typing import Any

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8

CAP_BYTES = 512 * 1024 * 1024  # a relay without back-pressure reaches this within seconds
STALL_SECONDS = 2.0


class RawWebSocket:
    """Connects and upgrades; reads nothing past the handshake unless asked to."""

    def __init__(self, port: int, path: str, cookie: str, origin: str, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nCookie: {cookie}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1)  # byte by byte: read nothing past the handshake
            assert chunk, "daphne closed during the handshake"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response

    @staticmethod
    def frame(opcode: int, payload: bytes) -> bytes:
        # Client frames must be masked; a zero mask leaves the payload as it is.
        length = len(payload)
        if length < 126:
            header = struct.pack(">BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, length)
        return header + b"\0\0\0\0" + payload

    @classmethod
    def binary_frame(cls, payload: bytes) -> bytes:
        return cls.frame(OP_BINARY, payload)

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.frame(OP_TEXT, text.encode()))

    def send_binary(self, data: bytes) -> None:
        self.sock.sendall(self.frame(OP_BINARY, data))

    def _read_exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """Exactly one (unfragmented, unmasked) server frame: its opcode and payload."""
        first, second = self._read_exact(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self._read_exact(8))
        return first & 0x0F, self._read_exact(length)

    def close(self) -> None:
        self.sock.close()


def push_until_stalled(sock: socket.socket, chunk: bytes, cap: int = CAP_BYTES) -> tuple[int, bool]:
    """Write `chunk` over and over as fast as the peer takes it; stop at `cap` bytes or after
    STALL_SECONDS without progress. Returns the bytes written and whether it stalled."""
    sock.settimeout(0.2)
    total, last_progress, view = 0, time.monotonic(), memoryview(chunk)
    offset = 0
    while total < cap:
        try:
            sent = sock.send(view[offset:])
        except TimeoutError:
            if time.monotonic() - last_progress > STALL_SECONDS:
                return total, True
            continue
        total += sent
        offset = (offset + sent) % len(chunk)
        last_progress = time.monotonic()
    return total, False


# ---- the other end: a WebSocket server on a plain socket -------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_raw_websocket(listener: socket.socket) -> socket.socket:
    """Accept one connection and complete its WebSocket handshake; read nothing after it."""
    conn, _ = listener.accept()
    conn.settimeout(10)
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(1)  # byte by byte: leave any frame after the handshake unread
        if not chunk:
            raise ConnectionError("the client closed during the handshake")
        request += chunk
    found = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", request)
    assert found, request
    # SHA-1 is what RFC 6455 prescribes for the accept key; nothing here is secret.
    accept = base64.b64encode(hashlib.sha1(found.group(1) + _GUID).digest())  # noqa: S324
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return conn


def server_frame(opcode: int, payload: bytes) -> bytes:
    """A complete server frame (servers do not mask)."""
    length = len(payload)
    if length < 126:
        header = struct.pack(">BB", 0x80 | opcode, length)
    elif length < 65536:
        header = struct.pack(">BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, length)
    return header + payload


# ---- what daphne holds -------------------------------------------------------------------------


def daphne_buffered(server: Any, path: str) -> int:
    """Bytes an in-process daphne `server` holds for WebSockets on `path`, not yet written to
    their sockets. Call it from another thread than the reactor's: it reads on the reactor's."""
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread

    def measure() -> int:
        total = 0
        for protocol in list(server.connections):
            if isinstance(protocol, WebSocketProtocol) and getattr(protocol, "path", b"") == path.encode():
                transport = protocol.transport
                # Twisted's TCP transport: a bytes buffer (partly sent) plus a list of pending writes.
                total += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        return total

    return blockingCallFromThread(reactor, measure)
