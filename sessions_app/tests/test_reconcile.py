"""Reconciliation makes the runners and the database agree, both ways.

`reconcile()` visits every configured runner: the built-in Docker, local and QEMU runners too.
Left as they are, those would scan the shared test Docker label, the persistent
LAB_DATA_DIR (its local-sessions and vm-sessions) and the host's QEMU processes, so leftovers of
other tests (or of another test run on the same machine) would be counted here, and worse,
removed. The autouse fixture gives every real runner a label and directories of this test's own,
so each test only ever sees what it created.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runners import all_runners, fake, get_runner, reset_cache
from runners.base import ManagedEnvironment, SessionSpec
from runners.fake import FakeRunner
from sessions_app import actions
from sessions_app import reconcile as reconcile_module
from sessions_app.models import EndReason, HousekeepingPass, Session, SessionEvent, State
from sessions_app.reconcile import ReconcileReport, reconcile

FAKES = ("fake", "fake-slow", "fake-failing")
VANISHED_MESSAGE = "Your environment disappeared; the session has ended."


class SlowListingFakeRunner(FakeRunner):
    """The fake runner, but listing takes a while (like a busy engine), so two reconcilers
    started together are both between "list" and "remove" at the same time."""

    def list_managed(self) -> list[ManagedEnvironment]:
        time.sleep(float(self.options.get("list_delay", 0)))
        return super().list_managed()


@pytest.fixture(autouse=True)
def own_runners(settings, tmp_path) -> dict[str, Any]:
    """Every runner reconcile() visits is this test's own: its own Docker label, its own
    directories for local and VM sessions, its own QEMU process names."""
    instance = f"labsrec{uuid.uuid4().hex[:8]}"
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    runners = {
        alias: config for alias, config in settings.LAB_RUNNERS.items() if alias in FAKES
    }
    runners.update({
        "docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"instance": instance}},
        "docker-vm": {"BACKEND": "runners.docker_vm.DockerVmRunner", "OPTIONS": {"instance": instance}},
        "local": {"BACKEND": "runners.local.LocalRunner",
                  "OPTIONS": {"root": str(tmp_path / "local-sessions")}},
        # No kubeconfig: unavailable, so reconcile passes it by (runners/tests cover it on the double).
        "kubernetes": {"BACKEND": "runners.kubernetes.KubernetesRunner", "OPTIONS": {"instance": instance}},
        "qemu": {"BACKEND": "runners.qemu.QemuRunner",
                 "OPTIONS": {"instance": instance, "root": str(tmp_path / "vm-sessions")}},
    })
    settings.LAB_RUNNERS = runners
    reset_cache()
    # A runner added to the built-ins later would scan shared places again: say so here.
    assert {runner.name for runner in all_runners()} == set(runners), "give the new runner an isolated config"
    yield runners
    reset_cache()


@pytest.fixture
def running(owner, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    return session


def test_an_environment_no_session_owns_is_removed(running):
    orphan = get_runner("fake").start(
        SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="x", lab_slug="x", image="x")
    )
    report = reconcile()
    assert report.orphans_removed == 1
    assert orphan.state["env_id"] not in fake.ENVIRONMENTS
    assert running.runner_state["env_id"] in fake.ENVIRONMENTS  # the live session's is kept
    assert report.errors == []


def test_the_environment_of_an_ended_session_is_removed(running):
    Session.objects.filter(pk=running.pk).update(state=State.STOPPED)
    assert reconcile().orphans_removed == 1
    assert fake.ENVIRONMENTS == {}


def test_a_running_session_whose_environment_vanished_is_marked_failed(running):
    fake.ENVIRONMENTS.clear()  # removed behind the platform's back
    report = reconcile()
    running.refresh_from_db()
    assert report.sessions_failed == 1
    assert (running.state, running.end_reason) == (State.FAILED, EndReason.VANISHED)
    assert "disappeared" in running.error


def test_a_session_whose_environment_stopped_from_inside_is_stopped_and_its_remains_removed(
    running, django_capture_on_commit_callbacks
):
    # Still there, but stopped from inside (a VM the learner powered off): the session ends as a stop.
    fake.ENVIRONMENTS[running.runner_state["env_id"]]["running"] = False
    with django_capture_on_commit_callbacks(execute=True):
        report = reconcile()
    running.refresh_from_db()
    assert (report.orphans_removed, report.sessions_failed, report.sessions_stopped, report.errors) == (0, 0, 1, [])
    assert (running.state, running.end_reason) == (State.STOPPED, EndReason.LEARNER)
    assert running.events.filter(message__startswith="Your environment stopped from inside").exists()
    assert fake.ENVIRONMENTS == {}


def test_reconcile_twice_is_harmless(running):
    fake.ENVIRONMENTS.clear()
    reconcile()
    second = reconcile()
    assert (second.orphans_removed, second.sessions_failed) == (0, 0)


def test_a_pass_records_its_duration_the_orphans_it_removed_and_the_sessions_it_failed(running, owner, lab):
    for _ in range(3):
        get_runner("fake").start(
            SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="x", lab_slug="x", image="x"))
    vanished = _sessions(owner, lab, 1, State.RUNNING, with_environment=False)
    before = timezone.now()
    report = reconcile()
    assert (report.orphans_removed, report.sessions_failed) == (3, 1)
    row = HousekeepingPass.objects.get()
    assert row.kind == HousekeepingPass.Kind.RECONCILE
    assert before <= row.started_at <= timezone.now()
    assert 0 <= row.duration_seconds < 30
    assert (row.orphans_removed, row.sessions_handled) == (3, 1)
    assert Session.objects.get(pk=vanished[0].pk).state == State.FAILED


def test_the_command_reports_counts(running, capsys):
    call_command("reconcile_runners")
    assert "orphans_removed=0 sessions_failed=0 sessions_stopped=0" in capsys.readouterr().out


def test_only_this_tests_own_places_are_scanned(db, tmp_path):
    """The isolation itself: the real runners look under this test's directories and label, so
    with nothing created here a pass finds nothing, whatever other tests left behind."""
    local, qemu, docker_runner = get_runner("local"), get_runner("qemu"), get_runner("docker")
    assert local.root == tmp_path / "local-sessions"  # type: ignore[attr-defined]
    assert qemu.root == (tmp_path / "vm-sessions").absolute()  # type: ignore[attr-defined]
    assert docker_runner.instance == qemu.instance  # type: ignore[attr-defined]
    assert docker_runner.instance.startswith("labsrec")  # type: ignore[attr-defined]
    assert reconcile() == ReconcileReport()


# ---- many rows, and two reconcilers at once -------------------------------------------------


def _orphan(session_id: str, runner: str = "fake") -> str:
    env_id = uuid.uuid4().hex
    fake.ENVIRONMENTS[env_id] = {"session_id": session_id, "runner": runner, "running": True, "files": {},
                                 "spec": None, "exec_log": []}
    return env_id


def _sessions(user: Any, lab: Any, count: int, state: str, with_environment: bool) -> list[Session]:
    """`count` sessions on the fake runner, inserted in one go; an environment each if asked."""
    now = timezone.now()
    rows = []
    for _ in range(count):
        session_id = uuid.uuid4()
        env_id = _orphan(str(session_id)) if with_environment else uuid.uuid4().hex
        rows.append(Session(
            id=session_id, user=user, lab=lab, state=state, runner_name="fake", runner_state={"env_id": env_id},
            started_at=now, expires_at=now + timedelta(hours=1), last_active_at=now,
            ended_at=now if state in (State.STOPPED, State.FAILED, State.EXPIRED) else None,
        ))
    return Session.objects.bulk_create(rows, batch_size=500)


def test_thousands_of_rows_are_handled_in_batches(owner, lab):
    """2,000 running sessions, 2,000 ended ones still holding environments and a few vanished:
    the database work stays a handful of chunked queries plus a fixed cost per vanished session,
    never one query per row, and no IN list is longer than a chunk."""
    healthy = _sessions(owner, lab, 2000, State.RUNNING, with_environment=True)
    ended = _sessions(owner, lab, 2000, State.STOPPED, with_environment=True)
    vanished = _sessions(owner, lab, 5, State.RUNNING, with_environment=False)
    chunk = reconcile_module.CHUNK

    with CaptureQueriesContext(connection) as queries:
        report = reconcile()

    assert report.errors == []
    assert report.orphans_removed == len(ended)
    assert report.sessions_failed == len(vanished)
    assert len(fake.ENVIRONMENTS) == len(healthy)
    assert Session.objects.filter(state=State.RUNNING).count() == len(healthy)
    # Looking up which of the 4,000 listed environments belong to live sessions: chunked.
    sqls = [q["sql"] for q in queries.captured_queries]
    lookups = [sql for sql in sqls if '"state" IN' in sql]
    assert len(lookups) == -(-(len(healthy) + len(ended)) // chunk)
    runners = sum(runner.available() for runner in all_runners())  # an unavailable one is passed by
    if connection.vendor == "postgresql":
        assert all(sql.count("::uuid") <= chunk for sql in lookups)
        # The running sessions are streamed through a server-side cursor, never loaded at once.
        assert sum(sql.startswith("DECLARE") for sql in sqls) == runners
    # Everything else: per runner its claim, its scan and its release; per vanished session a
    # savepoint, its row lock, its state change, its log line and the release; per pass its record
    # (the row and the pruning of old ones). Nothing per healthy row.
    per_runner, per_vanished, per_pass = 3, 5, 2
    assert len(queries) <= len(lookups) + per_runner * runners + per_vanished * len(vanished) + per_pass, "\n".join(
        sql[:100] for sql in sqls
    )


def _run_together(count: int) -> list[ReconcileReport]:
    """`count` reconcile() passes started at the same instant, each in its own thread and
    database connection (as two `reconcile_runners` processes would be)."""
    start = threading.Barrier(count)
    reports: list[ReconcileReport] = []
    failures: list[BaseException] = []

    def one() -> None:
        try:
            start.wait(timeout=10)
            reports.append(reconcile())
        except BaseException as exc:  # reported below: a thread's exception would vanish otherwise
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert len(reports) == count, "a reconciler did not finish"
    return reports


@pytest.mark.django_db(transaction=True)
def test_two_reconcilers_at_once_remove_each_orphan_once_and_fail_each_session_once(
    owner, lab, settings, own_runners
):
    if connection.vendor != "postgresql":
        pytest.fail("this test needs PostgreSQL (row locks with SKIP LOCKED, real concurrent connections)")
    # Listing takes a moment, so both passes hold the same list of environments before removing any.
    settings.LAB_RUNNERS = {**own_runners, "fake": {
        "BACKEND": f"{__name__}.SlowListingFakeRunner", "OPTIONS": {"list_delay": 0.5}}}
    reset_cache()
    healthy = _sessions(owner, lab, 20, State.RUNNING, with_environment=True)
    ended = _sessions(owner, lab, 15, State.STOPPED, with_environment=True)
    strays = [_orphan(str(uuid.uuid4())) for _ in range(10)]  # no session row at all
    vanished = _sessions(owner, lab, 25, State.RUNNING, with_environment=False)

    reports = _run_together(2)

    assert [r.errors for r in reports] == [[], []]
    assert sum(r.orphans_removed for r in reports) == len(ended) + len(strays)
    assert sum(r.sessions_failed for r in reports) == len(vanished)
    assert sorted(env["session_id"] for env in fake.ENVIRONMENTS.values()) == sorted(str(s.pk) for s in healthy)
    for session in vanished:
        session.refresh_from_db()
        assert (session.state, session.end_reason) == (State.FAILED, EndReason.VANISHED)
        assert SessionEvent.objects.filter(session=session, message=VANISHED_MESSAGE).count() == 1
    assert Session.objects.filter(pk__in=[s.pk for s in healthy], state=State.RUNNING).count() == len(healthy)
