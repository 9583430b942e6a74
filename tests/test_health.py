"""/healthz and /readyz (labsite/health.py) on the real PostgreSQL, Redis and Docker engine.

/healthz touches nothing (these tests have no database access at all: any query would raise);
/readyz reports each part and answers 503 naming what is down, never 500, within its deadline
even when a runner's engine hangs.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
from django.db import connections

import runners
from jobqueue import queueing
from labsite import health
from runners.base import Runner
from runners.fake import FakeRunner


class StuckRunner(FakeRunner):
    """An engine that never answers (until the test lets it go)."""

    release = threading.Event()
    calls = 0

    def available(self) -> bool:
        type(self).calls += 1
        self.release.wait(30)
        return True


class BrokenRunner(FakeRunner):
    def available(self) -> bool:
        raise RuntimeError("the engine's socket is gone")


class DownRunner(FakeRunner):
    def available(self) -> bool:
        return False


@pytest.fixture
def stuck_runner(settings):
    StuckRunner.release.clear()
    StuckRunner.calls = 0
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "stuck": {"BACKEND": "tests.test_health.StuckRunner"}}
    runners.reset_cache()
    yield
    StuckRunner.release.set()  # the probe's thread returns and ends


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once the socket is closed


def ready(client: Any) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


# ---- /healthz ----------------------------------------------------------------------------------

def test_healthz_answers_ok_for_anyone_without_the_database(client):
    response = client.get("/healthz")

    assert response.status_code == 200  # not a redirect to the sign-in page
    assert response.content == b"ok"
    assert response["Cache-Control"] == "no-store"
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


# ---- /readyz -----------------------------------------------------------------------------------

def test_readyz_is_ready_with_the_database_redis_and_the_engine_up(client, db, settings):
    assert settings.REDIS_URL, "the test environment sets REDIS_URL"
    status, body = ready(client)

    assert status == 200, body
    assert body["status"] == "ready" and body["down"] == []
    assert body["checks"]["database"] == "up"
    assert body["checks"]["redis"] == "up"
    # LAB_RUNNERS configures the real Docker runner (conftest): needed, and its engine answers.
    assert body["checks"]["runners"]["docker"] == {"status": "up", "required": True}
    assert body["checks"]["runners"]["fake"] == {"status": "up", "required": True}
    assert client.head("/readyz").status_code == 200
    assert client.post("/readyz").status_code == 405


def test_readyz_names_redis_when_nothing_listens_at_redis_url(client, db, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    status, body = ready(client)

    assert status == 503, body
    assert body["status"] == "not ready"
    assert body["down"] == ["redis"]
    assert body["checks"]["redis"] == "down"
    assert body["checks"]["database"] == "up"


def test_readyz_follows_redis_stopping_and_coming_back(client, db, settings, redis_server, caplog):
    settings.REDIS_URL = redis_server.url
    assert ready(client)[0] == 200

    redis_server.kill()
    with caplog.at_level(logging.INFO, logger="labsite.health"):
        status, body = ready(client)
        assert status == 503 and body["down"] == ["redis"], body
        ready(client)  # still down: no second line
    down = [r for r in caplog.records if r.getMessage().startswith("readiness: redis is down: ")]
    assert len(down) == 1 and down[0].levelno == logging.WARNING, caplog.text
    assert "Connection" in down[0].getMessage()  # why, in the log only

    redis_server.start()
    with caplog.at_level(logging.INFO, logger="labsite.health"):
        status, body = ready(client)
    assert status == 200 and body["checks"]["redis"] == "up", body
    assert "readiness: redis is up again" in caplog.text


def test_without_redis_url_redis_is_not_configured_and_not_needed(client, db, settings):
    settings.REDIS_URL = ""
    status, body = ready(client)

    assert status == 200, body
    assert body["checks"]["redis"] == "not configured"


def test_readyz_names_the_database_when_it_does_not_answer(client, db, monkeypatch):
    # The check opens a connection of its own (on its own thread) from these settings; the test's
    # connection, open already, is not affected.
    monkeypatch.setitem(connections.settings["default"], "HOST", "127.0.0.1")
    monkeypatch.setitem(connections.settings["default"], "PORT", closed_port())
    status, body = ready(client)

    assert status == 503, body
    assert "database" in body["down"]
    assert body["checks"]["database"] == "down"


def test_a_hanging_engine_answers_timeout_within_the_deadline(client, db, stuck_runner):
    started = time.monotonic()
    status, body = ready(client)
    took = time.monotonic() - started

    assert status == 503, body
    assert took < health.CHECK_TIMEOUT_SECONDS + 1.5, f"/readyz took {took:.1f} s"
    assert body["down"] == ["runner stuck"]
    assert body["checks"]["runners"]["stuck"] == {"status": "timeout", "required": True}
    assert body["checks"]["runners"]["docker"]["status"] == "up"  # the others were checked meanwhile

    # A second probe waits on the check still running instead of starting another one.
    status, body = ready(client)
    assert status == 503 and body["checks"]["runners"]["stuck"]["status"] == "timeout"
    assert StuckRunner.calls == 1

    StuckRunner.release.set()
    deadline = time.monotonic() + 10
    while ready(client)[0] != 200:
        assert time.monotonic() < deadline, "/readyz did not recover once the engine answered"
        time.sleep(0.1)


def test_a_runner_whose_check_raises_is_down_not_a_server_error(client, db, settings):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "broken": {"BACKEND": "tests.test_health.BrokenRunner"}}
    runners.reset_cache()
    status, body = ready(client)

    assert status == 503, body
    assert body["down"] == ["runner broken"]
    assert "socket" not in str(body)  # details go to the log, not to anyone who asks


def test_a_configured_runner_that_cannot_be_built_is_down(client, db, settings):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "ghost": {"BACKEND": "runners.nowhere.GhostRunner"}}
    runners.reset_cache()
    status, body = ready(client)

    assert status == 503, body
    assert body["down"] == ["runner ghost"]
    assert body["checks"]["runners"]["ghost"] == {"status": "down", "required": True}


def test_a_default_runner_that_is_not_configured_is_named(client, db, settings):
    settings.LAB_DEFAULT_RUNNER = "nowhere"
    status, body = ready(client)

    assert status == 503, body
    assert body["down"] == ["runner nowhere"]
    assert body["checks"]["runners"]["nowhere"] == {"status": "not configured", "required": True}


def test_an_optional_built_in_runner_that_is_down_keeps_it_ready(client, db, monkeypatch):
    monkeypatch.setitem(runners.BUILTIN_RUNNERS, "spare", {"BACKEND": "tests.test_health.DownRunner", "OPTIONS": {}})
    runners.reset_cache()
    status, body = ready(client)

    assert status == 200, body
    assert body["checks"]["runners"]["spare"] == {"status": "down", "required": False}


def test_the_automatic_default_needs_docker_or_the_local_sandbox(client, db, settings, monkeypatch):
    settings.LAB_RUNNERS = {}
    monkeypatch.setitem(runners.BUILTIN_RUNNERS, "docker", {"BACKEND": "tests.test_health.DownRunner", "OPTIONS": {}})
    monkeypatch.setitem(runners.BUILTIN_RUNNERS, "local", {"BACKEND": "tests.test_health.DownRunner", "OPTIONS": {}})
    runners.reset_cache()
    status, body = ready(client)
    assert status == 503, body
    assert body["down"] == ["runner local"]  # with no engine, the default would be the local sandbox

    monkeypatch.setitem(runners.BUILTIN_RUNNERS, "local", {"BACKEND": "runners.fake.FakeRunner", "OPTIONS": {}})
    runners.reset_cache()
    status, body = ready(client)
    assert status == 200, body
    assert body["checks"]["runners"]["docker"] == {"status": "down", "required": False}


def test_broken_runner_settings_answer_503_not_500(client, db, monkeypatch):
    def unusable() -> dict[str, Any]:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("LAB_RUNNERS['docker'] needs a BACKEND")

    monkeypatch.setattr(runners, "runner_configs", unusable)
    status, body = ready(client)

    assert status == 503, body
    assert "runner docker" in body["down"]


def test_runner_checks_use_runner_available(db):
    """The report is built from runners.all_runners() and Runner.available(), nothing of its own."""
    seen: list[str] = []
    original = Runner.available

    def spy(self: Runner) -> bool:
        seen.append(self.name)
        return original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Runner, "available", spy)
        _ready, report = health.readiness()
    assert {"fake", "fake-slow", "fake-failing"} <= set(seen)
    assert report["checks"]["runners"]["fake"]["status"] == "up"


# ---- the job queue ------------------------------------------------------------------------------

def _wait(seconds: float) -> None:
    time.sleep(seconds)


def test_readyz_reports_the_job_queue_and_calls_it_stuck_when_jobs_wait_with_no_worker(
    client, db, settings, queues_on_own_redis
):
    status, body = ready(client)
    assert status == 200, body
    assert body["checks"]["queue"] == {"status": "up", "workers": 0, "queued": {"default": 0, "judge": 0},
                             "oldest_queued_seconds": None, "stuck": False}

    queueing.get_queue("judge").enqueue(_wait, 0)
    status, body = ready(client)
    assert status == 200, body  # the web process still serves pages: not a reason to leave the Service
    assert body["checks"]["queue"]["queued"] == {"default": 0, "judge": 1}
    assert body["checks"]["queue"]["stuck"] is True  # waiting, and no worker to take it
    assert 0 <= body["checks"]["queue"]["oldest_queued_seconds"] < 60

    response = client.get("/readyz?require=queue")
    assert response.status_code == 503 and response.json()["down"] == ["queue"], response.json()


def test_a_live_worker_keeps_the_queue_healthy_until_its_oldest_job_waits_too_long(
    client, db, settings, queues_on_own_redis
):
    import django_rq
    from rq import Worker

    worker = Worker(["default"], connection=django_rq.get_connection("default"), name=f"test-{time.time_ns()}")
    worker.register_birth()
    try:
        queueing.get_queue("default").enqueue(_wait, 0)
        body = client.get("/readyz?require=queue").json()
        assert body["status"] == "ready", body
        assert (body["checks"]["queue"]["workers"], body["checks"]["queue"]["stuck"]) == (1, False)

        settings.LAB_QUEUE_STUCK_SECONDS = 1
        time.sleep(1.5)
        response = client.get("/readyz?require=queue")
        assert response.status_code == 503, response.json()
        assert response.json()["checks"]["queue"]["stuck"] is True
        assert response.json()["checks"]["queue"]["oldest_queued_seconds"] >= 1
    finally:
        worker.register_death()


def test_readyz_says_the_queue_is_down_with_redis(client, db, settings, queue_down):
    status, body = ready(client)
    assert status == 503 and set(body["down"]) == {"redis"}, body
    assert body["checks"]["queue"] == {"status": "down"}


def test_without_redis_there_is_no_queue_to_report(client, db, settings):
    settings.REDIS_URL = ""
    assert "queue" not in ready(client)[1]["checks"]


def test_a_runner_without_its_configuration_reads_not_configured_and_is_not_asked(client, db, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runners.reset_cache()
    status, body = ready(client)
    assert status == 200, body
    assert body["checks"]["runners"]["kubernetes"] == {"status": "not configured", "required": False}


def test_a_default_runner_that_is_not_configured_is_down_by_name(client, db, settings, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings.LAB_DEFAULT_RUNNER = "kubernetes"
    runners.reset_cache()
    status, body = ready(client)
    assert status == 503 and "runner kubernetes" in body["down"], body
    assert body["checks"]["runners"]["kubernetes"] == {"status": "not configured", "required": True}
