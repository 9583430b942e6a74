"""The judge's pages: Check buttons, the polled attempt partial, history; owner only, others 404."""

from __future__ import annotations

import re

from django.template import RequestContext, Template
from django.test import RequestFactory
from django.urls import reverse

from judge import actions
from judge.models import Attempt
from judge.tests import judge_fixtures
from judge.tests.judge_fixtures import put

# The shared fixtures, under the names the tests ask for.
checked_lab = judge_fixtures.checked_lab
running = judge_fixtures.running


HTMX = {"HTTP_HX_REQUEST": "true"}


def step_url(session, order: int, name: str = "judge:check_step") -> str:
    return reverse(name, args=[session.pk, session.lab.steps.get(order=order).pk])


def test_pressing_check_shows_the_queued_attempt_then_the_result(client, running,
                                                                   django_capture_on_commit_callbacks):
    client.force_login(running.user)
    put(running, "hello.txt", "hello\n")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(step_url(running, 1), **HTMX)
    page = response.content.decode()
    attempt = Attempt.objects.get()
    assert response.status_code == 200
    assert f'id="judge-step-{attempt.step_id}"' in page
    # Rendered before the job ran: the partial polls the attempt every second.
    assert 'hx-trigger="every 1s"' in page and "Waiting for the judge" in page
    assert "HX-Trigger-After-Settle" not in response  # the poll announces the end, not this response
    poll = client.get(reverse("judge:attempt", args=[running.pk, attempt.pk]) + "?poll=1", **HTMX)
    assert poll["HX-Trigger"] == "judge-progress"
    assert "Passed." in poll.content.decode()
    assert "every 1s" not in poll.content.decode()


def test_a_check_that_finished_inside_the_request_tells_the_other_boxes(client, running, monkeypatch):
    # Jobs run inside the request (LAB_RQ_ASYNC=false, LAB_EMBEDDED_JOBS=inline): the box comes back
    # with the result and never polls, so this response must announce the progress itself.
    monkeypatch.setattr(actions, "enqueue_on_commit", lambda func, *args, **kwargs: func(*args))
    client.force_login(running.user)
    put(running, "hello.txt", "hello\n")
    response = client.post(step_url(running, 1), **HTMX)
    assert "Passed." in response.content.decode() and "every 1s" not in response.content.decode()
    assert response["HX-Trigger-After-Settle"] == "judge-progress"
    final = client.post(reverse("judge:check_final", args=[running.pk]), **HTMX)
    assert final["HX-Trigger-After-Settle"] == "judge-progress"


def test_a_running_attempt_shows_its_streamed_log(client, running):
    client.force_login(running.user)
    attempt = Attempt.objects.create(user=running.user, session=running, lab=running.lab,
                                     status=Attempt.Status.RUNNING, log="Step 1/5 : FROM labs/python:3.11-slim\n")
    response = client.get(reverse("judge:attempt", args=[running.pk, attempt.pk]) + "?poll=1", **HTMX)
    page = response.content.decode()
    assert "Checking…" in page and "Step 1/5 : FROM labs/python:3.11-slim" in page
    assert 'hx-trigger="every 1s"' in page
    assert "HX-Trigger" not in response


def test_failures_show_message_hint_and_code(client, running, django_capture_on_commit_callbacks):
    client.force_login(running.user)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(step_url(running, 1), **HTMX)
    attempt = Attempt.objects.get()
    page = client.get(reverse("judge:attempt", args=[running.pk, attempt.pk]), **HTMX).content.decode()
    assert "Not yet." in page
    assert "There is no file hello.txt in the workspace." in page
    assert "Hint:" in page and 'data-code="file_missing"' in page


def test_a_locked_step_says_so_instead_of_checking(client, running):
    client.force_login(running.user)
    response = client.post(step_url(running, 3), **HTMX)
    assert "Pass the earlier steps first" in response.content.decode()
    assert not Attempt.objects.exists()


