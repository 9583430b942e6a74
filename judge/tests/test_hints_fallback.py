"""Without Gemini (no key, a timeout, an API error) the lab's own hints answer, labelled as such."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from judge.models import HintRequest
from judge.tests.hint_fixtures import ask, fail_check, latest, session  # noqa: F401
from tests.gemini_double import gemini  # noqa: F401


def test_without_an_api_key_the_step_hints_come_in_order(owner_client, session, settings,  # noqa: F811
                                                          django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    answers = []
    for _ in range(3):
        ask(owner_client, session, django_capture_on_commit_callbacks)
        hint = latest(session)
        assert hint.source == HintRequest.Source.FALLBACK
        assert "no Gemini API key" in hint.error
        answers.append(hint.answer)
    assert answers == ["Read the error message from the top.", "Try `echo hello` exactly as written.",
                       "Read the error message from the top."]
    page = owner_client.get(reverse("hints:list", args=[session.pk])).content.decode()
    assert page.count("Lab hint (fallback)") == 3


def test_failure_hints_come_before_the_step_hints(owner_client, session, settings,  # noqa: F811
                                                  django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    fail_check(
        session,
        {"code": "port-closed", "message": "Nothing listens on port 8080.", "hint": "Start the app first."},
        # No hint of its own: the lab's check that maps to this code gives it.
        {"code": "greet-failed", "message": "hello was not printed", "hint": ""},
    )
    ask(owner_client, session, django_capture_on_commit_callbacks)
    answer = latest(session).answer
    assert answer.index("Start the app first.") < answer.index("The check runs `true`.")
    assert answer.index("The check runs `true`.") < answer.index("Read the error message from the top.")
    assert "**Nothing listens on port 8080.**" in answer


def test_a_timeout_falls_back_without_holding_up_the_learner(owner_client, session, gemini, settings,  # noqa: F811
                                                             django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_TIMEOUT_SECONDS = 1
    gemini.delay(60)
    started = time.monotonic()
    ask(owner_client, session, django_capture_on_commit_callbacks)
    # The 1 s timeout, plus importing and building the SDK client; nowhere near the 60 s delay.
    assert time.monotonic() - started < 15
    hint = latest(session)
    assert hint.source == HintRequest.Source.FALLBACK
    assert "timed out" in hint.error
    assert hint.answer == "Read the error message from the top."
    assert len(gemini.requests) == 1  # asked once, not retried


@pytest.mark.parametrize(("status", "reason"), [(500, "INTERNAL"), (429, "RESOURCE_EXHAUSTED")])
def test_an_api_error_falls_back_and_is_recorded(owner_client, session, gemini, status, reason,  # noqa: F811
                                                 django_capture_on_commit_callbacks):
    gemini.fail(status)
    ask(owner_client, session, django_capture_on_commit_callbacks)
    hint = latest(session)
    assert hint.source == HintRequest.Source.FALLBACK
    assert f"Gemini API error {status} {reason}" in hint.error
    assert hint.answer == "Read the error message from the top."
    assert len(gemini.requests) == 1


def test_a_wrong_api_key_falls_back(owner_client, session, gemini, settings,  # noqa: F811
                                    django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = "not-the-key"
    ask(owner_client, session, django_capture_on_commit_callbacks)
    hint = latest(session)
    assert hint.source == HintRequest.Source.FALLBACK
    assert "API key not valid" in hint.error


def test_a_lab_without_any_hint_still_answers(owner_client, session, settings,  # noqa: F811
                                              django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    session.lab.steps.update(hints=[], verify=[])
    ask(owner_client, session, django_capture_on_commit_callbacks)
    assert "no written hint" in latest(session).answer
