"""The RQ worker of `manage.py run_worker`: it outlives Redis outages and tells when its jobs die.

RQ's own worker quits on most Redis errors (only its blocking wait for the next job retries),
so one Redis restart left the platform with no worker. Here:

- `ResilientWorker` waits for Redis with a backoff wherever it is idle (logging once when Redis
  goes away and once when it is back), keeps watching a running job while Redis is away, and
  records its shutdown even when it cannot tell Redis.
- `serve` runs worker after worker until asked to stop: if a worker quits anyway (Redis went away
  at a moment the worker cannot ride out), it waits for Redis and starts a new one.
- A job's heartbeat (its score in RQ's started-job registry) lasts HEARTBEAT_TTL_SECONDS and is
  renewed every JOB_MONITORING_SECONDS; a job whose worker was killed is therefore found by
  `sweep_abandoned_jobs` (jobqueue/abandoned_jobs.py) within ABANDONED_AFTER_SECONDS.
- The work horse (the forked process that runs a job) dies with its worker, so a killed worker
  never leaves a job running that the sweep would start a second time.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import django_rq.workers
import redis
from django.db import connections
from rq import Worker
from rq.connections import parse_connection
from rq.exceptions import StopRequested

from jobqueue.queueing import REDIS_DOWN

log = logging.getLogger(__name__)

# How often a busy worker renews its job's heartbeat, and how long one lasts: a job not heard of
# for ABANDONED_AFTER_SECONDS lost its worker (three heartbeats missed).
JOB_MONITORING_SECONDS = 5
ABANDONED_AFTER_SECONDS = 15
HEARTBEAT_TTL_SECONDS = ABANDONED_AFTER_SECONDS
# An idle worker renews its registration every WORKER_TTL_SECONDS - 15 (RQ's dequeue timeout).
WORKER_TTL_SECONDS = 60
# Waiting for Redis: first retry after 0.5 s, doubling up to this.
MAX_WAIT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0
# A worker that quits again within this long after starting waits longer before the next one.
QUICK_EXIT_SECONDS = 60
MAX_RESTART_DELAY_SECONDS = 30.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class RedisWatch:
    """Logs once when Redis stops answering and once when it answers again (from any thread)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def lost(self, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        log.warning("Redis is unavailable (%s); waiting for it to come back", exc or type(exc).__name__)

    def back(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            down_for, self.down_since = time.monotonic() - self.down_since, None
        log.warning("Redis is back after %.0f s; carrying on", down_for)


def probe_client(connection: redis.Redis) -> redis.Redis:
    """A client for the same server with short timeouts (the worker's own waits up to a minute)."""
    client_class, connection_class, kwargs = parse_connection(connection)
    kwargs.update(socket_timeout=PROBE_TIMEOUT_SECONDS, socket_connect_timeout=PROBE_TIMEOUT_SECONDS)
    return client_class(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))


def wait_for_redis(probe: redis.Redis, watch: RedisWatch, should_stop: Callable[[], bool] = lambda: False) -> None:
    """Return once Redis answers a PING, retrying with a backoff; StopRequested if asked to stop."""
    delay = 0.5
    while True:
        try:
            probe.ping()
        except REDIS_DOWN as exc:
            watch.lost(exc)
        else:
            watch.back()
            return
        if should_stop():
            raise StopRequested()
        time.sleep(delay)
        delay = min(delay * 2, MAX_WAIT_SECONDS)


def _die_with_parent(parent_pid: int) -> None:
    """In the work horse: get SIGKILL when the worker dies (Linux), or exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0
    except (OSError, AttributeError) as exc:
        log.warning("the work horse cannot follow its worker's death here (%s)", exc)
        return
    if failed:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent_pid:
        os._exit(1)  # the worker died before the horse could ask to follow it


class ResilientWorker(Worker):
    """RQ's forking worker, made to ride out Redis outages (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL_SECONDS)
        kwargs.setdefault("job_monitoring_interval", JOB_MONITORING_SECONDS)
        super().__init__(*args, **kwargs)
        self.redis_watch = RedisWatch()
        self.probe = probe_client(self.connection)
        self.stop_asked = False
        self.main_pid = os.getpid()

    def wait_for_redis(self) -> None:
        wait_for_redis(self.probe, self.redis_watch, lambda: self.stop_asked)

    def _once_redis_answers(self, call: Callable[[], None]) -> None:
        """Wait for Redis, then `call`; again if the call fails on a connection the outage broke
        (the probe, on a connection of its own, tells whether Redis itself is away)."""
        while True:
            self.wait_for_redis()
            try:
                call()
            except REDIS_DOWN as exc:
                log.debug("retrying after %s", exc)
                time.sleep(0.2)
            else:
                return

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        # RQ adds a minute to the monitoring interval; a killed worker's job would go unnoticed as long.
        return HEARTBEAT_TTL_SECONDS

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
        elif self.horse_pid:
            self._while_busy(lambda: super(ResilientWorker, self).heartbeat(timeout))
        else:
            # Idle: RQ calls this before every wait for a job, so this is where outages are waited out.
            self._once_redis_answers(lambda: super(ResilientWorker, self).heartbeat(timeout))

    def monitor_work_horse(self, job: Any, queue: Any, execution: Any) -> None:
        # Once the horse has exited RQ asks Redis how the job ended; with Redis away that raised out
        # of the worker's loop (a traceback, and the worker quit). The job stays in the started
        # registry, so the abandoned-job sweep settles it once Redis is back.
        try:
            super().monitor_work_horse(job, queue, execution)
        except REDIS_DOWN as exc:
            self.redis_watch.lost(exc)
            log.warning("job %s ended while Redis was away; the sweep of abandoned jobs will settle it", job.id)
            self._horse_pid = 0

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        self._while_busy(lambda: super(ResilientWorker, self).maintain_heartbeats(job, execution))

    def _while_busy(self, renew: Callable[[], None]) -> None:
        """Renew a heartbeat while a job runs; with Redis away the job carries on regardless."""
        try:
            renew()
        except REDIS_DOWN as exc:
            self.redis_watch.lost(exc)
        else:
            self.redis_watch.back()

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        # The thread listening for RQ's commands: RQ logs an error every 2 s of an outage here.
        if not isinstance(exc, REDIS_DOWN):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
            return
        self.redis_watch.lost(exc)
        time.sleep(MAX_WAIT_SECONDS)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().set_state(state, pipeline=pipeline)
        else:  # between jobs, e.g. going idle after one: an outage is waited out here
            self._once_redis_answers(lambda: super(ResilientWorker, self).set_state(state))

    def run_maintenance_tasks(self) -> None:
        self._once_redis_answers(super().run_maintenance_tasks)

    def check_for_suspension(self, burst: bool) -> None:
        self._once_redis_answers(lambda: super(ResilientWorker, self).check_for_suspension(burst))

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)

    def _shutdown(self) -> None:
        # RQ asks Redis whether a job is running; with Redis away that raised inside the signal
        # handler and the stop request was lost. The horse's pid says the same without Redis.
        if not self.horse_pid:
            raise StopRequested()
        self._stop_requested = True
        log.info("stopping after the current job (send the signal again to stop now)")
        try:
            self.set_shutdown_requested_date()
        except REDIS_DOWN as exc:
            self.redis_watch.lost(exc)

    def teardown(self) -> None:
        try:
            super().teardown()
        except REDIS_DOWN as exc:
            log.warning("could not record this worker's exit in Redis (%s); its registration expires by itself", exc)

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        _die_with_parent(self.main_pid)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _install_stop_handlers() -> None:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


