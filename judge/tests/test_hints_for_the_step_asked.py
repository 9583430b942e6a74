"""A hint is for the step the page names: its text, its failures and its hints, from Gemini or the
fallback. A step of another lab, or one still locked for the learner, is refused and nothing of it
(text, hints, solution) leaves the server."""

from __future__ import annotations

import pytest
from django.urls import reverse

from judge.models import Attempt, HintRequest
from judge.tests.hint_fixtures import ask, latest
from labs.models import Lab, LabStep
from sessions_app import actions
from sessions_app.models import Session, State
from tests.gemini_double import gemini  # noqa: F401


@pytest.fixture
def three_steps(lab) -> list[LabStep]:
    """Step 1 has no check (it never passes); steps 2 and 3 have checks and open in order."""
    first = lab.steps.get()
    first.hints = ["Hint for reading the intro."]
    first.save()
    # Created out of order, so that no step's id equals its order by chance.
    third = LabStep.objects.create(
        lab=lab, order=3, title="Secret third step", body="Run the hidden-step-text command.",
        verify=[{"kind": "command", "run": "test -f run.sh"}],
        hints=["Hint three, kept back until step 3 opens."], solution="SOLUTION-OF-STEP-THREE",
    )
    second = LabStep.objects.create(
        lab=lab, order=2, title="Write a greeting", body="Put hello in `greeting.txt`.",
        verify=[{"kind": "file", "path": "greeting.txt", "contains": "hello", "hint": "greeting.txt needs hello."}],
        hints=["Hint for the greeting."], solution="echo hello > greeting.txt",
    )
    return [first, second, third]


@pytest.fixture
def running(owner, lab, three_steps, django_capture_on_commit_callbacks) -> Session:
    with django_capture_on_commit_callbacks(execute=True):
        started = actions.start_session(owner, lab)
    started.refresh_from_db()
    assert started.state == State.RUNNING
    return started


def finish_check(session: Session, step: LabStep, *, passed: bool, failures: list[dict] | None = None) -> Attempt:
    return Attempt.objects.create(
        user=session.user, session=session, lab=session.lab, step=step, status=Attempt.Status.DONE, passed=passed,
        result={"passed": passed, "failures": failures or [], "metrics": {}, "notes": {}, "checks": []},
    )


def test_the_fallback_answers_for_the_step_named_not_the_first_unpassed_one(
        owner_client, running, three_steps, settings, django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    first, second, third = three_steps
    ask(owner_client, running, django_capture_on_commit_callbacks, step=second.pk)
    hint = latest(running)
    assert hint.source == HintRequest.Source.FALLBACK and hint.step == second
    assert hint.answer == "Hint for the greeting."

    finish_check(running, second, passed=True)
    ask(owner_client, running, django_capture_on_commit_callbacks, step=third.pk)
    assert latest(running).step == third and latest(running).answer == "Hint three, kept back until step 3 opens."

    # Back to step 1, which has no check and so never passes: still answered for step 1 when asked.
    ask(owner_client, running, django_capture_on_commit_callbacks, step=first.pk)
    assert latest(running).step == first and latest(running).answer == "Hint for reading the intro."
    page = owner_client.get(reverse("hints:list", args=[running.pk])).content.decode()
    for order in (1, 2, 3):
        assert f"· step {order}</span>" in page


def test_gemini_is_asked_about_the_step_named_with_that_steps_failures(
        owner_client, running, three_steps, gemini, django_capture_on_commit_callbacks):  # noqa: F811
    _first, second, third = three_steps
    finish_check(running, second, passed=False,
                 failures=[{"code": "file_missing", "message": "greeting.txt is missing", "hint": ""}])
    ask(owner_client, running, django_capture_on_commit_callbacks, step=second.pk)
    prompt = gemini.requests[-1].prompt
    assert "Current step 2: Write a greeting" in prompt and "Put hello in `greeting.txt`." in prompt
    assert "[file_missing] greeting.txt is missing" in prompt
    assert "Type `echo hello`." not in prompt  # step 1's text
    assert latest(running).step == second and latest(running).source == HintRequest.Source.GEMINI

    finish_check(running, second, passed=True)
    ask(owner_client, running, django_capture_on_commit_callbacks, step=third.pk)
    prompt = gemini.requests[-1].prompt
    assert "Current step 3: Secret third step" in prompt
    assert "file_missing" not in prompt  # step 2's old failure is not step 3's
    assert "The checker has not reported any failure for this step yet." in prompt
    # The solution is never sent, whatever the step.
    assert all("SOLUTION-OF-STEP-THREE" not in sent.prompt and "echo hello > greeting.txt" not in sent.prompt
               for sent in gemini.requests)


def test_a_locked_step_is_refused_and_nothing_of_it_is_sent_or_stored(
        owner_client, running, three_steps, gemini, django_capture_on_commit_callbacks):  # noqa: F811
    _first, _second, third = three_steps
    status, html = ask(owner_client, running, django_capture_on_commit_callbacks, step=third.pk)
    assert status == 200
    assert "Step 3 is still locked: pass the earlier steps first." in html
    assert 'data-hint-notice' in html
    assert "Hint three" not in html and "SOLUTION-OF-STEP-THREE" not in html
    assert not HintRequest.objects.exists()
    assert gemini.requests == []

    # Without HTMX: back to the session page with the same refusal.
    response = owner_client.post(reverse("hints:ask", args=[running.pk]), {"step": third.pk}, follow=True)
    assert "Step 3 is still locked" in response.content.decode()
    assert not HintRequest.objects.exists()


def test_a_step_of_another_lab_or_garbage_is_refused(
        owner_client, running, lab, container_image, settings, django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    other = Lab.objects.create(slug="other-lab", title="Other", image=container_image, runner="fake", published=True)
    foreign = LabStep.objects.create(lab=other, order=1, title="Foreign", body="Not yours.",
                                     hints=["FOREIGN HINT"])
    for value in (foreign.pk, "not-a-number", "999999999"):
        status, html = ask(owner_client, running, django_capture_on_commit_callbacks, step=value)
        assert status == 200 and "That is not a step of this lab." in html, value
        assert "FOREIGN HINT" not in html
    assert not HintRequest.objects.exists()


def test_the_refusal_does_not_count_against_the_rate_limit(
        owner_client, running, three_steps, settings, django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    for _ in range(6):
        ask(owner_client, running, django_capture_on_commit_callbacks, step=three_steps[2].pk)
    ask(owner_client, running, django_capture_on_commit_callbacks, step=three_steps[1].pk)
    assert latest(running).step == three_steps[1]


def test_without_a_step_named_the_first_unlocked_step_whose_check_has_not_passed_is_used(
        owner_client, running, three_steps, settings, django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    _first, second, third = three_steps
    ask(owner_client, running, django_capture_on_commit_callbacks)
    assert latest(running).step == second  # step 1 has no check: it is not where the learner is stuck
    finish_check(running, second, passed=True)
    ask(owner_client, running, django_capture_on_commit_callbacks)
    assert latest(running).step == third
    finish_check(running, third, passed=True)
    ask(owner_client, running, django_capture_on_commit_callbacks)
    assert latest(running).step == third  # every check passed: the last step


def test_the_page_draws_the_form_with_the_default_step(owner_client, running, three_steps):
    page = owner_client.get(running.get_absolute_url()).content.decode()
    assert f'name="step" value="{three_steps[1].pk}" data-hint-step' in page
    assert "<span data-hint-for>for step 2</span>" in page
