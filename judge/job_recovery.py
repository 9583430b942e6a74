"""Checks and hints waiting for a job that will never come, repaired on the reaper's next pass
(the sessions' side and the reasons are in sessions_app/job_recovery.py).

- A queued check whose job is missing is queued again. A check whose job failed (its worker
  died: a check is not run twice, since its first run may have changed the learner's
  environment) ends with an error that says to run it again.
- A pending hint whose job is missing is queued again while an answer is still awaited.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from jobqueue.queueing import enqueue_on_commit
from judge import jobs
from judge.hints.answers import answer_awaited_for
from judge.hints.jobs import answer_hint_job
from judge.models import Attempt, HintRequest
from judge.progress import STALE_AFTER
from sessions_app.job_recovery import RECOVER_AFTER_SECONDS, Recovered, statuses_by_pk
from sessions_app.row_claims import claim_in_batches

CHECK_INTERRUPTED = "The check was interrupted: the worker running it stopped. Run it again."


def recover_checks(now: datetime) -> Recovered:
    done = Recovered()
    waiting = Attempt.objects.filter(
        Q(status=Attempt.Status.QUEUED) | Q(status=Attempt.Status.RUNNING),
        created_at__gt=now - STALE_AFTER,  # older ones are closed by close_stale_attempts
        created_at__lte=now - timedelta(seconds=RECOVER_AFTER_SECONDS),
    )

    def repair(ids: list[int]) -> int:
        statuses = statuses_by_pk(ids, lambda pk: f"judge-attempt-{pk}", queue="judge")
        queued = set(Attempt.objects.filter(pk__in=ids, status=Attempt.Status.QUEUED).values_list("pk", flat=True))
        lost = [pk for pk in ids if statuses[pk] is None and pk in queued]
        for pk in lost:
            enqueue_on_commit(jobs.run_attempt, pk, job_id=f"judge-attempt-{pk}", queue="judge")
        abandoned = [pk for pk in ids if statuses[pk] == "failed"]
        failed = (
            Attempt.objects.filter(pk__in=abandoned)
            .filter(Q(status=Attempt.Status.QUEUED) | Q(status=Attempt.Status.RUNNING))
            .update(status=Attempt.Status.ERROR, finished_at=timezone.now(), result={"error": CHECK_INTERRUPTED})
        )
        done.requeued += len(lost)
        done.failed += failed
        return len(lost) + failed

    claim_in_batches(waiting, repair)
    return done


def recover_hints(now: datetime) -> Recovered:
    waiting = HintRequest.objects.filter(
        source=HintRequest.Source.PENDING,
        created_at__gt=now - answer_awaited_for(),
        created_at__lte=now - timedelta(seconds=RECOVER_AFTER_SECONDS),
    )

    def repair(ids: list[int]) -> int:
        statuses = statuses_by_pk(ids, lambda pk: f"hint-{pk}")
        lost = [pk for pk in ids if statuses[pk] is None]
        for pk in lost:
            enqueue_on_commit(answer_hint_job, pk, job_id=f"hint-{pk}")
        return len(lost)

    return Recovered(requeued=claim_in_batches(waiting, repair))


def recover(now: datetime) -> Recovered:
    return recover_checks(now) + recover_hints(now)