def serve(queue_names: Sequence[str], logging_level: str = "INFO") -> None:
    """Run ResilientWorkers on `queue_names` one after another until SIGTERM or SIGINT."""
    watch = RedisWatch()
    delay = 1.0
    while True:
        _install_stop_handlers()  # a worker installs its own while it works
        try:
            probe = probe_client(django_rq.get_connection(queue_names[0]))
            wait_for_redis(probe, watch)
            worker = django_rq.workers.get_worker(*queue_names, worker_class=ResilientWorker)
            assert isinstance(worker, ResilientWorker)
            worker.redis_watch = watch  # one outage, one pair of log lines, whichever worker sees it
            connections.close_all()  # the work horses are forked: none may share a database connection
            started = time.monotonic()
            worker.work(logging_level=logging_level)
        except _Stop:
            return
        except REDIS_DOWN as exc:
            watch.lost(exc)  # gone between the PING and the worker's registration
            continue
        finally:
            _install_stop_handlers()
        if worker.stop_asked:
            return
        ran = time.monotonic() - started
        delay = 1.0 if ran >= QUICK_EXIT_SECONDS else min(delay * 2, MAX_RESTART_DELAY_SECONDS)
        try:
            if worker.horse_pid:
                # It quit with a job still running: let the job finish rather than orphan it.
                log.warning("waiting for the job of the worker that quit (pid %s)", worker.horse_pid)
                worker.wait_for_horse()
            log.warning("the worker stopped after %.0f s; starting a new one in %.0f s", ran, delay)
            time.sleep(delay)
        except _Stop:
            return
