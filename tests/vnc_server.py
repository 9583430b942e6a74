"""Real servers for the graphical console tests and benchmark.

- `running_vnc_server()`: Xvfb with a red root window, served by x11vnc over TCP on
  127.0.0.1 or over a unix socket (Debian packages `xvfb`, `x11vnc`, `x11-xserver-utils`).
- `live_platform()`: a real daphne process on 127.0.0.1 serving the VNC bridge, with its own
  SQLite database holding one signed-in user and a running session for each VNC endpoint
  given. `python -m tests.vnc_server seed` is the seeding step it runs.
- `build_vnc_application()`: the WebSocket stack of labsite/asgi.py (origin check, cookie
  auth) around the VNC consumer alone; `tests.vnc_server:vnc_only_application` is the same
  application for daphne's command line.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VNC_PATH = "ws/sessions/{pk}/vnc/"
RFB_VERSION = b"RFB 003.008\n"


class VncServerUnavailable(RuntimeError):
    """A program the real VNC server needs is missing or did not start."""


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class VncServer:
    endpoint: dict[str, Any]  # what a runner stores in session.endpoints["vnc"]
    width: int
    height: int
    display: int
    log_path: Path


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise VncServerUnavailable(
            f"missing {', '.join(missing)}: apt-get install -y xvfb x11vnc x11-xserver-utils"
        )


def _start_xvfb(width: int, height: int, log) -> tuple[subprocess.Popen, int]:
    read_fd, write_fd = os.pipe()
    try:
        # -displayfd: Xvfb picks a free display number itself and writes it to the pipe.
        screen = f"{width}x{height}x24"
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=log, stderr=log,
        )
        os.close(write_fd)
        # -noreset: otherwise the server resets, and loses the painting, when xsetroot disconnects.
        # Xvfb writes the number and the newline separately, and dies if the pipe is gone in between.
        reported, deadline = b"", time.monotonic() + 15
        while not reported.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_fd, 32) if ready else b""
            if not chunk:
                break
            reported += chunk
        number = reported.decode().strip()
    finally:
        os.close(read_fd)
    if not number.isdigit():
        xvfb.kill()
        raise VncServerUnavailable("Xvfb did not report a display number")
    return xvfb, int(number)


def _wait_for_rfb(endpoint: dict[str, Any], process: subprocess.Popen, deadline: float) -> None:
    """Wait until the VNC server greets a client with its RFB version."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VncServerUnavailable(f"x11vnc exited with {process.returncode}")
        try:
            if "unix" in endpoint:
                probe = socket.socket(socket.AF_UNIX)
                probe.settimeout(2)
                probe.connect(endpoint["unix"])
            else:
                probe = socket.create_connection((endpoint["host"], endpoint["port"]), timeout=2)
            with probe:
                if probe.recv(12).startswith(b"RFB "):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise VncServerUnavailable("x11vnc did not answer in time")


@contextmanager
def running_vnc_server(
    workdir: Path, *, unix: bool = False, width: int = 640, height: int = 480
) -> Iterator[VncServer]:
    """An X display painted red, served by x11vnc without a password; stopped on exit."""
    _need("Xvfb", "x11vnc", "xsetroot")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "vnc-server.log"
    sock_dir = Path(tempfile.mkdtemp(prefix="vnc-")) if unix else None  # short path: sun_path is 108 bytes
    processes: list[subprocess.Popen] = []
    with open(log_path, "ab") as log:
        try:
            xvfb, display = _start_xvfb(width, height, log)
            processes.append(xvfb)
            env = {**os.environ, "DISPLAY": f":{display}"}
            if subprocess.run(["xsetroot", "-solid", "red"], env=env, timeout=15, stdout=log, stderr=log).returncode:
                raise VncServerUnavailable(f"xsetroot could not paint display :{display}; see {log_path}")
            common = ["x11vnc", "-display", f":{display}", "-forever", "-shared", "-nopw", "-quiet"]
            if sock_dir is not None:
                endpoint: dict[str, Any] = {"unix": str(sock_dir / "vnc.sock")}
                args = [*common, "-rfbport", "0", "-unixsock", endpoint["unix"]]
            else:
                endpoint = {"host": "127.0.0.1", "port": free_tcp_port()}
                args = [*common, "-localhost", "-rfbport", str(endpoint["port"])]
            x11vnc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
            processes.append(x11vnc)
            _wait_for_rfb(endpoint, x11vnc, time.monotonic() + 20)
            yield VncServer(endpoint=endpoint, width=width, height=height, display=display, log_path=log_path)
        finally:
            for process in reversed(processes):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if sock_dir is not None:
                shutil.rmtree(sock_dir, ignore_errors=True)


