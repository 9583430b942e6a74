"""Start-time estimates: the figures from past starts, the lab page's line, and the progress bar."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from labs.models import Lab
from sessions_app import estimates
from sessions_app.models import Session, State


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def past_start(lab: Lab, user, seconds: float | None, *, runner: str = "fake", days_ago: float = 1,
               state: str = State.STOPPED) -> Session:
    """A start requested `days_ago` that took `seconds` to run (None: it never ran)."""
    session = Session.objects.create(user=user, lab=lab, runner_name=runner, state=state)
    requested = timezone.now() - timedelta(days=days_ago)
    started = requested + timedelta(seconds=seconds) if seconds is not None else None
    Session.objects.filter(pk=session.pk).update(created_at=requested, started_at=started)
    return session


def test_median_and_p90_of_the_successful_starts(lab, owner) -> None:
    for seconds in (2, 3, 4, 5, 6, 7, 8, 9, 30, 40):
        past_start(lab, owner, seconds)
    estimate = estimates.compute_estimate(lab.pk, "fake")
    assert estimate == estimates.StartEstimate(median_seconds=6, p90_seconds=30, samples=10)
    assert estimate is not None and estimate.p90_differs


def test_too_few_starts_give_no_estimate(lab, owner) -> None:
    past_start(lab, owner, 5)
    past_start(lab, owner, 6)
    assert estimates.compute_estimate(lab.pk, "fake") is None
    past_start(lab, owner, 7)
    assert estimates.compute_estimate(lab.pk, "fake") == estimates.StartEstimate(6, 7, 3)


def test_only_successful_recent_starts_of_that_lab_and_runner_count(lab, owner, container_image) -> None:
    other_lab = Lab.objects.create(slug="other", title="Other", image=container_image, runner="fake")
    for seconds in (4, 5, 6):
        past_start(lab, owner, seconds)
    past_start(lab, owner, None, state=State.FAILED)  # never ran
    past_start(lab, owner, 300, runner="docker")  # another runner
    past_start(other_lab, owner, 300)  # another lab
    past_start(lab, owner, 300, days_ago=45)  # too old
    assert estimates.compute_estimate(lab.pk, "fake") == estimates.StartEstimate(5, 6, 3)


def test_only_the_newest_fifty_count(lab, owner) -> None:
    for _ in range(estimates.SAMPLE_LIMIT):
        past_start(lab, owner, 10, days_ago=1)
    for _ in range(5):
        past_start(lab, owner, 100, days_ago=2)  # older than the fifty
    estimate = estimates.compute_estimate(lab.pk, "fake")
    assert estimate is not None and (estimate.samples, estimate.p90_seconds) == (50, 10)


def test_the_estimate_is_cached_for_a_minute(lab, owner, django_assert_num_queries) -> None:
    for seconds in (4, 5, 6):
        past_start(lab, owner, seconds)
    assert estimates.start_estimate(lab.pk, "fake") == estimates.StartEstimate(5, 6, 3)
    past_start(lab, owner, 60)
    past_start(lab, owner, 60)
    with django_assert_num_queries(0):
        assert estimates.start_estimate(lab.pk, "fake") == estimates.StartEstimate(5, 6, 3)
    cache.clear()  # what a minute later looks like
    assert estimates.start_estimate(lab.pk, "fake") == estimates.StartEstimate(6, 60, 5)


def test_p90_close_to_the_median_is_not_worth_saying() -> None:
    assert not estimates.StartEstimate(10, 12, 20).p90_differs
    assert estimates.StartEstimate(10, 20, 20).p90_differs


# ---- the lab page ---------------------------------------------------------------------------


def test_lab_page_says_how_long_a_start_usually_takes(owner_client, lab, owner, other_learner) -> None:
    for seconds in (4, 5, 6, 30):
        past_start(lab, other_learner, seconds)
    html = owner_client.get(reverse("labs:detail", args=[lab.slug])).content.decode()
    assert "Usually ready in about 6 s (up to 30 s)." in html


def test_lab_page_says_nothing_without_enough_starts(owner_client, lab, other_learner) -> None:
    past_start(lab, other_learner, 5)
    html = owner_client.get(reverse("labs:detail", args=[lab.slug])).content.decode()
    assert "data-start-estimate" not in html
    assert "Start lab" in html


def test_a_default_runner_lab_uses_the_runner_its_starts_ran_on(owner_client, lab, other_learner) -> None:
    Lab.objects.filter(pk=lab.pk).update(runner="default")
    for seconds in (7, 8, 9):
        past_start(lab, other_learner, seconds, runner="fake-slow")
    html = owner_client.get(reverse("labs:detail", args=[lab.slug])).content.decode()
    assert "Usually ready in about 8 s." in html


# ---- phases ---------------------------------------------------------------------------------


def test_phases_from_the_runners_progress_lines() -> None:
    assert estimates.phase_of([]) == 0
    assert estimates.phase_of(["Queued: waiting for a worker to provision your environment."]) == 0
    assert estimates.phase_of(["Provisioning on the docker runner."]) == 1
    assert estimates.phase_of(["Saving labs/tiny:test for the inner engine (first time only)"]) == 2
    assert estimates.phase_of(["Creating container"]) == 3
    assert estimates.phase_of(["Creating overlay"]) == 3
    assert estimates.phase_of(["Creating container", "Starting Docker engine"]) == 4
    assert estimates.phase_of(["Starting VM"]) == 4
    assert estimates.phase_of(["Copying starter files"]) == 5
    assert estimates.phase_of(["Container ready"]) == estimates.phase_of(["VM running"]) == len(estimates.PHASES) - 1


def test_the_phase_never_moves_back_and_unknown_lines_leave_it() -> None:
    lines = ["Creating container", "Copying starter files", "Starting Docker engine", "Temporary problem: x."]
    assert estimates.phase_of(lines) == 5
    assert estimates.phase_of_message("Note: the disk limit of 512 MB is not enforced here (xfs)") is None


# ---- the progress bar in the status region --------------------------------------------------


def bar(html: str) -> str:
    match = re.search(r'<div class="start-progress-bar".*?</div>', html, re.S)
    assert match, "no progress bar"
    return match.group(0)


def test_status_region_shows_the_bar_at_the_phase_reached(owner_client, lab, owner, other_learner) -> None:
    for seconds in (10, 12, 14):
        past_start(lab, other_learner, seconds)
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.PROVISIONING)
    session.log("Provisioning on the fake runner.")
    session.log("Creating container")
    html = owner_client.get(reverse("sessions:status", args=[session.pk]), HTTP_HX_REQUEST="true").content.decode()
    region = bar(html)
    assert 'role="progressbar"' in region
    assert 'aria-valuenow="3"' in region and f'aria-valuemax="{len(estimates.PHASES) - 1}"' in region
    assert 'aria-valuetext="Creating the environment"' in region
    assert region.count("is-done") == 4
    assert "usually ready in ~12 s" in html
    assert "data-phase-prefixes=" in html and "data-requested-at=" in html


def test_a_queued_session_shows_the_bar_at_its_start(owner_client, lab, owner) -> None:
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake")
    html = owner_client.get(session.get_absolute_url()).content.decode()
    assert 'aria-valuenow="0"' in bar(html)
    assert "usually ready" not in html  # no past starts
    assert "js/start_progress.js" in html


def test_a_running_session_shows_no_bar(owner_client, lab, owner) -> None:
    session = Session.objects.create(user=owner, lab=lab, runner_name="fake", state=State.PROVISIONING)
    now = timezone.now()
    Session.objects.filter(pk=session.pk).update(state=State.RUNNING, started_at=now,
                                                 expires_at=now + timedelta(minutes=30))
    html = owner_client.get(session.get_absolute_url()).content.decode()
    assert "data-start-progress" not in html
