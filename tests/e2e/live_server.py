"""A real ASGI server for browser tests that need WebSockets (terminal, desktop, web preview).

pytest-django's `live_server` is a WSGI server: it cannot upgrade a connection to a WebSocket.
`asgi_live_server` runs the platform's server (daphne through `python -m webserver.serve`, as
production does) with `labsite.asgi:application` in a subprocess on 127.0.0.1 and a free port,
against the test's own database (the test uses `transactional_db`, so what it writes is
committed and the server sees it). Static files are collected once per test run with the
production (hashed, manifest) storage, so the pages load their assets as they do in production,
ES module imports included. `restart()` stops and starts the server on the same port,
dropping every connection, for tests of reconnecting consoles.

Runners: the server gets the test's LAB_RUNNERS plus whatever the `extra_lab_runners` fixture
returns; a test module overrides that fixture to add, say, a Docker runner with its own
instance label (and cleans it up). Other settings: a test module overrides `extra_server_env`
(environment variables; `{port}` in a value becomes the server's port, e.g.
`LAB_PREVIEW_HOST=localhost:{port}`).

PostgreSQL works as is. SQLite works only with a file-based test database (DATABASE_URL=
sqlite:///… and DATABASE_TEST_NAME=/path/test.sqlite3): an in-memory one cannot be shared with
another process, and the fixture fails saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 40


@dataclass
class AsgiServer:
    """daphne serving labsite.asgi:application; `restart()` drops every connection, as a deploy does."""

    host: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    module: str = "webserver.serve"  # bench/upload_memory.py also runs plain "daphne", for comparison

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "-b", self.host, "-p", str(self.port), "labsite.asgi:application"],
                cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        _wait_until_serving(self)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def shared_database_url() -> str:
    """DATABASE_URL for the database the running test uses (the test database, not the real one)."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "postgresql":
        user = quote(str(db.get("USER") or ""), safe="")
        password = quote(str(db.get("PASSWORD") or ""), safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(db.get("HOST") or "")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{credentials}{host}{port}/{quote(str(db['NAME']), safe='')}"
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            pytest.fail(
                "the ASGI live server shares the test database with a subprocess; an in-memory SQLite "
                "test database cannot be shared. Run on PostgreSQL (DATABASE_URL=postgres://…), or on a "
                "SQLite file: DATABASE_URL=sqlite:///var/db.sqlite3 DATABASE_TEST_NAME=/tmp/test_labs.sqlite3"
            )
        return f"sqlite:///{Path(str(db['NAME'])).resolve()}"
    pytest.fail(f"the ASGI live server does not know how to share a {connection.vendor} database")


def set_server_password(user: Any, raw_password: str) -> None:
    """Store the password with a hasher the server knows.

    The tests hash with MD5 for speed (conftest.py), but the server subprocess runs with the
    production PASSWORD_HASHERS, which cannot check an MD5 hash: signing in would fail.
    """
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(raw_password, hasher.salt())
    user.save(update_fields=["password"])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory) -> Path:
    """collectstatic once per run, with the hashed manifest storage production uses."""
    root = tmp_path_factory.mktemp("asgi-static")
    env = {**os.environ, "LAB_STATIC_ROOT": str(root), "LAB_MANIFEST_STATIC": "true", "DJANGO_DEBUG": "false"}
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"collectstatic failed:\n{result.stdout}\n{result.stderr}")
    return root


@pytest.fixture
def extra_lab_runners() -> dict[str, Any]:
    """Runners the server needs beyond the test's own; override in a test module."""
    return {}


@pytest.fixture
def extra_server_env() -> dict[str, str]:
    """Environment variables the server needs beyond the defaults; override in a test module."""
    return {}


def _wait_until_serving(server: AsgiServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    last_error = ""
    while time.monotonic() < deadline:
        if server.process is None or server.process.poll() is not None:
            code = server.process.returncode if server.process else None
            pytest.fail(f"daphne exited with {code}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/accounts/login/", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.2)
    pytest.fail(f"daphne did not answer within {START_TIMEOUT_SECONDS} s ({last_error}):\n{server.log_tail()}")


@pytest.fixture
def asgi_live_server(
    transactional_db, settings, collected_static, extra_lab_runners, extra_server_env, tmp_path, request
) -> Iterator[AsgiServer]:
    from runners import reset_cache

    # The test process and the server must agree on the runners (the test may stop sessions itself).
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, **extra_lab_runners}
    reset_cache()

    host = "127.0.0.1"
    port = free_port(host)
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_TEST_NAME"}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "labsite.settings",
            "DATABASE_URL": shared_database_url(),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_DEBUG": "false",
            "LAB_DATA_DIR": str(settings.DATA_DIR),
            "LAB_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "LAB_STATIC_ROOT": str(collected_static),
            "LAB_MANIFEST_STATIC": "true",
            "LAB_RUNNERS": json.dumps(settings.LAB_RUNNERS),
            "LAB_RQ_ASYNC": "false",  # no worker here: jobs run inside the server's requests
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({name: value.replace("{port}", str(port)) for name, value in extra_server_env.items()})
    server = AsgiServer(host=host, port=port, env=env, log_path=tmp_path / "daphne.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        # Keep the server's log next to the screenshots when the test failed.
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            from tests.e2e.conftest import ARTIFACTS

            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(server.log_path, ARTIFACTS / f"{request.node.name}-daphne.log")
        reset_cache()


@contextlib.contextmanager
def docker_runner_for_server(instance: str) -> Iterator[dict[str, Any]]:
    """LAB_RUNNERS entries for a live server: a Docker runner whose containers carry their own
    `instance` label, every one of them removed afterwards. A missing engine fails the test."""
    import docker

    from runners.docker import DockerRunner

    try:
        docker.from_env().ping()
    except Exception as exc:
        pytest.fail(f"the Docker engine is required for these tests: {exc}")
    options = {"instance": instance}
    try:
        yield {"docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": options}}
    finally:
        runner = DockerRunner("docker", options)
        for env in runner.list_managed():
            runner.remove_managed(env)