def test_without_javascript_the_button_redirects_back_to_the_step(client, running,
                                                                   django_capture_on_commit_callbacks):
    client.force_login(running.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(step_url(running, 1))
    assert response.status_code == 302
    assert response["Location"] == f"{running.get_absolute_url()}#step-1"
    assert Attempt.objects.get().status == Attempt.Status.DONE


def test_the_final_check_button_runs_the_labs_judge(client, running, django_capture_on_commit_callbacks):
    client.force_login(running.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("judge:check_final", args=[running.pk]), **HTMX)
    assert 'id="judge-final"' in response.content.decode()
    assert Attempt.objects.get().step is None


def test_other_learners_get_404_everywhere(client, running, other_learner):
    attempt = Attempt.objects.create(user=running.user, session=running, lab=running.lab)
    client.force_login(other_learner)
    urls = [step_url(running, 1), reverse("judge:check_final", args=[running.pk])]
    for url in urls:
        assert client.post(url, **HTMX).status_code == 404
    for url in [step_url(running, 1, "judge:step"), reverse("judge:final", args=[running.pk]),
                reverse("judge:attempt", args=[running.pk, attempt.pk]), reverse("judge:attempts", args=[running.pk])]:
        assert client.get(url, **HTMX).status_code == 404
    assert Attempt.objects.count() == 1


def test_staff_may_look_but_not_run_a_learners_checks(client, running, staff_user):
    attempt = Attempt.objects.create(user=running.user, session=running, lab=running.lab)
    client.force_login(staff_user)
    assert client.get(reverse("judge:attempt", args=[running.pk, attempt.pk]), **HTMX).status_code == 200
    assert client.post(step_url(running, 1), **HTMX).status_code == 404


def test_an_attempt_of_another_session_is_not_found_through_this_one(client, running, owner, checked_lab):
    from sessions_app.models import Session, State

    other = Session.objects.create(user=owner, lab=checked_lab, state=State.STOPPED)
    attempt = Attempt.objects.create(user=owner, session=other, lab=checked_lab)
    client.force_login(owner)
    assert client.get(reverse("judge:attempt", args=[running.pk, attempt.pk]), **HTMX).status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client, running):
    response = client.get(reverse("judge:attempts", args=[running.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_history_page_lists_the_sessions_attempts(client, running, django_capture_on_commit_callbacks):
    client.force_login(running.user)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(step_url(running, 1), **HTMX)
    put(running, "hello.txt", "hello\n")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(step_url(running, 1), **HTMX)
    page = client.get(reverse("judge:attempts", args=[running.pk])).content.decode()
    assert page.count('class="card judge-history-item"') == 2
    # One verdict badge per attempt, newest first: the second check passed, the first did not.
    verdicts = re.findall(r'<span class="badge[^"]*">\s*([^<]*?)\s*</span>', page)
    assert verdicts == ["passed", "not passed"]
    assert page.count("Step 1: Greet") >= 2


def test_the_session_page_tags_show_buttons_progress_and_locks(running, rf: RequestFactory):
    first, _, third = running.lab.steps.order_by("order")
    request = rf.get("/")
    request.user = running.user
    template = Template("{% load judge_tags %}{% judge_step_check session first %}"
                        "{% judge_step_check session third %}{% judge_final_check session %}")
    page = template.render(RequestContext(request, {"session": running, "first": first, "third": third}))
    assert "Check this step" in page and page.count("Check this step") == 1
    assert f'id="judge-step-{third.pk}"' in page and "Locked" in page
    assert "0 of 2 checked steps passed." in page
    assert "Run the final check" in page


def test_messages_are_escaped_and_backticks_shown_as_code(client, running):
    client.force_login(running.user)
    attempt = Attempt.objects.create(
        user=running.user, session=running, lab=running.lab, status=Attempt.Status.DONE, passed=False,
        result={"passed": False, "failures": [{"code": "build_failed", "message": "<b>no</b> `pip install x`",
                                               "hint": ""}]})
    page = client.get(reverse("judge:attempt", args=[running.pk, attempt.pk]), **HTMX).content.decode()
    assert "&lt;b&gt;no&lt;/b&gt; <code>pip install x</code>" in page


def test_a_step_without_checks_says_so(owner_client, owner, lab):
    from sessions_app.models import Session, State

    session = Session.objects.create(user=owner, lab=lab, state=State.RUNNING, runner_name="fake")
    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert "This step has no check" in page
