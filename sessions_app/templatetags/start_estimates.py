"""Start-time figures for pages: `{% lab_start_estimate lab %}` beside a lab's Start button and
`{% start_progress session events %}` in the session's status region while it starts.

A tag library rather than a view's context: the lab page belongs to `labs`, which must not import
`sessions_app` (a lower room); a template may load a higher room's tags, as the session page loads
`watchdog_notices`. The figures come from `sessions_app.estimates` (cached for a minute).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django import template

from labs.models import Lab
from sessions_app import estimates
from sessions_app.models import Session, SessionEvent

register = template.Library()


@register.inclusion_tag("sessions_app/_start_estimate.html")
def lab_start_estimate(lab: Lab) -> dict[str, Any]:
    return {"estimate": estimates.estimate_for_lab(lab)}


@register.inclusion_tag("sessions_app/_start_progress.html")
def start_progress(session: Session, events: Iterable[SessionEvent]) -> dict[str, Any]:
    phase = estimates.phase_of(event.message for event in events)
    last = len(estimates.PHASES) - 1
    return {
        "session": session,
        "estimate": estimates.estimate_for_session(session),
        "phase": phase,
        "phase_label": estimates.PHASES[phase],
        "last_phase": last,
        "phases": [{"index": i, "label": label, "done": i <= phase} for i, label in enumerate(estimates.PHASES)],
        "prefixes_json": json.dumps(estimates.PHASE_PREFIXES),
        "labels_json": json.dumps(estimates.PHASES),
    }
