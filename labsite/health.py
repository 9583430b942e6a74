"""Health endpoints for process managers, load balancers and orchestrators.

    /healthz  the process answers: 200 "ok", touching nothing else (no database, no Redis).
    /readyz   whether it can serve: JSON with the database, Redis (when REDIS_URL is set) and
              each runner's engine; 200 when every needed part is up, else 503 naming what is down.
              With Redis it also reports the job queue (workers alive, jobs waiting, the oldest
              one's age, whether it is stuck); `?require=queue` makes a stuck queue a 503 as well.
              It also reports the resource watchdog's open alerts (how many, by level, the oldest);
              `?require=alerts` makes a critical alert on the host a 503 (a session's alerts never
              do: they are one learner's, not the platform's). Both: `?require=queue,alerts`.

Every readiness check runs on a daemon thread of its own and is waited for only until a short
deadline: a hung engine or an unreachable database host answers "timeout" instead of holding
the probe (and a server thread) for minutes. A check still running from an earlier probe is
waited on again rather than started twice, so a stuck part costs one thread, not one per probe.

Which runners are needed: those LAB_RUNNERS configures and the one LAB_DEFAULT_RUNNER names;
with the automatic default (Docker when its engine answers, else the local sandbox) one of those
two. The other built-in runners are reported but optional: an install without QEMU is still ready.
Failure details go to the log (once per change), never into the answer, which anyone may read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

import runners
from jobqueue import queueing
from runners.base import Runner
from watchdog.models import Alert

log = logging.getLogger(__name__)

# The checks run at once, so /readyz answers within about this long: give probes a timeout above it.
CHECK_TIMEOUT_SECONDS = 2.0

UP, DOWN, TIMEOUT, NOT_CONFIGURED = "up", "down", "timeout", "not configured"


@dataclass
class _Probe:
    """One run of a check on its own thread."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    error: str = ""  # why it failed, for the log


_inflight: dict[str, _Probe] = {}
_inflight_lock = threading.Lock()
_last_status: dict[str, str] = {}


def _run(probe: _Probe, key: str, check: Callable[[], bool]) -> None:
    try:
        probe.ok = bool(check())
    except Exception as exc:  # any failure of the part means "down"; the answer must not be a 500
        log.debug("readiness check %s failed", key, exc_info=True)
        probe.ok = False
        probe.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        probe.done.set()


def _start(key: str, check: Callable[[], bool]) -> _Probe:
    with _inflight_lock:
        probe = _inflight.get(key)
        if probe is not None and not probe.done.is_set():
            return probe  # the previous probe's check is still running: wait for that one
        probe = _inflight[key] = _Probe()
    # A daemon thread: one that never returns must not keep the server from exiting.
    threading.Thread(target=_run, args=(probe, key, check), name=f"readyz {key}", daemon=True).start()
    return probe


def run_checks(checks: dict[str, tuple[str, Callable[[], bool]]],
               timeout: float) -> dict[str, tuple[str, str]]:
    """Run every check (name -> (identity, function)) at once; after at most `timeout` seconds each
    one's status ("up", "down" or "timeout") and why it is not up."""
    deadline = time.monotonic() + timeout
    probes = {name: _start(f"{name}|{identity}", check) for name, (identity, check) in checks.items()}
    results: dict[str, tuple[str, str]] = {}
    for name, probe in probes.items():
        if not probe.done.wait(max(0.0, deadline - time.monotonic())):
            results[name] = (TIMEOUT, f"no answer within {timeout:g} s")
        elif probe.ok:
            results[name] = (UP, "")
        else:
            results[name] = (DOWN, probe.error or "it answered that it is unavailable")
    return results


# ---- the parts -----------------------------------------------------------------------------------

def _database_up() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    finally:
        connection.close()  # this thread's own connection; it would otherwise stay open


def _redis_up(url: str) -> Callable[[], bool]:
    def check() -> bool:
        client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
                                      socket_timeout=CHECK_TIMEOUT_SECONDS)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return check


def _needed_runners(configured: dict[str, dict[str, Any]], statuses: dict[str, str]) -> set[str]:
    needed = set(settings.LAB_RUNNERS)
    default = settings.LAB_DEFAULT_RUNNER
    if default in configured or default not in ("", "default"):
        needed.add(default)
    else:
        # As runners.resolve_alias picks it: Docker when its engine answers, else the local sandbox.
        needed.add("docker" if statuses.get("docker") == UP else "local")
    return needed


_queue_report: dict[str, Any] = {}  # the figures of the last queue check that finished


def _queue_figures() -> bool:
    global _queue_report
    _queue_report = queueing.queue_figures(settings.LAB_QUEUE_STUCK_SECONDS)
    return True


_alerts_report: dict[str, Any] = {}  # the watchdog's open alerts, from the last check that finished


def _alert_figures() -> bool:
    global _alerts_report
    try:
        _alerts_report = Alert.open_summary(timezone.now())
    finally:
        connection.close()  # this thread's own connection, as _database_up's
    return True


