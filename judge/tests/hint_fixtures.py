"""Shared set-up for the hint tests: a running session with a failed check and a recorded terminal."""

from __future__ import annotations

import json

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from consoles.models import TerminalRecording
from judge.models import Attempt, HintRequest
from sessions_app import actions
from sessions_app.models import Session, State


@pytest.fixture
def session(owner, lab, django_capture_on_commit_callbacks) -> Session:
    step = lab.steps.get()
    step.hints = ["Read the error message from the top.", "Try `echo hello` exactly as written."]
    step.verify = [{"kind": "command", "run": "true", "hint": "The check runs `true`.",
                    "codes": {"exit-status": "greet-failed"}}]
    step.save()
    with django_capture_on_commit_callbacks(execute=True):
        started = actions.start_session(owner, lab)
    started.refresh_from_db()
    assert started.state == State.RUNNING
    return started


def fail_check(session: Session, *failures: dict[str, str]) -> Attempt:
    return Attempt.objects.create(
        user=session.user, session=session, lab=session.lab, step=session.lab.steps.first(),
        status=Attempt.Status.DONE, passed=False,
        result={"passed": False, "failures": list(failures), "metrics": {}, "notes": {}, "checks": []},
    )


def record_terminal(session: Session, events: list[list], settings, tmp_path) -> TerminalRecording:
    settings.MEDIA_ROOT = tmp_path / "media"
    header = {"version": 2, "width": 80, "height": 24, "timestamp": 1700000000}
    text = "\n".join(json.dumps(item) for item in [header, *events]) + "\n"
    recording = TerminalRecording(session=session, terminal_name="1")
    recording.file.save("cast.cast", ContentFile(text.encode()), save=True)
    return recording


def ask(client, session: Session, capture, **data) -> tuple[int, str]:
    """Press "Get a hint" as HTMX does; the RQ job runs when the request's transaction commits."""
    with capture(execute=True):
        response = client.post(reverse("hints:ask", args=[session.pk]), data, HTTP_HX_REQUEST="true")
    return response.status_code, response.content.decode()


def latest(session: Session) -> HintRequest:
    return HintRequest.objects.filter(session=session).order_by("-created_at", "-pk").first()
