"""Keys typed before a new shell has printed anything wait for its first output, so a shell that
flushes pending input while it starts (tmux, readline) cannot lose them."""

from __future__ import annotations

import asyncio
import socket

from consoles import terminals


class SocketStream:
    """A TerminalStream over one end of a socket pair; the test plays the shell on the other."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return self.sock.recv(max_bytes)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def resize(self, cols: int, rows: int) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


async def _bridge(stream: SocketStream, sent: list[bytes]) -> terminals.TerminalBridge:
    async def send_output(data: bytes) -> None:
        sent.append(data)

    async def on_exit() -> None:
        pass

    bridge = terminals.TerminalBridge(stream, send_output=send_output, on_exit=on_exit)
    bridge.start()
    return bridge


def _pending(shell: socket.socket) -> bytes:
    try:
        return shell.recv(65536)
    except BlockingIOError:
        return b""


async def test_keys_typed_before_the_first_output_wait_for_it():
    ours, shell = socket.socketpair()
    shell.setblocking(False)
    sent: list[bytes] = []
    bridge = await _bridge(SocketStream(ours), sent)
    bridge.write(b"echo hi\r")
    await asyncio.sleep(0.3)
    assert _pending(shell) == b""  # held back: the shell has not spoken yet
    shell.sendall(b"$ ")  # the prompt
    for _ in range(50):
        await asyncio.sleep(0.02)
        if (got := _pending(shell)):
            break
    assert got == b"echo hi\r"
    assert sent == [b"$ "]
    await bridge.close()
    shell.close()


async def test_a_silent_console_gets_the_keys_after_the_grace(monkeypatch):
    monkeypatch.setattr(terminals, "FIRST_OUTPUT_GRACE_SECONDS", 0.2)
    ours, shell = socket.socketpair()
    shell.setblocking(False)
    bridge = await _bridge(SocketStream(ours), [])
    bridge.write(b"\r")
    await asyncio.sleep(0.6)
    assert _pending(shell) == b"\r"
    bridge.write(b"x")  # from then on keys go straight through
    await asyncio.sleep(0.05)
    assert _pending(shell) == b"x"
    await bridge.close()
    shell.close()
