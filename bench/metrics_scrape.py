"""/metrics scrape cost: time and queries per scrape with 1,000 sessions in the database.

On the configured database (DATABASE_URL; without it a throwaway SQLite file in a temporary
directory, migrated here), inside one transaction that is rolled back at the end so nothing stays:
1,000 sessions in every state (most running, some starting, stopping and ended, with request →
running and → first shell byte times), judge attempts (every verdict), hint requests and a day of
reaper and reconciler passes. Then, interleaved round by round so that drift hits every case
alike, through one Django test client and one database connection:

    /metrics, no rows     the scrape before the rows are made (measured first, same run)
    /metrics, 1,000       the scrape with them: access check, every query, the text encoding
    GET /healthz          the baseline: the same client and middleware, a view that does nothing
    SELECT 1              one query's round trip on the same connection

With REDIS_URL set, the job-queue figures (a few Redis calls) are part of every scrape. Prints the
median with min–max per case, the ratio of each scrape to the /healthz baseline, queries and bytes
per scrape (queries counted on a separate, untimed scrape). Figures, no verdicts.

    .venv/bin/python bench/metrics_scrape.py [--sessions 1000] [--attempts 3000] [--hints 1000]
        [--rounds 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Rollback(Exception):
    """Raised at the end of the run to undo every row it made."""


def setup_django(data_dir: str | None) -> None:
    if data_dir is not None:  # no database configured: a throwaway SQLite file
        os.environ["LAB_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    if data_dir is not None:
        call_command("migrate", verbosity=0)
        return
    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        sys.exit(f"{settings.DATABASES['default']['NAME']} has {len(pending)} unapplied migrations: "
                 "run `python manage.py migrate` first (this benchmark changes nothing it keeps).")


def make_rows(n_sessions: int, n_attempts: int, n_hints: int) -> dict[str, int]:
    """Sessions in every state, attempts, hints and a day of housekeeping passes, at realistic times."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from judge.models import Attempt, HintRequest
    from labs.models import Image, Lab
    from sessions_app.models import EndReason, HousekeepingPass, Session, State

    rng = random.Random(42)  # the same rows every run
    now = timezone.now()
    run = uuid.uuid4().hex[:8]
    image = Image.objects.create(name=f"bench-metrics-{run}", reference="labs/busybox:latest")
    runners = ["docker", "docker", "docker", "local", "qemu", "kubernetes"]
    labs = [Lab.objects.create(slug=f"bench-{run}-{i}", title=f"Bench {i}", image=image, runner=runners[i % 6],
                               published=True) for i in range(12)]
    users = User.objects.bulk_create([User(username=f"bench-{run}-{i}") for i in range(200)])

    # (state, share): most running, a few starting and stopping, the rest ended in the last hour.
    mix = [(State.RUNNING, 0.6), (State.REQUESTED, 0.04), (State.PROVISIONING, 0.06), (State.STOPPING, 0.05),
           (State.STOPPED, 0.15), (State.FAILED, 0.05), (State.EXPIRED, 0.05)]
    reasons = {State.STOPPED: [EndReason.LEARNER, EndReason.IDLE, EndReason.STAFF], State.FAILED:
               [EndReason.ERROR, EndReason.VANISHED], State.EXPIRED: [EndReason.EXPIRED, EndReason.IDLE]}
    sessions: list[Session] = []
    created: dict[uuid.UUID, Any] = {}
    for state, share in mix:
        for _ in range(round(n_sessions * share)):
            made = now - timedelta(minutes=rng.uniform(0, 120))
            to_run = timedelta(seconds=rng.lognormvariate(1.5, 0.8))
            ran = state in (State.RUNNING, State.STOPPING, State.STOPPED, State.EXPIRED)
            ended = state in (State.STOPPED, State.FAILED, State.EXPIRED)
            session = Session(
                id=uuid.uuid4(), user=rng.choice(users), lab=rng.choice(labs), state=state,
                runner_name=rng.choice(["", "docker", "local"]),
                started_at=made + to_run if ran else None,
                first_output_at=made + to_run + timedelta(seconds=rng.uniform(0.3, 4)) if ran and rng.random() < .9
                else None,
                ended_at=min(now, made + timedelta(minutes=rng.uniform(1, 60))) if ended else None,
                end_reason=rng.choice(reasons[state]) if ended else "")
            sessions.append(session)
            created[session.id] = made
    sessions = Session.objects.bulk_create(sessions, batch_size=500)
    # created_at is auto_now_add: set the request times afterwards, a minute's worth at a time.
    by_minute: dict[int, list[uuid.UUID]] = {}
    for pk, made in created.items():
        by_minute.setdefault(int((now - made).total_seconds() // 60), []).append(pk)
    for minutes, ids in by_minute.items():
        Session.objects.filter(pk__in=ids).update(created_at=now - timedelta(minutes=minutes))

    statuses = [(Attempt.Status.DONE, True), (Attempt.Status.DONE, False), (Attempt.Status.ERROR, None),
                (Attempt.Status.QUEUED, None), (Attempt.Status.RUNNING, None)]
    attempts = []
    for _ in range(n_attempts):
        status, passed = rng.choices(statuses, weights=[50, 35, 5, 5, 5])[0]
        session = rng.choice(sessions)
        attempts.append(Attempt(user_id=session.user_id, session=session, lab_id=session.lab_id, status=status,
                                passed=passed, duration_ms=int(rng.lognormvariate(7.5, 1.2))
                                if status in (Attempt.Status.DONE, Attempt.Status.ERROR) else None))
    Attempt.objects.bulk_create(attempts, batch_size=1000)
    hints = [HintRequest(user_id=(s := rng.choice(sessions)).user_id, session=s,
                         source=rng.choice([HintRequest.Source.GEMINI, HintRequest.Source.FALLBACK,
                                            HintRequest.Source.PENDING])) for _ in range(n_hints)]
    HintRequest.objects.bulk_create(hints, batch_size=1000)

    # A day of passes at the loops' default intervals: the reaper every 30 s, the reconciler every 5 min.
    passes = [HousekeepingPass(kind=HousekeepingPass.Kind.REAP, started_at=now - timedelta(seconds=30 * i),
                               duration_seconds=rng.uniform(0.02, 0.3), sessions_handled=rng.randint(0, 3))
              for i in range(2880, 0, -1)]
    passes += [HousekeepingPass(kind=HousekeepingPass.Kind.RECONCILE, started_at=now - timedelta(seconds=300 * i),
                                duration_seconds=rng.uniform(0.2, 3), orphans_removed=rng.randint(0, 2))
               for i in range(288, 0, -1)]
    HousekeepingPass.objects.bulk_create(passes, batch_size=1000)
    return {"sessions": len(sessions), "attempts": len(attempts), "hints": len(hints), "passes": len(passes)}


def analyze() -> None:
    """Fresh statistics, so PostgreSQL plans the scrape's queries for the rows now there."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for table in ("sessions_app_session", "judge_attempt", "judge_hintrequest",
                          "sessions_app_housekeepingpass"):
                cursor.execute(f"ANALYZE {table}")


def timed(action: Callable[[], Any]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def line(label: str, samples: list[float], base: list[float] | None) -> str:
    ms = [s * 1000 for s in samples]
    text = f"{label:<22} p50 {statistics.median(ms):8.2f} ms   min–max {min(ms):7.2f}–{max(ms):7.2f} ms"
    if base:
        text += f"   {statistics.median(samples) / statistics.median(base):6.1f}× /healthz"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--attempts", type=int, default=3000)
    parser.add_argument("--hints", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        setup_django(None if os.environ.get("DATABASE_URL") else data_dir)
        run(args)


def run(args: argparse.Namespace) -> None:
    from django.conf import settings
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections, connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # Requests run inside the run's transaction (as in Django's own TestCase): a request's end must
    # not close the connection, which would end it.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    client = Client()  # from 127.0.0.1: loopback may scrape

    def scrape() -> bytes:
        response = client.get("/metrics")
        assert response.status_code == 200, response.status_code
        return response.content

    def healthz() -> None:
        assert client.get("/healthz").status_code == 200

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    samples: dict[str, list[float]] = {"/metrics, no rows": [], f"/metrics, {args.sessions:,}": [],
                                       "GET /healthz": [], "SELECT 1": []}
    try:
        with transaction.atomic():
            for round_number in range(args.warmup + args.rounds):  # the empty database first
                empty = timed(scrape)
                if round_number >= args.warmup:
                    samples["/metrics, no rows"].append(empty)
            with CaptureQueriesContext(connection) as empty_queries:
                empty_body = scrape()
            began = time.perf_counter()
            made = make_rows(args.sessions, args.attempts, args.hints)
            analyze()
            made_in = time.perf_counter() - began
            cases = {f"/metrics, {args.sessions:,}": scrape, "GET /healthz": healthz, "SELECT 1": select_one}
            for round_number in range(args.warmup + args.rounds):
                for label, action in cases.items():
                    took = timed(action)
                    if round_number >= args.warmup:
                        samples[label].append(took)
            with CaptureQueriesContext(connection) as full_queries:
                full_body = scrape()
            raise Rollback
    except Rollback:
        pass

    database = connection.settings_dict
    print(f"/metrics scrape cost, {args.rounds} rounds (after {args.warmup} warm-up rounds), on "
          f"{connection.vendor} {database['NAME']} (rolled back: nothing kept)")
    print(f"rows: {made['sessions']:,} sessions (every state), {made['attempts']:,} attempts, {made['hints']:,} hints, "
          f"{made['passes']:,} housekeeping passes; made in {made_in:.1f} s")
    print("job-queue figures: " + ("from Redis (REDIS_URL), part of every scrape" if settings.REDIS_URL
                                   else "left out (no REDIS_URL)"))
    base = samples["GET /healthz"]
    for label, values in samples.items():
        print(line(label, values, None if label in ("GET /healthz", "SELECT 1") else base))
    print(f"queries per scrape: {len(empty_queries)} with no rows, {len(full_queries)} with the rows "
          f"(SELECT 1: {statistics.median(samples['SELECT 1']) * 1000:.2f} ms each)")
    print(f"bytes per scrape: {len(empty_body):,} with no rows, {len(full_body):,} with the rows")
    extra = statistics.median(samples[f"/metrics, {args.sessions:,}"]) - statistics.median(base)
    print(f"a scrape costs {extra * 1000:.1f} ms more than the baseline request, "
          f"{extra / max(len(full_queries), 1) * 1000:.2f} ms per query on average")


if __name__ == "__main__":
    main()
