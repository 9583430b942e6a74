"""Rows for the metrics tests: sessions, attempts, hints and housekeeping passes made with the ORM at
known times, and a scrape of the real view parsed with prometheus_client's own parser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from judge.models import Attempt, HintRequest
from labs.models import Lab
from sessions_app.models import EndReason, HousekeepingPass, Session, State


@dataclass
class Scrape:
    status: int
    content_type: str
    text: str

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample, keyed by its name and labels."""
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(self.text) for sample in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.samples()[(name, frozenset(labels.items()))]

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: value for (sample, labels), value in self.samples().items() if sample == name}

    def sample_names(self) -> set[str]:
        return {name for name, _ in self.samples()}


def scrape(client: Client | None = None, **extra: Any) -> Scrape:
    response = (client or Client()).get("/metrics", **extra)
    return Scrape(response.status_code, response.get("Content-Type", ""), response.content.decode())


def make_session(lab: Lab, user: Any, state: str, *, created: datetime, runner_name: str = "",
                 started: datetime | None = None, ended: datetime | None = None, end_reason: str = "",
                 first_output: datetime | None = None) -> Session:
    session = Session.objects.create(user=user, lab=lab, state=state, runner_name=runner_name,
                                     started_at=started, ended_at=ended, end_reason=end_reason,
                                     first_output_at=first_output)
    Session.objects.filter(pk=session.pk).update(created_at=created)  # auto_now_add ignores a given value
    return session


@pytest.fixture
def docker_lab(container_image) -> Lab:
    return Lab.objects.create(slug="docker-basics", title="Docker basics", image=container_image, runner="docker",
                              consoles=["terminal"], published=True)


@pytest.fixture
def now() -> datetime:
    return timezone.now()


@pytest.fixture
def sessions(lab, docker_lab, owner, now) -> dict[str, Session]:
    """Sessions of both labs in every state (lab `hello-shell` runs on `fake`, `docker-basics` on `docker`)."""
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    return {
        # running: request → running took 3 s, 45 s (its runner from the lab) and 1.5 s; request →
        # first shell byte 4 s, 50 s and 2.5 s
        "quick": make_session(lab, owner, State.RUNNING, runner_name="fake", created=ago(minutes=5),
                              started=ago(minutes=5) + timedelta(seconds=3),
                              first_output=ago(minutes=5) + timedelta(seconds=4)),
        "slow": make_session(lab, owner, State.RUNNING, created=ago(minutes=4),
                             started=ago(minutes=4) + timedelta(seconds=45),
                             first_output=ago(minutes=4) + timedelta(seconds=50)),
        "docker": make_session(docker_lab, owner, State.RUNNING, runner_name="docker", created=ago(minutes=10),
                               started=ago(minutes=10) + timedelta(milliseconds=1500),
                               first_output=ago(minutes=10) + timedelta(milliseconds=2500)),
        # failed before it ran
        "failed": make_session(docker_lab, owner, State.FAILED, runner_name="docker", created=ago(minutes=3),
                               ended=ago(minutes=2), end_reason=EndReason.ERROR),
        "starting": make_session(docker_lab, owner, State.PROVISIONING, runner_name="docker", created=ago(minutes=1)),
        "queued": make_session(lab, owner, State.REQUESTED, created=ago(seconds=30)),
        # stopped while it was starting, not ended yet
        "cancelled": make_session(lab, owner, State.STOPPING, runner_name="fake", created=ago(minutes=6),
                                  end_reason=EndReason.LEARNER),
        # requested two hours ago (outside the window), idle-stopped five minutes ago (inside it)
        "old-idle": make_session(lab, owner, State.STOPPED, runner_name="fake", created=ago(hours=2),
                                 started=ago(hours=2) + timedelta(seconds=2), ended=ago(minutes=5),
                                 end_reason=EndReason.IDLE, first_output=ago(hours=2) + timedelta(seconds=3)),
        # ran 10 s after its request, stopped by the learner a minute ago (no terminal ever opened)
        "stopped": make_session(lab, owner, State.STOPPED, runner_name="fake", created=ago(minutes=8),
                                started=ago(minutes=8) + timedelta(seconds=10), ended=ago(minutes=1),
                                end_reason=EndReason.LEARNER),
        # long gone: outside every window
        "ancient": make_session(lab, owner, State.EXPIRED, runner_name="fake", created=ago(days=1),
                                started=ago(days=1) + timedelta(seconds=4), ended=ago(hours=20),
                                end_reason=EndReason.EXPIRED),
    }


@pytest.fixture
def attempts(lab, owner, sessions) -> list[Attempt]:
    def attempt(status: str, passed: bool | None, duration_ms: int | None) -> Attempt:
        return Attempt.objects.create(user=owner, session=sessions["quick"], lab=lab, status=status, passed=passed,
                                      duration_ms=duration_ms)

    done, error = Attempt.Status.DONE, Attempt.Status.ERROR
    return [
        attempt(done, True, 800), attempt(done, True, 4000), attempt(done, False, 1500),
        attempt(error, None, None), attempt(error, None, 70_000),
        attempt(Attempt.Status.QUEUED, None, None), attempt(Attempt.Status.RUNNING, None, None),
    ]


@pytest.fixture
def hints(owner, sessions, now) -> list[HintRequest]:
    def hint(source: str, minutes_ago: int) -> HintRequest:
        made = HintRequest.objects.create(user=owner, session=sessions["quick"], source=source)
        HintRequest.objects.filter(pk=made.pk).update(created_at=now - timedelta(minutes=minutes_ago))
        return made

    source = HintRequest.Source
    return [hint(source.GEMINI, 1), hint(source.FALLBACK, 2), hint(source.FALLBACK, 3), hint(source.PENDING, 0),
            hint(source.GEMINI, 20)]


@pytest.fixture
def passes(now) -> list[HousekeepingPass]:
    """Reaper and reconciler passes, oldest first (so the last one written is the latest)."""
    def made(kind: str, ago: timedelta, duration: float, orphans: int = 0, handled: int = 0) -> HousekeepingPass:
        return HousekeepingPass.objects.create(kind=kind, started_at=now - ago, duration_seconds=duration,
                                               orphans_removed=orphans, sessions_handled=handled)

    reap, reconcile = HousekeepingPass.Kind.REAP, HousekeepingPass.Kind.RECONCILE
    return [
        made(reconcile, timedelta(minutes=25), 3.0, orphans=9, handled=2),  # before the window
        made(reap, timedelta(minutes=20), 0.5, handled=7),  # before the window
        made(reconcile, timedelta(minutes=10), 2.0, orphans=4, handled=1),
        made(reap, timedelta(minutes=2), 0.25, handled=3),
        made(reap, timedelta(seconds=30), 0.125, handled=1),
    ]


@pytest.fixture
def samples(sessions, now) -> None:
    """The watchdog's latest figures of a running session (metrics/watchdog_figures.py)."""
    from watchdog.models import SessionSample

    SessionSample.objects.create(session=sessions["docker"], cpu_percent=12.5, memory_bytes=64 << 20,
                                 memory_limit_bytes=512 << 20, disk_used_bytes=100 << 20,
                                 disk_total_bytes=2048 << 20, sampled_at=now)


@pytest.fixture
def rows(sessions, attempts, hints, passes, samples) -> None:
    """Every kind of row the figures read."""
