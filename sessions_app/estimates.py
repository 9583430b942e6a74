"""How long a start usually takes, and where a start in progress has got to.

`start_estimate(lab_id, runner_name)`: the median and 90th percentile of request → running over the
recent successful starts of that lab on that runner (the newest `SAMPLE_LIMIT` within `WINDOW`), or
None with fewer than `MIN_SAMPLES`. Cold and warm starts are not told apart: every start is cold
today (there are no warm pools), so the figures describe a cold start.

`phase_of(messages)`: which of `PHASES` a start has reached, read from its progress log. The runners
log plain sentences (runners/*.py `progress(...)`); `PHASE_PREFIXES` maps their beginnings to a
phase, and the session page's script reads the same table (rendered as JSON) to move the bar live.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from labs.models import Lab
from runners import runner_configs
from runners.base import VM_IMAGE_KINDS
from sessions_app.models import Session, State

SAMPLE_LIMIT = 50
WINDOW = timedelta(days=30)
MIN_SAMPLES = 3
# Pages ask on every view; a minute-old figure is as good as a fresh one.
CACHE_SECONDS = 60
CACHE_PREFIX = "start-estimate:v1"


@dataclass(frozen=True)
class StartEstimate:
    median_seconds: int
    p90_seconds: int
    samples: int

    @property
    def p90_differs(self) -> bool:
        """Worth saying "up to M s" only when the slow tail is well above the usual."""
        return self.p90_seconds >= max(self.median_seconds * 1.5, self.median_seconds + 5)


def _cache_key(lab_id: int, runner_name: str) -> str:
    return f"{CACHE_PREFIX}:{lab_id}:{runner_name}"


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of the values at or below it."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def compute_estimate(lab_id: int, runner_name: str) -> StartEstimate | None:
    """The figures from the database, uncached."""
    since = timezone.now() - WINDOW
    rows = (Session.objects.filter(lab_id=lab_id, runner_name=runner_name, started_at__isnull=False,
                                   created_at__gte=since)
            .order_by("-created_at").values_list("created_at", "started_at")[:SAMPLE_LIMIT])
    durations = sorted(max(0.0, (started - requested).total_seconds()) for requested, started in rows
                       if started is not None)
    if len(durations) < MIN_SAMPLES:
        return None
    return StartEstimate(median_seconds=max(1, round(statistics.median(durations))),
                         p90_seconds=max(1, round(_percentile(durations, 0.9))),
                         samples=len(durations))


def start_estimate(lab_id: int, runner_name: str) -> StartEstimate | None:
    """`compute_estimate`, cached for `CACHE_SECONDS` (a miss with too few samples is cached too)."""
    key = _cache_key(lab_id, runner_name)
    cached = cache.get(key)
    if cached is not None:
        return cached.get("estimate")
    estimate = compute_estimate(lab_id, runner_name)
    cache.set(key, {"estimate": estimate}, CACHE_SECONDS)
    return estimate


def runner_of_next_start(lab: Lab) -> str | None:
    """The runner a start of `lab` will most likely run on, without asking any engine: the lab's
    runner when it names a configured one (and the lab is no VM, which a runner may send elsewhere),
    else ("default", a VM lab) the runner its latest successful start ran on."""
    name = lab.runner or settings.LAB_DEFAULT_RUNNER
    if name in runner_configs() and lab.image.kind not in VM_IMAGE_KINDS:
        return name
    key = f"{CACHE_PREFIX}:runner:{lab.pk}"
    cached = cache.get(key)
    if cached is not None:
        return cached.get("runner")
    latest = (Session.objects.filter(lab_id=lab.pk, started_at__isnull=False)
              .order_by("-created_at").values_list("runner_name", flat=True).first())
    cache.set(key, {"runner": latest}, CACHE_SECONDS)
    return latest


def estimate_for_lab(lab: Lab) -> StartEstimate | None:
    runner_name = runner_of_next_start(lab)
    return start_estimate(lab.pk, runner_name) if runner_name else None


def estimate_for_session(session: Session) -> StartEstimate | None:
    # Once provisioning, the row names the concrete runner (provisioning.provision resolves it).
    if session.state == State.REQUESTED or not session.runner_name:
        return estimate_for_lab(session.lab)
    return start_estimate(session.lab_id, session.runner_name)


# ---- phases of a start ----------------------------------------------------------------------------

PHASES: tuple[str, ...] = (
    "Queued",
    "Preparing",
    "Pulling the image",
    "Creating the environment",
    "Starting the engine",
    "Copying files",
    "Ready",
)

# The beginning of a progress line → the phase it opens (index into PHASES). Lines that match
# nothing (notes, warnings, retries) leave the bar where it is; it never moves back.
PHASE_PREFIXES: tuple[tuple[str, int], ...] = (
    ("Queued", 0),
    ("Provisioning on the", 1),
    ("Preparing your home", 1),
    ("Pulling", 2),
    ("Saving ", 2),  # the Docker runner saving an image for the inner engine
    ("Image ready", 2),
    ("Creating", 3),
    ("Found the", 3),  # adopting what an earlier attempt created
    ("Container created", 3),
    ("Reusing the session's disk", 3),
    ("Starting Docker engine", 4),
    ("Starting VM", 4),
    ("Container started", 4),
    ("Copying starter files", 5),
    ("Preparing workspace", 5),
    ("Letting the hosts reach", 5),
    ("Container ready", 6),
    ("VM running", 6),
    ("Ready", 6),
)


def phase_of_message(message: str) -> int | None:
    for prefix, phase in PHASE_PREFIXES:
        if message.startswith(prefix):
            return phase
    return None


def phase_of(messages: Iterable[str]) -> int:
    """The furthest phase any of the messages reached (0, queued, when none says)."""
    reached = 0
    for message in messages:
        phase = phase_of_message(message)
        if phase is not None and phase > reached:
            reached = phase
    return reached
