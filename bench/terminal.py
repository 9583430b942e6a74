"""Browser terminal: what the platform's WebSocket path adds to a Docker shell.

A real daphne server (the platform's ASGI app, in a subprocess on 127.0.0.1) and a session on
the Docker runner; a WebSocket client (the `websockets` package) speaks the terminal protocol
like the browser does (binary keystrokes, acks every 64 KiB or 100 ms). In the same run, the
baseline talks to a TTY `docker exec` socket directly. Figures:

  keystroke round trip   one byte to `cat` in raw mode and back, p50/p99 (target: ≤ 0.5 ms added
                         at p50, ≤ 5 ms added at p99)
  bulk output            MB/s of `tr '\\0' y </dev/zero | head -c N` (flow control on, acking)
  keystroke under flood  echo of a key typed into a second terminal of the same session while the
                         first floods, read by another client process (the server stays
                         interactive; target p99 < 50 ms), and into the flooding terminal itself
                         (the echo queues behind output in flight)
  memory                 daphne's RSS with N idle terminals open minus with none, per terminal
                         (target ≤ 1 MB)

The session runs labs/base:bookworm by default, as the demo labs do: its shells live in tmux, so
the platform's figures include tmux, and the direct baseline is a plain `sh` exec. `--image
labs/busybox:latest` measures the platform's path without tmux. Killed, the bench still removes its
session.

    .venv/bin/python bench/terminal.py [--keys 400] [--bulk-mb 30] [--idle 50] [--image REF]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_IMAGE = "labs/base:bookworm"  # like the demo labs: bash, tmux (the platform's re-attachable shells)
RAW_CAT = b"stty raw -echo; cat\n"
FLOOD = b"tr '\\0' y </dev/zero\n"


# ---- set-up -----------------------------------------------------------------------------------
def setup_django(data_dir: str) -> None:
    os.environ["LAB_DATA_DIR"] = data_dir
    # An instance label of our own: reconciliation run by anything else on this engine must not
    # take the benchmark's container (unknown to its database) for an orphan.
    os.environ["LAB_RUNNERS"] = json.dumps({"docker": {"BACKEND": "runners.docker.DockerRunner",
                                                       "OPTIONS": {"instance": f"labsbench{uuid.uuid4().hex[:6]}"}}})
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["LAB_EMBEDDED_JOBS"] = "inline"  # measure the job itself, not a thread hand-off
    os.environ["DJANGO_SETTINGS_MODULE"] = "labsite.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_session(image_ref: str) -> tuple[Any, str]:
    """A running Docker session on `image_ref` and a session cookie for its owner."""
    from django.contrib.auth.models import User
    from django.test import Client

    from labs.models import Image, Lab
    from sessions_app import actions
    from sessions_app.models import State

    user = User.objects.create_user(f"bench-{uuid.uuid4().hex[:6]}", password=uuid.uuid4().hex)
    image, _ = Image.objects.get_or_create(name="bench-image", defaults={"reference": image_ref})
    lab = Lab.objects.create(slug=f"bench-{uuid.uuid4().hex[:8]}", title="bench", image=image, runner="docker",
                             memory_mb=256, pids_limit=512, network_mode="none", published=True,
                             consoles=["terminal"])
    session = actions.start_session(user, lab)  # not in a transaction: the job runs inline now
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    client = Client()
    client.force_login(user)
    return session, client.cookies["sessionid"].value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_daphne(data_dir: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LAB_DATA_DIR": data_dir, "DJANGO_SETTINGS_MODULE": "labsite.settings",
           "LAB_LOG_LEVEL": "WARNING", "LAB_MANIFEST_STATIC": "false"}
    process = subprocess.Popen([str(ROOT / ".venv/bin/python"), "-m", "webserver.serve", "-b", "127.0.0.1",
                                "-p", str(port), "labsite.asgi:application"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit("daphne exited during start-up") from None
            time.sleep(0.1)
    process.kill()
    raise SystemExit("daphne did not start listening")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched_seconds(pid: int) -> tuple[float, float]:
    """(time on a CPU, time waiting on the run queue) of all a process's threads so far: waiting
    time shows how much of a latency comes from a machine busy with other work."""
    ran = waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        ran += int(fields[0])
        waited += int(fields[1])
    return ran / 1e9, waited / 1e9


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# ---- two ways to reach a shell, with one interface ---------------------------------------------
class PlatformTerminal:
    """The browser's view: the platform's WebSocket, acknowledging output like static/js/terminal.js
    (once 64 KiB are unacknowledged, or 100 ms after the first unacknowledged byte)."""

    ACK_BYTES = 64 * 1024
    ACK_SECONDS = 0.1

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.unacked = 0
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, port: int, session_id: str, cookie: str, name: str) -> PlatformTerminal:
        from websockets.asyncio.client import connect

        ws = await connect(f"ws://127.0.0.1:{port}/ws/sessions/{session_id}/terminal/?name={name}&cols=80&rows=24",
                           origin=f"http://127.0.0.1:{port}", additional_headers={"Cookie": f"sessionid={cookie}"},
                           compression=None, max_size=None, proxy=None, ping_interval=None)
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        return cls(ws)

    def _ack_later(self) -> None:
        self.timer = None
        asyncio.get_running_loop().create_task(self._ack())

    async def _ack(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.unacked:
            count, self.unacked = self.unacked, 0
            await self.ws.send(json.dumps({"type": "ack", "bytes": count}))

    async def recv(self) -> bytes:
        while True:
            message = await self.ws.recv()
            if isinstance(message, bytes):
                self.unacked += len(message)
                if self.unacked >= self.ACK_BYTES:
                    await self._ack()
                elif self.timer is None:
                    self.timer = asyncio.get_running_loop().call_later(self.ACK_SECONDS, self._ack_later)
                return message

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        await self.ws.close()


class DirectTerminal:
    """The baseline: the TTY `docker exec` socket itself, read with the same asyncio loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)

    @classmethod
    async def open(cls, container_id: str) -> DirectTerminal:
        import docker

        api = docker.from_env().api
        exec_id = api.exec_create(container_id, ["sh"], stdin=True, tty=True,
                                  environment={"TERM": "xterm-256color"})["Id"]
        raw = api.exec_start(exec_id, socket=True, tty=True)
        sock = getattr(raw, "_sock", raw)
        sock.settimeout(None)
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            raise EOFError
        return data

    async def close(self) -> None:
        self.sock.close()


