"""Large request bodies against a real server process, and what they cost it.

- `send_request()`: HTTP/1.1 on a plain socket, the body streamed from an iterator (with a
  Content-Length or chunked) by one thread while another reads the answer, so a server may
  answer before the body is sent, and the test sees when it did. Library clients buffer, retry
  or stop reading while they send.
- `multipart()`: form-data framing around a file given as chunks, with its exact length.
- `IsoFile`: an ISO 9660 image of any size, generated on the fly (nothing on disk or in memory).
- `ProcessMemory`: a process's resident memory and its peak, from /proc/<pid>/status.
- `Responsiveness`: GETs a page over and over in a thread; the slowest answer.

Shared by the server's tests (tests/e2e/) and bench/upload_memory.py.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

KB = 1024
MB = 1024 * 1024
SEND_BLOCK = 256 * KB


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds_to_answer: float  # from the request's first byte to the answer's first byte
    seconds: float  # until the answer was complete
    bytes_sent: int  # of the body, before the answer was complete or sending failed
    send_error: str  # why sending stopped early ("" if the whole body went out)
    continued: bool = False  # the server sent "100 Continue" first


def zeros(size: int) -> Iterator[bytes]:
    block = bytes(SEND_BLOCK)
    for start in range(0, size, SEND_BLOCK):
        yield block[: min(SEND_BLOCK, size - start)]


def send_request(
    port: int, method: str, path: str, headers: dict[str, str], body: Iterable[bytes] = (),
    content_length: int | None = None, chunked: bool = False, wait_for_continue: bool = False,
    timeout: float = 300.0,
) -> Answer:
    """Send the request and return the server's answer (never raises for a server hanging up)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if wait_for_continue:
        lines.append("Expect: 100-continue")
    started = time.monotonic()
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    sent = 0
    send_error = ""
    go = threading.Event()  # with wait_for_continue: set on "100 Continue", or when the answer came without it
    answered = False

    def send_body() -> None:
        nonlocal sent, send_error
        go.wait(timeout)
        if answered:
            send_error = "answered before the body was sent"
            return
        try:
            for chunk in body:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            send_error = repr(exc)

    sender = threading.Thread(target=send_body, daemon=True)
    if not wait_for_continue:
        go.set()
    sender.start()
    reader = _Reader(sock)
    continued = False
    try:
        status, answer_headers, first_byte = reader.head(started)
        if status == 100:
            continued = True
            go.set()
            status, answer_headers, _ = reader.head(started)
        answer_body = reader.body(answer_headers)
    finally:
        finished = time.monotonic()
        answered = not go.is_set()
        go.set()
        sent_so_far = sent
        try:
            sock.shutdown(socket.SHUT_RDWR)  # stops a sender still writing into a server that stopped reading
        except OSError:
            pass
        sender.join(timeout)
        sock.close()
    return Answer(status, answer_headers, answer_body, first_byte - started, finished - started, sent_so_far,
                  send_error, continued)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        self.buffer += chunk
        return bool(chunk)

    def head(self, started: float) -> tuple[int, dict[str, str], float]:
        first_byte = 0.0
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise AssertionError(f"the server closed without an answer (got {self.buffer[:200]!r})")
            first_byte = first_byte or time.monotonic()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers, first_byte or time.monotonic()

    def body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buffer) < length and self._more():
                pass
            return self.buffer[:length]
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return self._chunked()
        while self._more():
            pass
        return self.buffer

    def _chunked(self) -> bytes:
        out = b""
        while True:
            while b"\r\n" not in self.buffer:
                if not self._more():
                    return out
            size_line, self.buffer = self.buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self.buffer) < size + 2:
                if not self._more():
                    return out + self.buffer
            out += self.buffer[:size]
            self.buffer = self.buffer[size + 2:]
            if size == 0:
                return out


def multipart(
    fields: dict[str, str], file_field: str, file_name: str, file_size: int, file_chunks: Iterable[bytes],
) -> tuple[str, int, Iterator[bytes]]:
    """(Content-Type, Content-Length, body chunks) of a form with `fields` and one file."""
    boundary = f"----labs{uuid.uuid4().hex}"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        yield from file_chunks
        yield tail

    return f"multipart/form-data; boundary={boundary}", len(head) + file_size + len(tail), chunks()


class IsoFile:
    """An ISO 9660 image as far as the platform's checks go (the CD001 signature at 0x8001),
    `size` bytes of a pattern that differs in every MiB, so that a lost, repeated or reordered
    piece changes the checksum; `sha256` is known once `chunks()` has been read to the end."""

    SIGNATURE_OFFSET = 0x8001
    BLOCK = MB
    PATTERN = bytes(range(256)) * (MB // 256)

    def __init__(self, size: int) -> None:
        assert size >= self.BLOCK, "at least one block"
        self.size = size
        self._hash = hashlib.sha256()
        self.sha256 = ""

    def chunks(self) -> Iterator[bytes]:
        for index, start in enumerate(range(0, self.size, self.BLOCK)):
            block = index.to_bytes(8, "big") + self.PATTERN[8: min(self.BLOCK, self.size - start)]
            if index == 0:
                at = self.SIGNATURE_OFFSET
                block = block[:at] + b"CD001" + block[at + 5:]
            self._hash.update(block)
            yield block
        self.sha256 = self._hash.hexdigest()


def csrf_token(url: str, cookie: str) -> tuple[str, str]:
    """(csrftoken cookie, form token) from the form page at `url`, fetched with `cookie`."""
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=30) as response:
        page = response.read().decode()
        cookies = response.headers.get_all("Set-Cookie") or []
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, f"no CSRF token in the form at {url}"
    for header in cookies:
        if header.startswith("csrftoken="):
            return header.split(";", 1)[0].split("=", 1)[1], match.group(1)
    raise AssertionError(f"{url} set no csrftoken cookie")


class ProcessMemory:
    """Resident memory of process `pid`; `reset_peak()` then `peak()` give the highest since."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")

    def _field(self, name: str) -> int:
        match = re.search(rf"^{name}:\s+(\d+) kB$", self.status.read_text(), re.MULTILINE)
        assert match, f"no {name} in {self.status}"
        return int(match.group(1)) * KB

    def rss(self) -> int:
        return self._field("VmRSS")

    def reset_peak(self) -> None:
        self.clear_refs.write_text("5")  # the kernel's way to reset VmHWM to the current RSS

    def peak(self) -> int:
        return self._field("VmHWM")


@dataclass
class Responsiveness:
    """GETs `url` in a loop in a thread while the `with` block runs (and at least `minimum` times)."""

    url: str
    cookie: str = ""
    minimum: int = 3
    timeout: float = 30.0
    seconds: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def slowest(self) -> float:
        return max(self.seconds, default=0.0)

    def _run(self) -> None:
        while not self._stop.is_set() or len(self.seconds) < self.minimum:
            request = urllib.request.Request(self.url, headers={"Cookie": self.cookie} if self.cookie else {})
            start = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                    self.statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                self.statuses.append(exc.code)
            except OSError as exc:
                self.errors.append(repr(exc))
            self.seconds.append(time.monotonic() - start)
            time.sleep(0.05)

    def __enter__(self) -> Responsiveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout * (self.minimum + 1))
