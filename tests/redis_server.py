"""A Redis server of the test's own, for outage tests: killed and restarted at will, never the
machine's Redis on 6379 (other test runs use that one at the same time).

`redis_server` starts `redis-server` on a free port with no persistence, so a restart comes
back empty, as a Redis without a disk does; it is stopped after the test. `queues_on_own_redis`
points the RQ queues (and REDIS_URL) of this process at it: jobs wait there for a worker
(`ASYNC`), as in production. `rq_worker` starts `manage.py run_worker` against the test's
database and that server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    from tests.e2e.live_server import free_port as pick

    return pick()


def wait_until(condition: Any, timeout: float, message: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something true; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{message} (waited {timeout:g} s)")
        time.sleep(interval)


@dataclass
class RedisServer:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)

    def answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is needed for the Redis outage tests (apt-get install redis-server)")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.data_dir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, 10, f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no goodbye to the clients."""
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), data_dir=tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def queues_on_own_redis(settings, redis_server) -> RedisServer:
    """This process queues jobs on `redis_server`, where they wait for a worker."""
    settings.REDIS_URL = redis_server.url
    settings.RQ_ASYNC = True
    settings.RQ_QUEUES = {name: {**config, "URL": redis_server.url, "ASYNC": True}
                          for name, config in settings.RQ_QUEUES.items()}
    return redis_server


@pytest.fixture
def queue_down(queues_on_own_redis) -> RedisServer:
    """The RQ queues of this process point at a Redis that was killed."""
    queues_on_own_redis.kill()
    return queues_on_own_redis


@dataclass
class WorkerProcess:
    """`manage.py run_worker default judge` (or another command line) in a subprocess."""

    env: dict[str, str]
    log_path: Path
    command: list[str] = field(default_factory=lambda: [sys.executable, "manage.py", "run_worker", "default", "judge"])
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, cwd=BASE_DIR, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to what is left of its process group (a horse, a supervised child)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)  # time to finish a job; what is left is killed below
        with contextlib.suppress(ProcessLookupError):  # the whole group may be gone already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def worker_env(redis_url: str, lab_runners: dict[str, Any], **extra: str) -> dict[str, str]:
    """The environment of a platform subprocess sharing this test's database and `redis_url`."""
    from tests.e2e.live_server import shared_database_url

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "labsite.settings",
        "DATABASE_URL": shared_database_url(),
        "REDIS_URL": redis_url,
        "LAB_RQ_ASYNC": "true",
        "LAB_RUNNERS": json.dumps(lab_runners),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@pytest.fixture
def rq_worker(queues_on_own_redis, settings, tmp_path) -> Iterator[WorkerProcess]:
    """A started worker on the test's own Redis, with the test's runners (stopped after the test)."""
    worker = WorkerProcess(env=worker_env(queues_on_own_redis.url, settings.LAB_RUNNERS),
                           log_path=tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()
