"""Session event streams (SSE): what open streams cost daphne, and how fast a notice reaches them.

A real daphne (the platform's ASGI app in a subprocess, as run.sh serves it) with N session pages'
event streams open (/sessions/<id>/stream/, one session each, every stream its own connection),
against a baseline measured in the same run: N plain keep-alive HTTP connections to the same server
that have each fetched /healthz and sit idle (what a connection costs daphne by itself). Figures:

  memory     daphne's RSS growth per open stream and per idle connection (and the ratio)
  threads    daphne's threads with no stream and with N (a thread per stream would show here)
  fds        open descriptors per stream
  fan-out    with Redis (--redis URL): one state change of each session made by this process
             (another process, as a worker's job is) until its stream sends it: median, p99, max

    .venv/bin/python bench/sse_streams.py [--streams 200] [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from terminal import free_port, rss_bytes, start_daphne  # noqa: E402  (bench/ is the script's own directory)


def setup_django(data_dir: str, redis_url: str | None) -> None:
    os.environ["LAB_DATA_DIR"] = data_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    if redis_url:
        os.environ["REDIS_URL"] = redis_url  # the channel layer: notices cross processes
    os.environ["DJANGO_SETTINGS_MODULE"] = "labsite.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_sessions(count: int) -> tuple[list[str], str]:
    """`count` provisioning sessions of one learner (rows only: a stream reads the database) and
    the learner's session cookie."""
    from django.contrib.auth.models import User
    from django.test import Client

    from labs.models import Image, Lab
    from sessions_app.models import Session, State

    user = User.objects.create_user(f"bench-{uuid.uuid4().hex[:6]}", password=uuid.uuid4().hex)
    image, _ = Image.objects.get_or_create(name="bench-sse", defaults={"reference": "labs/busybox:latest"})
    lab = Lab.objects.create(slug=f"bench-{uuid.uuid4().hex[:8]}", title="bench", image=image, published=True)
    sessions = Session.objects.bulk_create(
        Session(user=user, lab=lab, state=State.PROVISIONING, runner_name="docker") for _ in range(count))
    for session in sessions:
        session.log("Provisioning on the docker runner.")
    client = Client()
    client.force_login(user)
    return [str(session.pk) for session in sessions], client.cookies["sessionid"].value


class Connection:
    """A raw HTTP/1.1 connection that reads only when asked (so hundreds can stay open at once)."""

    def __init__(self, port: int, path: str, cookie: str, accept: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n"
                          f"Cookie: sessionid={cookie}\r\nConnection: keep-alive\r\n\r\n".encode())
        self.buffer = b""

    def read_until(self, needle: bytes, timeout: float = 30) -> None:
        self.sock.settimeout(timeout)
        while needle not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"closed before {needle!r}")
            self.buffer += data
        self.buffer = self.buffer.split(needle, 1)[1]

    def close(self) -> None:
        self.sock.close()


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def settled_rss(pid: int) -> int:
    time.sleep(1.5)
    return rss_bytes(pid)


def fan_out(streams: list[tuple[str, Connection]]) -> list[float]:
    """Seconds from each session's change in this process to its stream's state event."""
    from sessions_app.models import Session, State

    delays = []
    for session_id, stream in streams:
        session = Session.objects.get(pk=session_id)
        began = time.perf_counter()
        session.transition(State.STOPPING)
        stream.read_until(b'"state":"stopping"', timeout=30)
        delays.append(time.perf_counter() - began)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--redis", help="a Redis database of the bench's own, for the fan-out figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        setup_django(data_dir, args.redis)
        session_ids, cookie = make_sessions(args.streams + 1)
        port = free_port()
        daphne = start_daphne(data_dir, port)
        try:
            pid = daphne.pid
            # Warm up: the first stream and the first plain request load code.
            warm = Connection(port, f"/sessions/{session_ids[-1]}/stream/", cookie, "text/event-stream")
            warm.read_until(b"event: state")
            ping = Connection(port, "/healthz", cookie, "text/plain")
            ping.read_until(b"ok")
            base_rss = settled_rss(pid)
            base_threads, base_fds = threads_and_fds(pid)

            idle = []
            for _ in range(args.streams):
                connection = Connection(port, "/healthz", cookie, "text/plain")
                connection.read_until(b"ok")
                idle.append(connection)
            idle_rss = settled_rss(pid)
            for connection in idle:
                connection.close()
            after_idle = settled_rss(pid)

            streams = []
            for session_id in session_ids[:args.streams]:
                stream = Connection(port, f"/sessions/{session_id}/stream/", cookie, "text/event-stream")
                stream.read_until(b"event: state")
                streams.append((session_id, stream))
            stream_rss = settled_rss(pid)
            stream_threads, stream_fds = threads_and_fds(pid)
            delays = fan_out(streams) if args.redis else []
            for _, stream in streams:
                stream.close()

            per_idle = (idle_rss - base_rss) / args.streams
            per_stream = (stream_rss - after_idle) / args.streams
            layer = f"Redis {args.redis}" if args.redis else "no Redis"
            print(f"SSE streams: daphne on 127.0.0.1:{port} (SQLite, {layer}), {args.streams} streams, "
                  f"{os.cpu_count()} cores")
            print(f"  memory per open stream      {per_stream / 1024:8.1f} KiB")
            print(f"  memory per idle connection  {per_idle / 1024:8.1f} KiB (baseline: keep-alive after /healthz)")
            if per_idle > 0:
                print(f"  ratio stream / connection   {per_stream / per_idle:8.2f}×")
            print(f"  daphne threads              {base_threads} with one stream, {stream_threads} with {args.streams} "
                  f"(+{stream_threads - base_threads})")
            print(f"  descriptors per stream      {(stream_fds - base_fds) / args.streams:8.2f}")
            if delays:
                ordered = sorted(delays)
                p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
                print(f"  change → its stream's event {statistics.median(delays) * 1000:6.1f} ms median, "
                      f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms (through Redis, one at a time)")
            else:
                print("  fan-out: not measured (give --redis: without Redis a change in another process reaches a "
                      "stream only at its re-read, LAB_STREAM_RECHECK_SECONDS)")
            print(f"  daphne RSS                  {base_rss / 2**20:.1f} MiB with one stream, "
                  f"{stream_rss / 2**20:.1f} MiB with {args.streams}")
        finally:
            daphne.terminate()
            try:
                daphne.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daphne.kill()


if __name__ == "__main__":
    main()
