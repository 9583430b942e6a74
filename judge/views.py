"""Judge pages: ask for a check, poll an attempt while it runs, and the attempt history.

Everything hangs under /sessions/<session>/judge/. The session is loaded the one way views
load sessions (owner or staff, anyone else gets a 404); only the owner may start checks.
Without JavaScript the buttons are plain forms that redirect back to the session page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models.fields.json import KeyTransform
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from judge import actions, pages
from judge.models import Attempt
from labs.models import LabStep
from sessions_app.access import get_learners_session, get_session_for_user
from sessions_app.models import Session
from webserver.http import AuthenticatedHttpRequest

# Sent with the last poll of an attempt: step boxes and the final box refresh on it
# (a passed step may open the next one).
PROGRESS_EVENT = "judge-progress"


def _owned_session(request: AuthenticatedHttpRequest, pk: UUID) -> Session:
    return get_learners_session(request.user, pk)  # staff may look, but checks are the learner's to run


def _step(session: Session, step_id: int) -> LabStep:
    return get_object_or_404(LabStep, pk=step_id, lab_id=session.lab_id)


def _partial(request: AuthenticatedHttpRequest, template: str, context: dict[str, object]) -> HttpResponse:
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _announce_if_finished(response: HttpResponse, context: dict[str, Any], attempt: Attempt | None) -> HttpResponse:
    """Where the job ran inside this request (inline jobs) or already finished, the box comes back
    with the result and never polls, so no poll will send PROGRESS_EVENT: send it here, or the
    next step stays locked and the progress stale until a reload. After the settle, since the
    box that asked has been replaced by then (HTMX then fires it on the body)."""
    last = context.get("last")
    if attempt is not None and last and last["attempt"].pk == attempt.pk and not last["active"]:
        response["HX-Trigger-After-Settle"] = PROGRESS_EVENT
    return response


@login_required
@require_GET
def step_box(request: AuthenticatedHttpRequest, pk: UUID, step_id: int) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    return _partial(request, "judge/_step_check.html", pages.step_context(session, _step(session, step_id),
                                                                          request.user))


@login_required
@require_POST
def check_step(request: AuthenticatedHttpRequest, pk: UUID, step_id: int) -> HttpResponse:
    session = _owned_session(request, pk)
    step = _step(session, step_id)
    return _run_check(request, session, step, f"#step-{step.order}", "judge/_step_check.html",
                      lambda message: pages.step_context(session, step, request.user, message=message))


def _run_check(request: AuthenticatedHttpRequest, session: Session, step: LabStep | None, anchor: str,
               template: str, context_for: Callable[[str], dict[str, Any]]) -> HttpResponse:
    """Ask for a check (of `step`, or the final one); the box again for HTMX, else back to the page."""
    message = ""
    attempt = None
    try:
        attempt = actions.request_check(session, step, request.user)
    except actions.JudgeActionError as exc:
        message = str(exc)
    if not request.htmx:
        if message:
            messages.error(request, message)
        return redirect(f"{session.get_absolute_url()}{anchor}")
    context = context_for(message)
    return _announce_if_finished(_partial(request, template, context), context, attempt)


@login_required
@require_GET
def final_box(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    return _partial(request, "judge/_final_check.html", pages.final_context(session, request.user))


@login_required
@require_POST
def check_final(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    session = _owned_session(request, pk)
    return _run_check(request, session, None, "#judge-final", "judge/_final_check.html",
                      lambda message: pages.final_context(session, request.user, message=message))


@login_required
@require_GET
def attempt_status(request: AuthenticatedHttpRequest, pk: UUID, attempt_id: int) -> HttpResponse:
    """An attempt's result, or its progress and streamed log while it runs (polled every second)."""
    session = get_session_for_user(request.user, pk)
    attempt = get_object_or_404(Attempt.objects.select_related("step", "session"), pk=attempt_id, session=session)
    context = pages.attempt_context(attempt)
    if not request.htmx:
        return render(request, "judge/attempts.html", {"session": session, "attempts": [context], "single": True})
    response = _partial(request, "judge/_attempt.html", {"a": context})
    if not context["active"] and request.GET.get("poll"):
        response["HX-Trigger"] = PROGRESS_EVENT
    return response


@login_required
@require_GET
def attempt_history(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    attempts = Attempt.objects.filter(session=session).select_related("step").order_by("-created_at")[:100]
    return render(request, "judge/attempts.html", {
        "session": session,
        "attempts": [pages.attempt_context(attempt, poll=False) for attempt in attempts],
        "single": False,
    })


HISTORY_PAGE_SIZE = 25


@login_required
@require_GET
def my_attempts(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The signed-in user's own attempts in every session and lab, newest first, a page at a time.

    Only their own, staff included: everyone else's are in the admin. The log (up to 200,000
    characters) and the notes are never loaded; the failures come out of the JSON in the query.
    """
    attempts = (
        Attempt.objects.filter(user=request.user)
        .select_related("lab", "step")
        .only("status", "passed", "created_at", "duration_ms", "session", "lab__slug", "lab__title", "step__order",
              "step__title")
        .annotate(failure_list=KeyTransform("failures", "result"))
        .order_by("-created_at", "-pk")
    )
    page = Paginator(attempts, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "judge/my_attempts.html", {
        "page": page,
        "rows": [pages.history_row(attempt) for attempt in page],
    })
