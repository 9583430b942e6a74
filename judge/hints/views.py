"""The hint panel of the session page (templates/judge/_hints.html); the work is in judge/hints/answers.py.

Owner and staff only (anyone else gets a 404, like the session page). The list polls itself
with HTMX while an answer is pending. The form names the step the hint is for (`step`, its id);
a step of another lab or one still locked is refused with a notice and nothing is stored.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from jobqueue.queueing import QueueUnavailable
from judge.hints import answers as hints
from judge.models import HintRequest
from sessions_app.access import get_session_for_user
from sessions_app.models import Session

SHOWN = 10


def _list_context(session: Session, notice: str = "") -> dict[str, Any]:
    now = timezone.now()
    items = list(
        HintRequest.objects.filter(session=session).select_related("step").order_by("-created_at", "-pk")[:SHOWN]
    )
    for item in items:
        item.stale = hints.is_stale(item, now)  # type: ignore[attr-defined]
    waiting = any(item.source == HintRequest.Source.PENDING and not item.stale for item in items)  # type: ignore[attr-defined]
    return {"session": session, "hints": items, "hints_loaded": True, "hints_waiting": waiting,
            "hint_notice": notice, "fallback_label": hints.FALLBACK_LABEL}


@require_GET
def hint_list(request: HttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    return render(request, "judge/_hints.html#hint-list", _list_context(session))


@require_POST
def ask(request: HttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    notice = ""
    try:
        hints.request_hint(
            session, request.user,
            step_id=request.POST.get("step"),
            file_path=request.POST.get("file_path", ""),
            file_content=request.POST.get("file_content", ""),
        )
    except (hints.HintRefused, hints.RateLimited, QueueUnavailable) as exc:
        notice = str(exc)
    if getattr(request, "htmx", False):
        return render(request, "judge/_hints.html#hint-list", _list_context(session, notice))
    if notice:
        messages.warning(request, notice)
    else:
        messages.info(request, "Your hint is on its way.")
    return redirect(session)
