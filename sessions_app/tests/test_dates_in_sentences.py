"""Dates in sentences end the sentence once: "…, 7 Dec 2026, 09:48." and never "… 9:48 a.m.."

Django's default date format ends in "a.m."/"p.m.", so a date at the end of a sentence gave a
double period. The pages that show dates are rendered here with times in the morning, the
afternoon and at noon, and their visible text must hold no ".." after a date.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils.html import strip_tags

from judge.models import Attempt
from sessions_app.models import EndReason, Session, State

pytestmark = pytest.mark.django_db

TIMES = [datetime(2026, 12, 7, 9, 48, tzinfo=UTC), datetime(2026, 12, 7, 21, 5, tzinfo=UTC),
         datetime(2026, 12, 7, 12, 0, tzinfo=UTC)]
DOUBLE_PERIOD = re.compile(r"(?<!\.)\.\.(?!\.)")  # two periods, not an ellipsis


def ended_session(owner, lab, when: datetime) -> Session:
    session = Session.objects.create(user=owner, lab=lab, state=State.STOPPED, runner_name="fake",
                                     end_reason=EndReason.LEARNER, started_at=when, ended_at=when)
    Session.objects.filter(pk=session.pk).update(created_at=when)
    attempt = Attempt.objects.create(user=owner, lab=lab, session=session, status=Attempt.Status.DONE,
                                     passed=True, finished_at=when)
    Attempt.objects.filter(pk=attempt.pk).update(created_at=when)
    return session


def visible_text(html: str) -> str:
    return re.sub(r"\s+", " ", strip_tags(html))


@pytest.mark.parametrize("when", TIMES, ids=["morning", "evening", "noon"])
def test_an_ended_sessions_page_ends_its_sentence_with_one_period(owner_client, owner, lab, settings, when):
    settings.TIME_ZONE = "UTC"
    session = ended_session(owner, lab, when)

    text = visible_text(owner_client.get(session.get_absolute_url()).content.decode())

    assert f"Ended: stopped by the learner, 7 Dec 2026, {when:%H:%M}." in text
    assert not DOUBLE_PERIOD.search(text), DOUBLE_PERIOD.search(text)


@pytest.mark.parametrize("when", TIMES, ids=["morning", "evening", "noon"])
def test_no_page_that_shows_dates_has_a_double_period(owner_client, owner, lab, settings, when):
    settings.TIME_ZONE = "UTC"
    session = ended_session(owner, lab, when)
    pages = [session.get_absolute_url(), reverse("sessions:status", args=[session.pk]), reverse("sessions:list"),
             reverse("judge:attempts", args=[session.pk]), reverse("attempts:mine")]

    for path in pages:
        response = owner_client.get(path)
        assert response.status_code == 200, path
        found = DOUBLE_PERIOD.search(visible_text(response.content.decode()))
        assert found is None, f"{path}: …{found.string[found.start() - 40:found.end() + 10]}…"
