"""Redis goes away and comes back while the platform runs (jobqueue/worker.py, jobqueue/queueing.py).

Real parts: a redis-server of the test's own (killed with SIGKILL, restarted empty), a real
`manage.py run_worker` subprocess on the test's database, and Start, Stop, Check and Hint
requests through the views. The worker is never restarted by hand.
"""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from jobqueue.queueing import QUEUE_UNAVAILABLE
from judge.models import Attempt, HintRequest
from sessions_app import actions
from sessions_app.job_recovery import RECOVER_AFTER_SECONDS, START_LOST, STOP_LOST
from sessions_app.models import Session, State
from sessions_app.reaping import reap
from tests.redis_server import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HTTP_HX_REQUEST": "true"}
JOB_SECONDS = 30  # a fake-runner job takes well under a second once a worker has it


@pytest.fixture
def checked_lab(lab):
    step = lab.steps.get()
    step.verify = [{"kind": "command", "run": ["true"]}]
    step.save()
    lab.judge = [{"kind": "command", "run": ["true"]}]
    lab.save()
    return lab


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def state_of(session: Session) -> str:
    session.refresh_from_db()
    return session.state


def start(client: Client, lab) -> Session:
    response = client.post(reverse("labs:start", args=[lab.slug]))
    assert response.status_code == 302
    return Session.objects.filter(user_id=client.session["_auth_user_id"]).latest("created_at")


def running_session(client: Client, lab) -> Session:
    session = start(client, lab)
    wait_until(lambda: state_of(session) == State.RUNNING, JOB_SECONDS, "the worker did not start the session")
    return session


def test_with_redis_gone_every_verb_says_the_queue_is_unavailable_and_the_worker_carries_on_after(
    rq_worker, redis_server, checked_lab, owner, other_learner
):
    owner_client, other_client = signed_in(owner), signed_in(other_learner)
    session = running_session(owner_client, checked_lab)
    step = checked_lab.steps.get()

    redis_server.kill()
    start_page = other_client.post(reverse("labs:start", args=[checked_lab.slug]), follow=True)
    stop_page = owner_client.post(reverse("sessions:stop", args=[session.pk]), follow=True)
    step_box = owner_client.post(reverse("judge:check_step", args=[session.pk, step.pk]), **HTMX)
    final_page = owner_client.post(reverse("judge:check_final", args=[session.pk]), follow=True)
    hint_list = owner_client.post(reverse("hints:ask", args=[session.pk]), {"step": "1"}, **HTMX)

    for response in (start_page, stop_page, step_box, final_page, hint_list):
        assert response.status_code == 200
        assert QUEUE_UNAVAILABLE in response.content.decode()
    # Nothing half done: no session, no stop, no check, no hint waiting for a job that never comes.
    assert not Session.objects.filter(user=other_learner).exists()
    assert state_of(session) == State.RUNNING
    assert not Attempt.objects.exists() and not HintRequest.objects.exists()
    # Pages that need no job still work.
    assert owner_client.get(reverse("sessions:detail", args=[session.pk])).status_code == 200

    redis_server.start()  # empty: whatever was in Redis is gone
    wait_until(lambda: "Redis is back" in rq_worker.log(), 30, "the worker did not notice Redis came back")
    assert rq_worker.alive()

    other_session = running_session(other_client, checked_lab)
    owner_client.post(reverse("judge:check_final", args=[session.pk]))
    attempt = Attempt.objects.get()
    wait_until(lambda: Attempt.objects.get(pk=attempt.pk).status in (Attempt.Status.DONE, Attempt.Status.ERROR),
               JOB_SECONDS, "the worker did not run the check")
    owner_client.post(reverse("sessions:stop", args=[session.pk]))
    wait_until(lambda: state_of(session) == State.STOPPED, JOB_SECONDS, "the worker did not stop the session")
    assert state_of(other_session) == State.RUNNING

    log = rq_worker.log()
    assert log.count("Redis is unavailable") == 1 and log.count("Redis is back") == 1
    assert "Traceback" not in log


