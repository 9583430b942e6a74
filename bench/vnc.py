"""Graphical console bridge throughput: the platform's VNC WebSocket vs websockify.

A raw TCP byte server stands in for the VNC server (the bridge copies bytes without parsing
RFB, and a real VNC server cannot produce a steady stream fast enough to load the bridge). On
each connection it reads a command: "S" + size → it streams that many bytes as fast as the
bridge takes them (server → browser); "R" + size → it reads that many bytes and answers "D"
(browser → server). Both bridges are measured in the same run, interleaved, with the same
WebSocket client (the `websockets` library, no compression):

- the platform: a real daphne serving labsite.asgi.application (origin check, cookie auth,
  VncConsumer) with a temporary SQLite data directory and a running session whose VNC
  endpoint is the byte server, signed in with a Django session cookie;
- websockify 0.13 (PyPI) bridging the same byte server.

Prints MB/s each way (median, best, worst), the platform/websockify ratio (target ≥ 1.0) as
the median of per-round ratios, and each bridge's CPU time per MB moved.

    .venv/bin/python bench/vnc.py [--megabytes 100] [--rounds 8] [--client raw|websockets]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.vnc_server import free_tcp_port, live_platform  # noqa: E402

FRAME_BYTES = 64 * 1024  # what the client sends per WebSocket message toward the server
BLOCK = bytes(range(256)) * 4096  # 1 MiB the byte server streams from


# ----- the byte server standing in for VNC ----------------------------------------------------


def _recv_exact(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _handle(conn: socket.socket) -> None:
    with conn:
        try:
            command, size = struct.unpack(">cQ", _recv_exact(conn, 9))
            if command == b"S":
                view, left = memoryview(BLOCK), size
                while left:
                    left -= conn.send(view[: min(left, len(BLOCK))])
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):  # wait for the bridge to close
                    pass
            elif command == b"R":
                left = size
                while left:
                    chunk = conn.recv(min(left, 1 << 20))
                    if not chunk:
                        return
                    left -= len(chunk)
                conn.sendall(b"D")
                while conn.recv(65536):
                    pass
        except OSError:
            pass


def _serve_bytes(port: int, ready) -> None:
    server = socket.create_server(("127.0.0.1", port))
    ready.set()
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


@contextmanager
def byte_server() -> Iterator[int]:
    port = free_tcp_port()
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=_serve_bytes, args=(port, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(10):
            raise RuntimeError("byte server did not start")
        yield port
    finally:
        process.terminate()
        process.join(5)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children (websockify forks one per connection)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


@contextmanager
def websockify(target_port: int, log_dir: Path) -> Iterator[subprocess.Popen]:
    port = free_tcp_port()
    with open(log_dir / "websockify.log", "ab") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("websockify")), f"127.0.0.1:{port}", f"127.0.0.1:{target_port}"],
            stdout=log, stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"websockify exited with {process.returncode}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("websockify did not start")
            time.sleep(0.1)
        process.port = port  # type: ignore[attr-defined]
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


# ----- the clients ----------------------------------------------------------------------------
#
# The raw client (the default) parses frame headers and skips payloads in place, so it is not
# the bottleneck and the figures measure the bridges. `--client websockets` uses the websockets
# library instead, a client closer in cost to a browser's JavaScript.


def _client_frame(payload: bytes) -> bytes:
    # Client frames must be masked; an all-zero key is valid and leaves the payload as it is.
    length = len(payload)
    if length < 126:
        header = struct.pack(">BB", 0x82, 0x80 | length)
    elif length < 65536:
        header = struct.pack(">BBH", 0x82, 0x80 | 126, length)
    else:
        header = struct.pack(">BBQ", 0x82, 0x80 | 127, length)
    return header + bytes(4) + payload


def _parse_header(data: bytes) -> tuple[int, int, int] | None:
    """(header length, opcode, payload length) of a server frame, or None if incomplete."""
    if len(data) < 2:
        return None
    opcode, short = data[0] & 0x0F, data[1] & 0x7F
    if short < 126:
        return 2, opcode, short
    if short == 126:
        return (4, opcode, struct.unpack(">H", data[2:4])[0]) if len(data) >= 4 else None
    return (10, opcode, struct.unpack(">Q", data[2:10])[0]) if len(data) >= 10 else None


class RawClient:
    def __init__(self, url: str, headers: dict[str, str], origin: str | None) -> None:
        host_port, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)))
        lines = [f"GET /{path} HTTP/1.1", f"Host: {host_port}", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
        lines += [f"Origin: {origin}"] if origin else []
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            response += chunk
        head, _, self.header = response.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.remaining = 0  # payload bytes of the current frame still to come
        self.closed = False
        self.opcode = 0
        self.scratch = memoryview(bytearray(4 << 20))
        self._consume(memoryview(self.header), 0, len(self.header), reset=True)

    def _consume(self, view: memoryview, start: int, end: int, reset: bool = False) -> int:
        """Walk frames in view[start:end]; return the binary payload bytes seen."""
        if reset:
            self.header = b""
        got, i = 0, start
        while i < end:
            if self.remaining:
                taken = min(self.remaining, end - i)
                self.remaining -= taken
                i += taken
                if self.opcode in (0, 2):
                    got += taken
                continue
            before = len(self.header)
            self.header += bytes(view[i:min(end, i + 14)])
            parsed = _parse_header(self.header)
            if parsed is None:
                i = end
                continue
            length, self.opcode, self.remaining = parsed
            if self.opcode == 8:  # close: the payload before it still counts
                self.closed = True
                return got
            i += length - before
            self.header = b""
        return got

    def receive(self, size: int) -> None:
        got = self._consume(memoryview(b""), 0, 0)
        while got < size:
            if self.closed:
                raise ConnectionError(f"the bridge closed the WebSocket after {got} of {size} bytes")
            n = self.sock.recv_into(self.scratch)
            if not n:
                raise ConnectionError("the bridge closed the connection")
            got += self._consume(self.scratch, 0, n)

    def close(self) -> None:
        self.sock.close()


def raw_server_to_client(url: str, headers: dict[str, str], origin: str | None, size: int) -> float:
    client = RawClient(url, headers, origin)
    try:
        began = time.perf_counter()
        client.sock.sendall(_client_frame(struct.pack(">cQ", b"S", size)))
        client.receive(size)
        return size / (time.perf_counter() - began) / 1e6
    finally:
        client.close()


def raw_client_to_server(url: str, headers: dict[str, str], origin: str | None, size: int) -> float:
    client = RawClient(url, headers, origin)
    frame = _client_frame(bytes(FRAME_BYTES))
    try:
        began = time.perf_counter()
        client.sock.sendall(_client_frame(struct.pack(">cQ", b"R", size)))
        left = size
        while left >= FRAME_BYTES:
            client.sock.sendall(frame)
            left -= FRAME_BYTES
        if left:
            client.sock.sendall(_client_frame(bytes(left)))
        client.receive(1)  # "D": the byte server has it all
        return size / (time.perf_counter() - began) / 1e6
    finally:
        client.close()


async def _library_server_to_client(url: str, headers: dict[str, str], origin: str | None, size: int) -> float:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=headers, origin=origin, compression=None, max_size=None) as ws:
        began = time.perf_counter()
        await ws.send(struct.pack(">cQ", b"S", size))
        received = 0
        while received < size:
            message = await ws.recv()
            assert isinstance(message, bytes), "the bridge sent a text frame"
            received += len(message)
        elapsed = time.perf_counter() - began
    assert received == size, (received, size)
    return size / elapsed / 1e6


async def _library_client_to_server(url: str, headers: dict[str, str], origin: str | None, size: int) -> float:
    from websockets.asyncio.client import connect

    payload = bytes(FRAME_BYTES)
    async with connect(url, additional_headers=headers, origin=origin, compression=None, max_size=None) as ws:
        began = time.perf_counter()
        await ws.send(struct.pack(">cQ", b"R", size))
        left = size
        while left:
            frame = payload if left >= FRAME_BYTES else payload[:left]
            await ws.send(frame)
            left -= len(frame)
        done = await ws.recv()
        elapsed = time.perf_counter() - began
    assert done == b"D", done
    return size / elapsed / 1e6


def library_server_to_client(url: str, headers: dict[str, str], origin: str | None, size: int) -> float:
    return asyncio.run(_library_server_to_client(url, headers, origin, size))


def library_client_to_server(url: str, headers: dict[str, str], origin: str | None, size: int) -> float:
    return asyncio.run(_library_client_to_server(url, headers, origin, size))


CLIENTS = {
    "raw": (raw_server_to_client, raw_client_to_server),
    "websockets": (library_server_to_client, library_client_to_server),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=100, help="bytes per transfer, in MB (default 100)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--app", default="labsite.asgi:application", help="ASGI application daphne serves")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="raw")
    args = parser.parse_args()
    size = args.megabytes * 1_000_000

    with tempfile.TemporaryDirectory() as work, byte_server() as target_port:
        log_dir = Path(work)
        endpoint = {"host": "127.0.0.1", "port": target_port}
        with live_platform(log_dir, {"bytes": endpoint}, app=args.app) as platform, \
                websockify(target_port, log_dir) as websockify_process:
            cases = {
                "platform (daphne + VncConsumer)": (platform.url("bytes"), {"Cookie": platform.cookie},
                                                    platform.origin, platform.process.pid),
                "websockify 0.13": (f"ws://127.0.0.1:{websockify_process.port}/", {}, None,  # type: ignore[attr-defined]
                                    websockify_process.pid),
            }
            rate = {(label, way): [] for label in cases for way in ("down", "up")}
            cpu = {(label, way): 0.0 for label in cases for way in ("down", "up")}
            for round_number in range(args.rounds + 1):
                for label, (url, headers, origin, pid) in cases.items():  # interleaved: drift hits both alike
                    for way, transfer in zip(("down", "up"), CLIENTS[args.client], strict=True):
                        before = cpu_seconds(pid)
                        mb_per_s = transfer(url, headers, origin, size)
                        time.sleep(0.3)  # let websockify reap the connection's process
                        if round_number:  # the first round warms up
                            rate[label, way].append(mb_per_s)
                            cpu[label, way] += cpu_seconds(pid) - before

    base, ours = "websockify 0.13", "platform (daphne + VncConsumer)"
    moved = args.megabytes * args.rounds

    def ms_per_mb(label: str, way: str) -> float:
        return cpu[label, way] * 1000 / moved

    def paired_ratio(way: str) -> float:
        # Each round measures both bridges back to back, so their ratio cancels most of the
        # machine's drift; the median of those ratios is the headline figure.
        return statistics.median(o / b for o, b in zip(rate[ours, way], rate[base, way], strict=True))

    print(f"VNC bridge throughput, {args.megabytes} MB per transfer, {args.rounds} rounds after 1 warm-up round, "
          f"client: {args.client}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':<32} {'server→browser MB/s':>28}   {'browser→server MB/s':>28}")
    print(f"{'':<32} {'median':>10} {'best':>8} {'worst':>8}   {'median':>10} {'best':>8} {'worst':>8}")
    for label in cases:
        cells = []
        for way in ("down", "up"):
            values = rate[label, way]
            cells.append(f"{statistics.median(values):10.1f} {max(values):8.1f} {min(values):8.1f}")
        print(f"{label:<32} {cells[0]}   {cells[1]}")
    print(f"ratio platform / websockify (median of per-round ratios): server→browser {paired_ratio('down'):.2f}×, "
          f"browser→server {paired_ratio('up'):.2f}×   (target ≥ 1.0×)")
    print("bridge CPU per MB moved (lower is better; steadier than MB/s on a busy machine):")
    for label in cases:
        print(f"  {label:<30} server→browser {ms_per_mb(label, 'down'):5.2f} ms   "
              f"browser→server {ms_per_mb(label, 'up'):5.2f} ms")


if __name__ == "__main__":
    main()
