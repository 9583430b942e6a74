"""The platform's figures for Prometheus, read from the database (and Redis) at scrape time.

Why a custom collector reading rows, not counters kept in memory: the web server, the workers and
the housekeeping loops are separate processes (and the web may run as several replicas). Counters
incremented in memory would each see a part of the events and vanish on restart; prometheus_client's
multiprocess mode fixes that only for processes on one host sharing a directory, which must be
created, wiped at start-up and kept apart per deployment. The database already records every
session, attempt and hint, so each scrape asks it: there is no directory to manage, a restart loses
nothing, and every replica answers the same (so dashboards take `max` across instances, not `sum`).

What the rows allow, and how:

- Rows that stay (judge attempts, which go only with their lab or user) give true counters and
  histograms: totals over the table.
- Sessions, and the hint requests that belong to them, are deleted by the reaper a lab's
  `auto_delete_minutes` (default 60) after the session ends. Totals over them would fall at each
  reaper pass, which Prometheus takes for a counter reset and turns into a spike in `rate()`. So
  their event figures count a recent window (the last WINDOW_MINUTES: start requests made, stops,
  hints) and are gauges (a window's histogram is a gauge histogram), named with the window.
  A lab whose sessions are deleted sooner than that after ending drops out of them early.
- The job queue is read from Redis with short timeouts. Without REDIS_URL jobs run on threads
  of whichever process queued them and there is no queue to count: the queue figures are left
  out. With Redis configured but not answering, `labs_job_queue_up` is 0 and the rest is left out.

- Request → first shell byte comes from `Session.first_output_at`, set once by the learner's own
  terminal (consoles/consumers.py) when it forwards its first output: a gauge histogram over the
  sessions whose first output came in the window, like request → running.
- The reaper and the reconciler write a `HousekeepingPass` row at the end of each pass and prune
  rows older than a day: the last pass's duration and age, and the orphans removed and sessions
  handled in the window, are gauges per kind. A kind that never ran has no series (alert on
  `absent()`); one that stopped shows a growing age.

Every figure is one aggregated query (GROUP BY with conditional counts for histogram buckets), so
a scrape costs the same nine queries however many rows there are, each aggregating in the
database over the rows it reads (live sessions, the window's, the whole attempts table and the
last day's housekeeping passes).
Per-session CPU, memory and disk are not here: they need a call to the runner's engine per session
(runners' `stats()`), far too slow for a scrape with many sessions. The watchdog samples them in
its own loop and metrics/watchdog_figures.py exports its latest samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from rq import Queue

from jobqueue.queueing import REDIS_DOWN, uses_redis
from judge.models import Attempt, HintRequest
from sessions_app.models import LIVE_STATES, EndReason, HousekeepingPass, Session, State

log = logging.getLogger(__name__)
_redis_down = False  # whether the last scrape found the job queue's Redis down (logged once per change)

WINDOW_MINUTES = 15
# Request → running (and → first shell byte), in seconds: a container starts in a few, a VM or a
# big image in minutes.
START_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# A judge run, in seconds: a command check takes a moment, a docker_build up to an hour.
JUDGE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
REDIS_TIMEOUT_SECONDS = 2.0

# The outcome of a start request, from its row.
STARTED, FAILED, CANCELLED, PENDING = "started", "failed", "cancelled", "pending"
# A judge attempt's verdict, from its row (queued and running ones have none yet).
PASSED, NOT_PASSED, ERROR = "passed", "failed", "error"
VERDICTS = (PASSED, NOT_PASSED, ERROR)
HINT_SOURCES = {HintRequest.Source.GEMINI: "gemini", HintRequest.Source.FALLBACK: "fallback",
                HintRequest.Source.PENDING: "pending"}


def _runner() -> Coalesce:
    """The runner a session runs on: the alias it was started on, else its lab's."""
    return Coalesce(NullIf(F("runner_name"), Value("")), F("lab__runner"), output_field=CharField())


