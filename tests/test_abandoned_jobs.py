"""A worker killed mid-job (jobqueue/worker.py, jobqueue/abandoned_jobs.py, the recovery passes).

Real parts: a redis-server of the test's own, `manage.py run_worker` subprocesses (one under
deploy/scripts/supervise.sh, as run.sh runs it), `manage.py reap_sessions --loop 30` where the
timing matters, and SIGKILL. The job stands still long enough to be killed in the middle: the
in-memory runner takes START_DELAY seconds to start an environment.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobqueue.queueing import get_queue
from jobqueue.worker import ABANDONED_AFTER_SECONDS
from judge.job_recovery import CHECK_INTERRUPTED
from judge.models import Attempt
from sessions_app.models import Session, State
from sessions_app.reaping import reap
from tests.redis_server import WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
START_DELAY = 6
PROVISIONING = "Provisioning on the fake-slower runner."
# What the platform promises: a killed worker's job is retried or failed within a minute.
WITHIN_SECONDS = 60


@pytest.fixture
def slow_lab(settings, lab):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "fake-slower": {
        "BACKEND": "runners.fake.FakeRunner", "OPTIONS": {"start_delay": START_DELAY},
    }}
    lab.runner = "fake-slower"
    lab.save()
    return lab


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited while we looked
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def start_and_wait_for_provisioning(user, lab) -> Session:
    client = Client()
    client.force_login(user)
    assert client.post(reverse("labs:start", args=[lab.slug])).status_code == 302
    session = Session.objects.get(user=user)
    wait_until(lambda: session.events.filter(message=PROVISIONING).exists(), 30, "provisioning did not begin")
    return session


def state_of(session: Session) -> str:
    session.refresh_from_db()
    return session.state


@pytest.fixture
def platform_process(queues_on_own_redis, settings, tmp_path):
    """Start platform commands against the test's database and Redis; all stopped after the test."""
    started: list[WorkerProcess] = []

    def start(name: str, *command: str) -> WorkerProcess:
        process = WorkerProcess(env=worker_env(queues_on_own_redis.url, settings.LAB_RUNNERS),
                                log_path=tmp_path / f"{name}.log", command=list(command))
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_a_worker_killed_mid_provisioning_is_replaced_and_the_start_finishes_within_a_minute(
    platform_process, slow_lab, owner, tmp_path
):
    supervisor = platform_process("supervisor", "bash", str(ROOT / "deploy/scripts/supervise.sh"), "worker",
                                  str(tmp_path / "worker.log"), sys.executable, "manage.py", "run_worker")
    platform_process("reaper", sys.executable, "manage.py", "reap_sessions", "--loop", "30")
    wait_until(lambda: children(supervisor.pid), 10, "the supervisor did not start the worker")
    session = start_and_wait_for_provisioning(owner, slow_lab)

    worker = children(supervisor.pid)[0]
    horse = children(worker)[0]
    # The worker and its job die at once, as in an out-of-memory kill or a host going down.
    os.kill(worker, signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    killed = time.monotonic()

    wait_until(lambda: state_of(session) in (State.RUNNING, State.FAILED), WITHIN_SECONDS,
               "the session was neither running nor failed a minute after its worker was killed")
    assert time.monotonic() - killed < WITHIN_SECONDS
    assert session.state == State.RUNNING  # retried once by the worker the supervisor started again
    assert session.events.filter(message=PROVISIONING).count() == 2
    assert session.events.filter(message="Ready.").count() == 1
    assert worker not in children(supervisor.pid)


def test_the_job_of_a_killed_worker_dies_with_it(slow_lab, rq_worker, owner):  # runners before the worker
    """Otherwise the job would run on beside the retry that the sweep starts."""
    session = start_and_wait_for_provisioning(owner, slow_lab)
    horse = children(rq_worker.pid)[0]
    os.kill(rq_worker.pid, signal.SIGKILL)
    wait_until(lambda: not alive(horse), 5, "the work horse outlived its worker")
    time.sleep(START_DELAY + 1)
    assert state_of(session) == State.PROVISIONING  # nothing finished the start behind the platform's back


def test_a_check_whose_worker_was_killed_ends_with_an_error_within_a_minute(rq_worker, lab, owner):
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.RUNNING)
    attempt = Attempt.objects.create(user=owner, session=session, lab=lab, status=Attempt.Status.RUNNING)
    # A check that takes a while, under the attempt's own job id.
    job = get_queue("judge").enqueue("time.sleep", 120, job_id=f"judge-attempt-{attempt.pk}")
    wait_until(lambda: job.get_status(refresh=True) == "started", 30, "the worker did not take the job")
    horse = children(rq_worker.pid)[0]
    os.kill(rq_worker.pid, signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    killed = time.monotonic()

    def interrupted() -> bool:
        reap()  # passes as often as the loop's worst case allows, and more
        attempt.refresh_from_db()
        return attempt.status == Attempt.Status.ERROR

    wait_until(interrupted, WITHIN_SECONDS, "the check still looked busy a minute after its worker was killed",
               interval=5)
    assert time.monotonic() - killed >= ABANDONED_AFTER_SECONDS - 5  # not failed while its heartbeat was fresh
    assert attempt.result == {"error": CHECK_INTERRUPTED}
    assert attempt.finished_at is not None and attempt.finished_at <= timezone.now()
