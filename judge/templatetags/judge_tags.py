"""Tags the session page uses to show the judge's boxes:

    {% load judge_tags %}
    {% judge_step_check session step %}     inside each step
    {% judge_final_check session %}         once, after the steps
    {% judge_step_locked session step as locked %}   e.g. to fold a locked step's text

and the filter ``inline_code``: failure messages and hints with `backticks` as <code>.
"""

from __future__ import annotations

import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from judge import pages
from labs.models import LabStep
from sessions_app.models import Session

register = template.Library()


@register.inclusion_tag("judge/_step_check.html", takes_context=True)
def judge_step_check(context: template.Context, session: Session, step: LabStep) -> dict[str, Any]:
    request = context.get("request")
    return {**pages.step_context(session, step, getattr(request, "user", None)),
            "csrf_token": context.get("csrf_token"), "request": request}


@register.inclusion_tag("judge/_final_check.html", takes_context=True)
def judge_final_check(context: template.Context, session: Session) -> dict[str, Any]:
    request = context.get("request")
    return {**pages.final_context(session, getattr(request, "user", None)),
            "csrf_token": context.get("csrf_token"), "request": request}


@register.simple_tag
def judge_step_locked(session: Session, step: LabStep) -> bool:
    return step.pk in pages.locked_of(session)


_BACKTICKS = re.compile(r"`([^`]+)`")


@register.filter
def inline_code(text: str) -> SafeString:
    """Escape ``text`` and show `quoted` parts as code (checks write commands that way)."""
    return mark_safe(_BACKTICKS.sub(r"<code>\1</code>", escape(text)))  # noqa: S308 (escaped first)
