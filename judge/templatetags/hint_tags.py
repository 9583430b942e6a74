"""The hint form's step before the page's script takes over (templates/judge/_hints.html):

    {% load hint_tags %}
    {% hint_default_step session as hint_step %}   {{ hint_step.step.pk }}, {{ hint_step.number }}
"""

from __future__ import annotations

from typing import Any

from django import template

from judge.hints.answers import default_step
from sessions_app.models import Session

register = template.Library()


@register.simple_tag
def hint_default_step(session: Session) -> dict[str, Any] | None:
    """The step a hint is for when the page names none, with its number as the page shows it."""
    steps = list(session.lab.steps.order_by("order"))
    step = default_step(session, steps)
    if step is None:
        return None
    return {"step": step, "number": steps.index(step) + 1}