Terminal = PlatformTerminal | DirectTerminal


async def read_until(terminal: Terminal, needle: bytes, timeout: float = 30) -> int:
    """Read until `needle`; return the bytes read."""
    total = 0
    tail = b""
    async with asyncio.timeout(timeout):
        while needle not in tail:
            data = await terminal.recv()
            total += len(data)
            tail = tail[-len(needle):] + data
    return total


async def drain(terminal: Terminal, quiet: float = 0.3) -> None:
    while True:
        try:
            async with asyncio.timeout(quiet):
                await terminal.recv()
        except TimeoutError:
            return


# ---- measurements -----------------------------------------------------------------------------
async def raw_cat(terminal: Terminal) -> None:
    """Put `cat` in raw mode on the terminal: it echoes each byte as soon as it comes."""
    await terminal.send(RAW_CAT)
    await drain(terminal)


async def one_key(terminal: Terminal, key: bytes) -> float:
    began = time.perf_counter()
    await terminal.send(key)
    async with asyncio.timeout(30):  # a lost echo is a failure to report, not a hang
        while key not in await terminal.recv():
            pass
    return time.perf_counter() - began


def stage(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


async def keystroke_rtts(terminals: list[Terminal], count: int) -> list[list[float]]:
    """Round trips of single bytes, alternating between the terminals key by key, so that load on
    the machine (other processes, CPU frequency) falls on every path alike."""
    for terminal in terminals:
        await raw_cat(terminal)
    samples: list[list[float]] = [[] for _ in terminals]
    keys = b"abcdefghijklmnopqrstuvwxyz"
    for index in range(count + 20):
        key = keys[index % len(keys):][:1]
        for which, terminal in enumerate(terminals):
            took = await one_key(terminal, key)
            if index >= 20:  # warm-up
                samples[which].append(took)
    return samples


async def bulk_mb_per_s(terminal: Terminal, megabytes: int) -> float:
    """MB of output the shell wrote per second, until the browser's side has seen the end. The
    bytes produced, not those received: tmux (the platform's shells) repaints the screen rather than
    relaying every byte, so a terminal behind it receives fewer bytes for the same output."""
    await terminal.send(b"stty sane\n")
    await drain(terminal)
    command = f"tr '\\0' y </dev/zero | head -c {megabytes * 1_000_000}; echo; echo BULK-$((40+2))\n".encode()
    began = time.perf_counter()
    await terminal.send(command)
    await read_until(terminal, b"BULK-42", timeout=600)
    return megabytes / (time.perf_counter() - began)


async def keys_into_the_flood(flooding: Terminal, count: int) -> list[float]:
    """Echo times of keys typed into a terminal while it floods: the TTY echoes each key into the
    output stream, behind whatever output is already in flight."""
    await flooding.send(FLOOD)
    await asyncio.sleep(1.0)  # the flood fills every buffer on the way
    samples = []
    for index in range(count):
        samples.append(await one_key(flooding, b"QWXZK"[index % 5:][:1]))
        await asyncio.sleep(0.05)
    await flooding.send(b"\x03")
    await drain(flooding, quiet=1.0)
    return samples


async def keys_beside_a_flood(worker_args: list[str], typing: Terminal, count: int) -> list[float]:
    """Echo times of keys typed into `typing` while another terminal of the session floods. The
    flood is read by a separate client process (as by another browser tab), so that what is
    measured is the server, not this process's own reading of the flood."""
    worker = await asyncio.create_subprocess_exec(sys.executable, __file__, "--flood-worker", *worker_args,
                                                  stdout=asyncio.subprocess.PIPE)
    assert worker.stdout is not None
    assert (await worker.stdout.readline()).startswith(b"flooding"), "the flood worker did not start"
    samples = []
    keys = b"abcdefghijklmnopqrstuvwxyz"
    for index in range(count):
        samples.append(await one_key(typing, keys[index % len(keys):][:1]))
        await asyncio.sleep(0.01)
    assert worker.stdin is None
    worker.terminate()
    await worker.wait()
    return samples


async def flood_worker(kind: str, *params: str) -> None:
    """Child process: open a terminal, flood it and read everything until terminated."""
    terminal: Terminal
    if kind == "platform":
        port, session_id, cookie = params
        terminal = await PlatformTerminal.open(int(port), session_id, cookie, "flood")
    else:
        terminal = await DirectTerminal.open(params[0])
    await drain(terminal)
    await terminal.send(FLOOD)
    loop = asyncio.get_running_loop()
    started = loop.time()
    announced = False
    while True:
        await terminal.recv()
        if not announced and loop.time() - started > 1.0:
            print("flooding", flush=True)
            announced = True


async def idle_memory(pid: int, open_one: Callable[[str], Awaitable[PlatformTerminal]], count: int) -> tuple[int, int]:
    """daphne's RSS with none and with `count` idle terminals open."""
    warm = await open_one("warm")  # the first terminal loads code; not part of the per-terminal cost
    await drain(warm)
    await warm.close()
    await asyncio.sleep(1.0)
    before = rss_bytes(pid)
    opened = []
    for index in range(count):
        terminal = await open_one(f"idle-{index}")
        opened.append(terminal)
    for terminal in opened:
        await drain(terminal, quiet=0.05)
    await asyncio.sleep(2.0)
    after = rss_bytes(pid)
    for terminal in opened:
        await terminal.close()
    return before, after


# ---- report -----------------------------------------------------------------------------------
def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def run(args: argparse.Namespace, port: int, pid: int, session: Any, cookie: str) -> None:
    container = session.runner_state["container_id"]
    session_id = str(session.pk)

    async def platform(name: str) -> PlatformTerminal:
        return await PlatformTerminal.open(port, session_id, cookie, name)

    async def direct(_name: str = "") -> DirectTerminal:
        return await DirectTerminal.open(container)

    print(f"terminal benchmark: daphne on 127.0.0.1:{port}, Docker session on {args.image}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start")

    # Keystrokes: one platform and one direct terminal, key by key in turn.
    stage(f"{args.keys} keystroke round trips on each side")
    pair = [await platform("keys"), await direct()]
    cpu_before = cpu_seconds(pid)
    sched_before = sched_seconds(pid)
    keys_platform, keys_direct = await keystroke_rtts(pair, args.keys)
    cpu_per_key = (cpu_seconds(pid) - cpu_before) / (args.keys + 20)
    sched_keys = [after - before for after, before in zip(sched_seconds(pid), sched_before, strict=True)]
    keys = {"platform": keys_platform, "direct": keys_direct}
    for terminal in pair:
        await terminal.close()

    stage(f"bulk output: {args.bulk_rounds} × {args.bulk_mb} MB on each side")
    bulk: dict[str, list[float]] = {"platform": [], "direct": []}
    bulk_cpu = 0.0
    for _round in range(args.bulk_rounds):
        for label, opener in (("platform", platform), ("direct", direct)):
            terminal = await opener("bulk")
            await drain(terminal)
            cpu_before = cpu_seconds(pid)
            bulk[label].append(await bulk_mb_per_s(terminal, args.bulk_mb))
            if label == "platform":
                bulk_cpu += cpu_seconds(pid) - cpu_before
            await terminal.close()

    flood_other: dict[str, list[float]] = {}
    flood_same: dict[str, list[float]] = {}
    workers = {"platform": ["platform", str(port), session_id, cookie], "direct": ["direct", container]}
    sched_flood = [0.0, 0.0]
    # Behind tmux a key echoed into a flood can scroll away between two repaints and never reach the
    # browser: that case is only measured where the platform's shells are plain (no tmux in the image).
    behind_tmux = subprocess.run(["docker", "exec", container, "sh", "-c", "command -v tmux"],
                                 capture_output=True, check=False).returncode == 0
    stage(f"keys during a flood: {args.flood_keys} per case")
    for label, opener in (("platform", platform), ("direct", direct)):
        typing = await opener("typing")
        await raw_cat(typing)
        sched_before = sched_seconds(pid)
        flood_other[label] = await keys_beside_a_flood(workers[label], typing, args.flood_keys)
        if label == "platform":
            sched_flood = [after - before for after, before in zip(sched_seconds(pid), sched_before, strict=True)]
        await typing.close()
        if label == "platform" and behind_tmux:
            continue
        flooding = await opener("flood-same")
        await drain(flooding)
        flood_same[label] = await keys_into_the_flood(flooding, args.flood_keys)
        await flooding.close()

    stage(f"memory: {args.idle} idle terminals")
    before, after = await idle_memory(pid, platform, args.idle)

    def row(name: str, p: float, d: float, unit: str, target: str = "") -> None:
        ratio = p / d if d else float("nan")
        print(f"  {name:<44} {p:9.3f} {d:9.3f} {unit:<5} {ratio:6.2f}×  {p - d:+8.3f} {unit:<5} {target}")

    print()
    print(f"  {'':<44} {'platform':>9} {'direct':>9} {'':<5} {'ratio':>7}  {'added':>8}")
    row("keystroke round trip p50", pct(keys["platform"], 0.5), pct(keys["direct"], 0.5), "ms",
        "target: ≤ +0.5 ms")
    row("keystroke round trip p99", pct(keys["platform"], 0.99), pct(keys["direct"], 0.99), "ms",
        "target: ≤ +5 ms")
    row("bulk output (median of rounds)", statistics.median(bulk["platform"]), statistics.median(bulk["direct"]),
        "MB/s")
    row("key in a 2nd terminal during a flood, p50", pct(flood_other["platform"], 0.5),
        pct(flood_other["direct"], 0.5), "ms")
    row("key in a 2nd terminal during a flood, p99", pct(flood_other["platform"], 0.99),
        pct(flood_other["direct"], 0.99), "ms", "target: < 50 ms")
    if "platform" in flood_same:
        row("key in the flooding terminal, p50", pct(flood_same["platform"], 0.5), pct(flood_same["direct"], 0.5),
            "ms")
        row("key in the flooding terminal, p99", pct(flood_same["platform"], 0.99),
            pct(flood_same["direct"], 0.99), "ms")
    else:
        print("  key in the flooding terminal: not measured behind tmux (its echo can scroll away between repaints)")
    print(f"  daphne CPU time: {cpu_per_key * 1e6:.0f} µs per keystroke round trip (echo frame and ack included), "
          f"{bulk_cpu / (args.bulk_rounds * args.bulk_mb) * 1000:.1f} ms per MB of output")
    print(f"  daphne waited on the run queue {sched_keys[1]:.2f} s for {sched_keys[0]:.2f} s on a CPU during the "
          f"keystrokes, {sched_flood[1]:.2f} s for {sched_flood[0]:.2f} s during the 2nd-terminal flood "
          "(time lost to other work on the machine)")
    per = (after - before) / args.idle
    print(f"  daphne RSS: {before / 2**20:.1f} MiB with no terminal, {after / 2**20:.1f} MiB with {args.idle} idle "
          f"terminals: {per / 2**20:.3f} MiB per terminal (target: ≤ 1 MiB)")
    print(f"  samples: {len(keys['platform'])} keystrokes per side, {args.bulk_rounds} × {args.bulk_mb} MB bulk, "
          f"{args.flood_keys} keys per flood case; load average {os.getloadavg()[0]:.1f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000, help="keystroke round trips per side")
    parser.add_argument("--bulk-mb", type=int, default=20)
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--flood-keys", type=int, default=100)
    parser.add_argument("--idle", type=int, default=50, help="idle terminals for the memory figure")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"the session's image (default {DEFAULT_IMAGE})")
    parser.add_argument("--flood-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_worker:
        asyncio.run(flood_worker(*args.flood_worker))
        return
    # Killed (Ctrl-C, `kill`, a CI timeout): unwind through the finally blocks, which remove the session.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as data_dir:
        setup_django(data_dir)
        session, cookie = start_session(args.image)
        try:
            port = free_port()
            daphne = start_daphne(data_dir, port)
            try:
                asyncio.run(run(args, port, daphne.pid, session, cookie))
            finally:
                daphne.terminate()
                try:
                    daphne.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daphne.kill()
        finally:
            from sessions_app import actions

            actions.stop_session(session)  # the job runs inline: the container is gone when this returns


if __name__ == "__main__":
    main()
