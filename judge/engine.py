"""Running checks against a session, and the attempt workflow the RQ job drives.

``run_checks`` runs a list of checks in order through a ``CheckContext`` and folds their
outcomes into one ``JudgeResult``. ``execute_attempt`` claims a queued Attempt, runs the
step's ``verify`` (or the lab's final ``judge``) against its session, streams the log into
the row while it runs, and records the result. It is idempotent: an attempt that is not
queued any more is left alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from django.utils import timezone

from judge import steps
from judge.checks import CheckContext, JudgeError, get_kind, validate_checks
from judge.models import Attempt
from judge.results import CheckReport, JudgeResult
from runners.base import PollStatus, RunnerError
from sessions_app.models import State

log = logging.getLogger(__name__)

LOG_LIMIT = 200_000  # characters of Attempt.log; the end is kept
LOG_INTERVAL = 0.5  # seconds between writes of the streamed log


class AttemptLog:
    """Collects an attempt's log and writes it to the row at most every ``interval`` seconds."""

    def __init__(self, attempt_id: int, interval: float = LOG_INTERVAL, limit: int = LOG_LIMIT) -> None:
        self.attempt_id = attempt_id
        self.interval = interval
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0
        # The first write goes out at once (not "monotonic() >= interval": uptime may be short).
        self._last_write = float("-inf")
        self._dirty = False

    def write(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        self.size += len(text)
        self._dirty = True
        if self.size > self.limit * 2:
            self._compact()
        if time.monotonic() - self._last_write >= self.interval:
            self.flush()

    def _compact(self) -> None:
        text = "".join(self.parts)
        cut = len(text) - self.limit
        self.dropped += cut
        self.parts = [text[cut:]]
        self.size = self.limit

    def text(self) -> str:
        if self.size > self.limit:
            self._compact()
        body = "".join(self.parts)
        return f"[… {self.dropped} earlier characters not kept …]\n{body}" if self.dropped else body

    def flush(self) -> None:
        if self._dirty:
            Attempt.objects.filter(pk=self.attempt_id).update(log=self.text())
            self._dirty = False
        self._last_write = time.monotonic()


def run_checks(ctx: CheckContext, specs: list[dict[str, Any]]) -> JudgeResult:
    """Run ``specs`` in order; every check runs, and the result passes only if all pass."""
    problems = validate_checks(specs, ctx.lab_dir)
    if problems:
        shown = "; ".join(f"{'.'.join(str(p) for p in path)}: {message}" for path, message in problems[:3])
        raise JudgeError(f"this lab's checks are not valid ({shown})")
    result = JudgeResult(passed=True)
    total = len(specs)
    for number, spec in enumerate(specs, start=1):
        kind = get_kind(spec["kind"])
        assert kind is not None  # validated above
        title = kind.title(spec)
        ctx.log(f"==> [{number}/{total}] {title}\n")
        started = time.monotonic()
        outcome = kind.finish(kind.run(ctx, spec), spec)
        report = CheckReport(kind=kind.kind, title=title, passed=outcome.passed, skipped=outcome.skipped,
                             duration_ms=int((time.monotonic() - started) * 1000), failures=outcome.failures)
        result.checks.append(report)
        result.failures.extend(outcome.failures)
        result.metrics.update(outcome.metrics)
        for name, text in outcome.notes.items():
            key, copy = name, 2
            while key in result.notes:
                key, copy = f"{name} ({copy})", copy + 1
            result.add_note(key, text)
        if outcome.skipped:
            ctx.log("    skipped\n")
        elif outcome.passed:
            ctx.log("    passed\n")
        else:
            for failure in outcome.failures:
                ctx.log(f"    failed [{failure.code}]: {failure.message}\n")
    result.passed = not result.failures
    return result


def _checks_for(attempt: Attempt) -> list[dict[str, Any]]:
    checks = attempt.step.verify if attempt.step is not None else attempt.lab.judge
    return list(checks or [])


def _finish(attempt: Attempt, started: float, *, status: str, passed: bool | None, result: dict[str, Any],
            attempt_log: AttemptLog) -> None:
    attempt.status = status
    attempt.passed = passed
    attempt.result = result
    attempt.log = attempt_log.text()
    attempt.duration_ms = int((time.monotonic() - started) * 1000)
    attempt.finished_at = timezone.now()
    Attempt.objects.filter(pk=attempt.pk, status=Attempt.Status.RUNNING).update(
        status=status, passed=passed, result=result, log=attempt.log, duration_ms=attempt.duration_ms,
        finished_at=attempt.finished_at,
    )


def execute_attempt(attempt_id: int) -> Attempt | None:
    """Run a queued attempt to the end; None when it was not queued (already run, or gone)."""
    if not Attempt.objects.filter(pk=attempt_id, status=Attempt.Status.QUEUED).update(
        status=Attempt.Status.RUNNING
    ):
        return None
    attempt = Attempt.objects.select_related("session", "lab", "step", "session__lab").get(pk=attempt_id)
    started = time.monotonic()
    attempt_log = AttemptLog(attempt.pk)
    try:
        result = _judge(attempt, attempt_log)
    except JudgeError as exc:
        attempt_log.write(f"\nThe check could not run: {exc}\n")
        _finish(attempt, started, status=Attempt.Status.ERROR, passed=None, result={"error": str(exc)},
                attempt_log=attempt_log)
    except Exception:
        log.exception("judge attempt %s failed", attempt_id)
        message = "The judge failed unexpectedly; staff can find the details in the worker's log."
        _finish(attempt, started, status=Attempt.Status.ERROR, passed=None, result={"error": message},
                attempt_log=attempt_log)
    else:
        attempt_log.write(f"\n{'Passed' if result.passed else 'Not yet'}: "
                          f"{len(result.checks) - sum(1 for c in result.checks if not c.passed)} of "
                          f"{len(result.checks)} checks passed.\n")
        _finish(attempt, started, status=Attempt.Status.DONE, passed=result.passed, result=result.to_dict(),
                attempt_log=attempt_log)
        if result.passed and attempt.step_id is not None and attempt.session is not None:
            _start_next_steps(attempt)
    return attempt


def _start_next_steps(attempt: Attempt) -> None:
    """A passed step opens the next: queue its background script. Never fails the attempt."""
    try:
        assert attempt.session is not None
        steps.start_open_steps(attempt.session)
    except Exception:
        log.exception("starting the steps after attempt %s", attempt.pk)


def _judge(attempt: Attempt, attempt_log: AttemptLog) -> JudgeResult:
    session = attempt.session
    if session is None or session.state != State.RUNNING or not session.runner_state:
        raise JudgeError("the session is not running, so there is nothing to check")
    try:
        runner = session.runner()
        if runner.poll(session.runner_state) != PollStatus.RUNNING:
            raise JudgeError("the session's environment is not running")
    except RunnerError as exc:
        raise JudgeError(f"the session's environment cannot be reached: {exc}") from exc
    lab = attempt.lab
    ctx = CheckContext(runner, session.runner_state, lab_dir=Path(lab.source_path) if lab.source_path else None,
                       log=attempt_log, label=str(attempt.pk))
    try:
        return run_checks(ctx, _checks_for(attempt))
    except RunnerError as exc:
        raise JudgeError(f"the session's environment failed during the check: {exc}") from exc
    finally:
        ctx.run_cleanups()