def readiness(require_queue: bool = False, require_alerts: bool = False) -> tuple[bool, dict[str, Any]]:
    """Whether every needed part is up, and the report /readyz answers with. The job queue and the
    watchdog's alerts are reported, but they decide readiness only when asked (`require_queue`,
    `require_alerts`): a web process serves pages while the workers are away or a disk fills up,
    and an orchestrator must not take it out of service for it."""
    checks: dict[str, tuple[str, Callable[[], bool]]] = {"database": ("default", _database_up),
                                                         "alerts": ("default", _alert_figures)}
    if settings.REDIS_URL:
        checks["redis"] = (settings.REDIS_URL, _redis_up(settings.REDIS_URL))
        checks["queue"] = (settings.REDIS_URL, _queue_figures)
    built: dict[str, Runner] = {}
    configured: dict[str, dict[str, Any]] = {}
    settings_problem = ""
    try:
        configured = runners.runner_configs()
        built = {runner.name: runner for runner in runners.all_runners()}
    except Exception as exc:  # a broken LAB_RUNNERS: the runners are down, the probe still answers
        settings_problem = f"{type(exc).__name__}: {exc}"[:300]
    unconfigured = {alias for alias, runner in built.items() if not runner.configured()}
    for alias, runner in built.items():
        if alias not in unconfigured:
            checks[f"runner {alias}"] = (str(id(runner)), runner.available)

    results = run_checks(checks, CHECK_TIMEOUT_SECONDS)
    statuses = {name: status for name, (status, _) in results.items()}
    runner_statuses = {alias: NOT_CONFIGURED if alias in unconfigured else statuses[f"runner {alias}"]
                       for alias in built}
    needed = _needed_runners(configured, runner_statuses)

    report: dict[str, Any] = {
        "database": statuses["database"],
        "redis": statuses.get("redis", NOT_CONFIGURED),
        "runners": {},
    }
    down: list[str] = [name for name in ("database", "redis") if name in statuses and statuses[name] != UP]
    if "queue" in statuses:
        queue = _queue_report if statuses["queue"] == UP else {}
        report["queue"] = {"status": statuses["queue"], **queue}
        if require_queue and (statuses["queue"] != UP or queue.get("stuck")):
            down.append("queue")
    alerts = _alerts_report if statuses["alerts"] == UP else {}
    report["alerts"] = {"status": statuses["alerts"], **alerts}
    if require_alerts and (statuses["alerts"] != UP or alerts.get("host_critical")):
        down.append("alerts")
    for alias in sorted(set(built) | needed):
        status = runner_statuses.get(alias, DOWN if alias in configured else NOT_CONFIGURED)
        report["runners"][alias] = {"status": status, "required": alias in needed}
        if alias in needed and status != UP:
            down.append(f"runner {alias}")
    _log_changes({
        "runner settings": (DOWN if settings_problem else UP, True, settings_problem),
        **{name: (statuses[name], True, results[name][1]) for name in ("database", "redis") if name in statuses},
        **{f"runner {alias}": (entry["status"], entry["required"], results.get(f"runner {alias}", ("", ""))[1])
           for alias, entry in report["runners"].items()},
    })
    ready = not down
    return ready, {"status": "ready" if ready else "not ready", "down": down, "checks": report}


def _log_changes(current: dict[str, tuple[str, bool, str]]) -> None:
    """One log line when a part goes down or comes back, not one per probe; a warning only for the
    parts readiness needs (a QEMU runner missing from a Docker-only install is no news)."""
    for name, (status, needed, detail) in current.items():
        before = _last_status.get(name)
        _last_status[name] = status
        if before == status or (before is None and status == UP):
            continue
        if status == UP:
            log.info("readiness: %s is up again", name)
        else:
            log.log(logging.WARNING if needed else logging.INFO, "readiness: %s is %s%s%s", name, status,
                    "" if needed else " (optional)", f": {detail}" if detail else "")


# ---- the views -----------------------------------------------------------------------------------

def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "HEAD"])
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up. Nothing else is touched, so a database outage never restarts the server."""
    return _no_store(HttpResponse("ok", content_type="text/plain; charset=utf-8"))


@require_http_methods(["GET", "HEAD"])
def readyz(request: HttpRequest) -> HttpResponse:
    # `?require=queue`: for uptime checkers, a stuck job queue (jobs waiting with no worker, or
    # waiting longer than LAB_QUEUE_STUCK_SECONDS) answers 503 too; `?require=alerts`, a critical
    # alert on the host (the watchdog's); `?require=queue,alerts` (or the parameter twice), both.
    required = {part.strip() for value in request.GET.getlist("require") for part in value.split(",")}
    ready, report = readiness(require_queue="queue" in required, require_alerts="alerts" in required)
    return _no_store(JsonResponse(report, status=200 if ready else 503))