def _bucket_counts(field: str, bounds: Iterable[Any]) -> dict[str, Count]:
    """Conditional counts for a histogram's cumulative buckets: b0 = rows with field <= bounds[0]…"""
    return {f"b{i}": Count("pk", filter=Q(**{f"{field}__lte": bound})) for i, bound in enumerate(bounds)}


def _rows(values: Iterable[Any]) -> list[dict[str, Any]]:
    """A values() queryset's rows as plain dicts."""
    return [dict(row) for row in values]


def _buckets(row: dict[str, Any], bounds: Sequence[float], total: int) -> list[tuple[str, float]]:
    return [*((floatToGoString(bound), row[f"b{i}"]) for i, bound in enumerate(bounds)), ("+Inf", total)]


def _since_request(name: str, documentation: str, reached: str, since: Any) -> Metric:
    """A gauge histogram, by runner, of the time from the start request (created_at) to `reached`
    (a timestamp field), over the sessions whose `reached` falls in the window: one query."""
    durations = GaugeHistogramMetricFamily(name, documentation, labels=["runner"])
    took = ExpressionWrapper(F(reached) - F("created_at"), output_field=DurationField())
    timings = (Session.objects.filter(**{f"{reached}__gte": since}).annotate(alias=_runner(), took=took)
               .values("alias")
               .annotate(n=Count("pk"), total=Sum("took"),
                         **_bucket_counts("took", (timedelta(seconds=b) for b in START_BUCKETS)))
               .order_by("alias"))
    for row in _rows(timings):
        total = row["total"].total_seconds() if row["total"] is not None else 0.0
        durations.add_metric([row["alias"]], _buckets(row, START_BUCKETS, row["n"]), total)
    return durations