def build_vnc_application() -> Any:
    """The platform's WebSocket stack (origin check, cookie auth) around the VNC route alone."""
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from django.urls import path

    from consoles.consumers import VncConsumer
    from labsite.hosts import platform_origin_validator

    return platform_origin_validator(
        AuthMiddlewareStack(URLRouter([path("ws/sessions/<uuid:pk>/vnc/", VncConsumer.as_asgi())]))
    )


def __getattr__(name: str) -> Any:
    # daphne imports "tests.vnc_server:vnc_only_application" before Django is set up.
    if name == "vnc_only_application":
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
        django.setup()
        return build_vnc_application()
    raise AttributeError(name)


@dataclass
class LivePlatform:
    port: int
    session_ids: dict[str, str]  # one running session per named VNC endpoint
    cookie: str  # "name=value", for the Cookie header of the sessions' owner
    process: subprocess.Popen
    log_path: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, name: str) -> str:
        return "/" + VNC_PATH.format(pk=self.session_ids[name])

    def url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path(name)}"


def _platform_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DATABASE_TEST_NAME", "REDIS_URL"}}
    env.update({
        "LAB_DATA_DIR": str(data_dir),  # its own SQLite file: the test database lives in another process
        "DJANGO_SETTINGS_MODULE": "labsite.settings",
        "DJANGO_DEBUG": "false",
        "PYTHONPATH": str(ROOT),
    })
    return env


@contextmanager
def live_platform(
    log_dir: Path, vnc_endpoints: dict[str, dict[str, Any]], app: str = "tests.vnc_server:vnc_only_application"
) -> Iterator[LivePlatform]:
    """daphne serving `app` on 127.0.0.1, with one running session per named VNC endpoint.

    The database lives in a scratch directory on /dev/shm where there is one (migrating a fresh
    SQLite file on a busy disk takes many seconds); daphne's log goes to `log_dir`.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="vnc-live-", dir=shm if shm.is_dir() else None))
    try:
        yield from _serve(scratch, log_dir / "daphne.log", vnc_endpoints, app)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _serve(scratch: Path, log_path: Path, vnc_endpoints: dict[str, dict[str, Any]], app: str) -> Iterator[LivePlatform]:
    env = _platform_env(scratch)
    seeded = subprocess.run(
        [sys.executable, "-m", "tests.vnc_server", "seed", json.dumps(vnc_endpoints)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if seeded.returncode != 0:
        raise RuntimeError(f"seeding the live platform failed:\n{seeded.stderr}")
    facts = json.loads(seeded.stdout.strip().splitlines()[-1])
    port = free_tcp_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "webserver.serve", "-b", "127.0.0.1", "-p", str(port), app],
            env=env, cwd=ROOT, stdout=log, stderr=log,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daphne exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("daphne did not start listening in time")
            time.sleep(0.1)
        yield LivePlatform(port=port, session_ids=facts["session_ids"], cookie=facts["cookie"],
                           process=process, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seed(vnc_endpoints: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Migrate a fresh database; add a user, a lab and a running session per named endpoint."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
    django.setup()
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from labs.models import Image, Lab
    from sessions_app.models import Session, State

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("vnc-owner", "vnc-owner@example.com", "unused-password-1")
    image = Image.objects.create(name="vnc-desktop", kind=Image.Kind.CONTAINER, reference="labs/desktop:test")
    lab = Lab.objects.create(slug="vnc-desktop", title="Desktop", image=image, runner="fake",
                             consoles=["vnc"], published=True)
    now = timezone.now()
    session_ids = {}
    for name, endpoint in vnc_endpoints.items():
        session = Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name="fake",
                                         endpoints={"vnc": endpoint}, started_at=now,
                                         expires_at=now + timedelta(hours=2))
        session_ids[name] = str(session.pk)
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    return {"session_ids": session_ids, "cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed LAB_DATA_DIR's database for a live VNC bridge.")
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed", help="migrate the database and add running sessions")
    seeding.add_argument("endpoints", help='JSON, e.g. {"desktop": {"host": "127.0.0.1", "port": 5900}}')
    args = parser.parse_args()
    if args.command == "seed":
        print(json.dumps(seed(json.loads(args.endpoints))))


if __name__ == "__main__":
    main()