def test_a_start_and_a_stop_whose_jobs_could_not_be_queued_run_once_redis_is_back(
    rq_worker, redis_server, lab, owner, other_learner
):
    session = running_session(signed_in(owner), lab)
    # Redis dies after each verb checked it answers and before its commit queues the job.
    with transaction.atomic():
        actions.stop_session(session)
        new = actions.start_session(other_learner, lab)
        redis_server.kill()
    assert (state_of(session), state_of(new)) == (State.STOPPING, State.REQUESTED)
    assert session.events.filter(message=actions.TEARDOWN_NOT_QUEUED).exists()
    assert new.events.filter(message=actions.PROVISION_NOT_QUEUED).exists()

    redis_server.start()
    time.sleep(RECOVER_AFTER_SECONDS + 1)  # the rows' last news must be older than a commit's own enqueue
    report = reap()  # one pass, as `reap_sessions --loop 30` makes every 30 s
    assert (report.jobs_requeued, report.queue_unavailable) == (2, False)
    wait_until(lambda: state_of(session) == State.STOPPED, JOB_SECONDS, "the lost stop was not repaired")
    wait_until(lambda: state_of(new) == State.RUNNING, JOB_SECONDS, "the lost start was not repaired")
    assert session.events.filter(message=STOP_LOST).count() == 1
    assert new.events.filter(message=START_LOST).count() == 1


def test_a_reaper_pass_with_redis_gone_changes_nothing_that_needs_a_job(rq_worker, redis_server, lab, owner):
    session = running_session(signed_in(owner), lab)
    Session.objects.filter(pk=session.pk).update(expires_at=session.started_at)
    redis_server.kill()
    report = reap()
    assert (report.queue_unavailable, report.expired) == (True, 0)
    assert state_of(session) == State.RUNNING  # not left in `stopping` with no teardown queued
    redis_server.start()
    wait_until(lambda: "Redis is back" in rq_worker.log(), 30, "the worker did not notice Redis came back")
    assert reap().expired == 1
    wait_until(lambda: state_of(session) == State.EXPIRED, JOB_SECONDS, "the expired session was not stopped")


@pytest.fixture
def slow_lab(settings, lab):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "fake-slower": {
        "BACKEND": "runners.fake.FakeRunner", "OPTIONS": {"start_delay": 6},
    }}
    lab.runner = "fake-slower"
    lab.save()
    return lab


def test_a_job_running_when_redis_goes_away_finishes_and_the_worker_carries_on(
    slow_lab, rq_worker, redis_server, owner  # the lab's runners before the worker
):
    client = signed_in(owner)
    session = start(client, slow_lab)
    wait_until(lambda: session.events.filter(message__startswith="Provisioning on").exists(), JOB_SECONDS,
               "provisioning did not begin")
    redis_server.kill()
    time.sleep(2)
    redis_server.start()
    wait_until(lambda: state_of(session) == State.RUNNING, JOB_SECONDS, "the start did not finish")
    client.post(reverse("sessions:stop", args=[session.pk]))
    wait_until(lambda: state_of(session) == State.STOPPED, JOB_SECONDS, "the worker did not carry on")
    assert rq_worker.alive()
    assert session.events.filter(message="Ready.").count() == 1


def test_the_worker_stops_on_sigterm_even_while_redis_is_away(rq_worker, redis_server):
    wait_until(lambda: "Listening on" in rq_worker.log(), JOB_SECONDS, "the worker did not start")
    redis_server.kill()
    wait_until(lambda: "Redis is unavailable" in rq_worker.log(), JOB_SECONDS, "the worker did not notice")
    assert rq_worker.process is not None
    rq_worker.process.terminate()
    assert rq_worker.process.wait(timeout=15) == 0