class PlatformCollector(Collector):
    """Collects every figure anew on each call (see the module's docstring)."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        since = now - timedelta(minutes=WINDOW_MINUTES)
        yield from self._live_sessions()
        yield from self._recent_starts(since)
        yield self._recent_first_output(since)
        yield self._recent_stops(since)
        yield self._recent_hints(since)
        yield from self._judge_attempts()
        yield from self._housekeeping(now, since)
        yield from self._job_queue()

    # ---- sessions ------------------------------------------------------------------------------

    def _live_sessions(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("labs_sessions", "Sessions not yet ended, by state.", labels=["state"])
        counts = dict(Session.objects.live().values_list("state").annotate(n=Count("pk")).order_by())
        for state in LIVE_STATES:
            by_state.add_metric([state.value], counts.get(state.value, 0))
        yield by_state

        running = GaugeMetricFamily("labs_sessions_running", "Running sessions by lab and runner.",
                                    labels=["lab", "runner"])
        running_rows = (Session.objects.filter(state=State.RUNNING).annotate(alias=_runner())
                .values("lab__slug", "alias").annotate(n=Count("pk")).order_by("lab__slug", "alias"))
        for row in _rows(running_rows):
            running.add_metric([row["lab__slug"], row["alias"]], row["n"])
        yield running

    def _recent_starts(self, since: Any) -> Iterator[Metric]:
        starts = GaugeMetricFamily(
            f"labs_session_starts_{WINDOW_MINUTES}m",
            f"Sessions requested in the last {WINDOW_MINUTES} minutes, by runner and outcome so far "
            "(started: reached running; failed: failed before that; cancelled: stopped before that; "
            "pending: still starting).",
            labels=["runner", "outcome"])
        outcome = Case(
            When(started_at__isnull=False, then=Value(STARTED)),
            When(state=State.FAILED, then=Value(FAILED)),
            When(state__in=[State.REQUESTED, State.PROVISIONING], then=Value(PENDING)),
            default=Value(CANCELLED), output_field=CharField())
        start_rows = (Session.objects.filter(created_at__gte=since).annotate(alias=_runner(), outcome=outcome)
                .values("alias", "outcome").annotate(n=Count("pk")).order_by("alias", "outcome"))
        for row in _rows(start_rows):
            starts.add_metric([row["alias"], row["outcome"]], row["n"])
        yield starts

        yield _since_request(
            f"labs_session_start_seconds_{WINDOW_MINUTES}m",
            f"Request → running of the sessions that reached running in the last {WINDOW_MINUTES} minutes, "
            "by runner, in seconds.",
            "started_at", since)

    def _recent_first_output(self, since: Any) -> Metric:
        return _since_request(
            f"labs_session_first_output_seconds_{WINDOW_MINUTES}m",
            "Request → first shell byte (the learner's own terminal first sending them output) of the sessions "
            f"whose first output came in the last {WINDOW_MINUTES} minutes, by runner, in seconds.",
            "first_output_at", since)

    def _recent_stops(self, since: Any) -> Metric:
        stops = GaugeMetricFamily(
            f"labs_session_stops_{WINDOW_MINUTES}m",
            f"Sessions that ended in the last {WINDOW_MINUTES} minutes, by reason "
            "(learner, staff, expired, idle, error: failed, vanished: the environment disappeared, none).",
            labels=["reason"])
        counts = dict(Session.objects.ended().filter(ended_at__gte=since)
                      .values_list("end_reason").annotate(n=Count("pk")).order_by())
        for reason in EndReason:
            stops.add_metric([reason.value or "none"], counts.get(reason.value, 0))
        return stops

    # ---- judge ---------------------------------------------------------------------------------

    def _recent_hints(self, since: Any) -> Metric:
        hints = GaugeMetricFamily(
            f"labs_hint_requests_{WINDOW_MINUTES}m",
            f"Hint requests in the last {WINDOW_MINUTES} minutes, by the source of the answer "
            "(gemini, fallback: the lab's own hint, pending: not answered yet).",
            labels=["source"])
        counts = dict(HintRequest.objects.filter(created_at__gte=since)
                      .values_list("source").annotate(n=Count("pk")).order_by())
        for source, label in HINT_SOURCES.items():
            hints.add_metric([label], counts.get(source, 0))
        return hints

    def _judge_attempts(self) -> Iterator[Metric]:
        verdict = Case(
            When(status=Attempt.Status.DONE, passed=True, then=Value(PASSED)),
            When(status=Attempt.Status.DONE, then=Value(NOT_PASSED)),
            When(status=Attempt.Status.ERROR, then=Value(ERROR)),
            default=F("status"), output_field=CharField())
        rows = {row["verdict"]: row for row in _rows(
            Attempt.objects.annotate(verdict=verdict).values("verdict")
            .annotate(n=Count("pk"), timed=Count("duration_ms"), total=Sum("duration_ms"),
                      **_bucket_counts("duration_ms", (int(b * 1000) for b in JUDGE_BUCKETS)))
            .order_by())}

        finished = CounterMetricFamily("labs_judge_attempts", "Judge runs finished, by verdict.", labels=["verdict"])
        durations = HistogramMetricFamily("labs_judge_attempt_seconds", "How long judge runs took, by verdict.",
                                          labels=["verdict"])
        nothing: dict[str, Any] = {"n": 0, "timed": 0, "total": 0, **{f"b{i}": 0 for i in range(len(JUDGE_BUCKETS))}}
        for name in VERDICTS:
            row = rows.get(name, nothing)
            finished.add_metric([name], row["n"])
            durations.add_metric([name], _buckets(row, JUDGE_BUCKETS, row["timed"]), (row["total"] or 0) / 1000)
        waiting = GaugeMetricFamily("labs_judge_attempts_unfinished", "Judge runs queued or running.",
                                    labels=["status"])
        for status in (Attempt.Status.QUEUED, Attempt.Status.RUNNING):
            waiting.add_metric([status.value], rows.get(status.value, nothing)["n"])
        yield finished
        yield durations
        yield waiting

    # ---- housekeeping --------------------------------------------------------------------------

    def _housekeeping(self, now: Any, since: Any) -> Iterator[Metric]:
        duration = GaugeMetricFamily("labs_housekeeping_last_pass_seconds",
                                     "How long the last pass took, by kind (reap, reconcile).", labels=["kind"])
        age = GaugeMetricFamily("labs_housekeeping_since_last_pass_seconds",
                                "Seconds since the last pass finished, by kind (a stalled loop keeps growing).",
                                labels=["kind"])
        orphans = GaugeMetricFamily(
            f"labs_housekeeping_orphans_removed_{WINDOW_MINUTES}m",
            f"Environments no live session owned, removed by the passes of the last {WINDOW_MINUTES} minutes, "
            "by kind.", labels=["kind"])
        handled = GaugeMetricFamily(
            f"labs_housekeeping_sessions_handled_{WINDOW_MINUTES}m",
            f"Sessions the passes of the last {WINDOW_MINUTES} minutes stopped, failed, deleted or re-queued, "
            "by kind.", labels=["kind"])
        # One query: each kind's last pass, with its window's sums as subqueries.
        window = (HousekeepingPass.objects.filter(kind=OuterRef("kind"), started_at__gte=since)
                  .order_by().values("kind"))
        last_ids = HousekeepingPass.objects.order_by().values("kind").annotate(last=Max("pk")).values("last")
        zero = Value(0, output_field=IntegerField())
        last_passes = (HousekeepingPass.objects.filter(pk__in=Subquery(last_ids))
                       .annotate(window_orphans=Coalesce(Subquery(window.annotate(n=Sum("orphans_removed"))
                                                                  .values("n")), zero),
                                 window_sessions=Coalesce(Subquery(window.annotate(n=Sum("sessions_handled"))
                                                                   .values("n")), zero))
                       .values("kind", "started_at", "duration_seconds", "window_orphans", "window_sessions")
                       .order_by("kind"))
        for row in _rows(last_passes):
            ended = row["started_at"] + timedelta(seconds=row["duration_seconds"])
            duration.add_metric([row["kind"]], row["duration_seconds"])
            age.add_metric([row["kind"]], max(0.0, (now - ended).total_seconds()))
            orphans.add_metric([row["kind"]], row["window_orphans"])
            handled.add_metric([row["kind"]], row["window_sessions"])
        yield duration
        yield age
        yield orphans
        yield handled

    # ---- the job queue -------------------------------------------------------------------------

    def _job_queue(self) -> Iterator[Metric]:
        if not uses_redis():
            return  # embedded jobs: no queue to count (see the module's docstring)
        up = GaugeMetricFamily("labs_job_queue_up", "Whether the job queue's Redis answered this scrape.")
        queued = GaugeMetricFamily("labs_jobs_queued", "Jobs waiting in a queue.", labels=["queue"])
        started = GaugeMetricFamily("labs_jobs_started", "Jobs a worker is running.", labels=["queue"])
        failed = GaugeMetricFamily("labs_jobs_failed", "Failed jobs kept in a queue's failed registry "
                                   "(RQ keeps them a year unless retried or deleted).", labels=["queue"])
        clients: dict[str, redis.Redis] = {}
        try:
            for name, config in settings.RQ_QUEUES.items():
                url = config["URL"]
                if url not in clients:
                    clients[url] = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                                        socket_timeout=REDIS_TIMEOUT_SECONDS)
                queue = Queue(name, connection=clients[url])
                # Counts without the registries' clean-up, which writes: a scrape only reads.
                queued.add_metric([name], queue.count)
                started.add_metric([name], queue.started_job_registry.get_job_count(cleanup=False))
                failed.add_metric([name], queue.failed_job_registry.get_job_count(cleanup=False))
        except REDIS_DOWN as exc:
            _note_redis(down=True, detail=str(exc))
            up.add_metric([], 0)
            yield up
            return
        finally:
            for client in clients.values():
                client.close()
        _note_redis(down=False)
        up.add_metric([], 1)
        yield up
        yield queued
        yield started
        yield failed


def _note_redis(down: bool, detail: str = "") -> None:
    """One log line when the job queue's Redis stops answering scrapes and one when it is back."""
    global _redis_down
    if down and not _redis_down:
        log.warning("metrics: the job queue's Redis does not answer: %s", detail)
    elif _redis_down and not down:
        log.info("metrics: the job queue's Redis answers again")
    _redis_down = down
