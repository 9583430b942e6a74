"""Staff-only replay of recorded terminals (asciinema casts) in the admin's look.

Mounted by labsite/urls.py under /sessions/ (consoles/urls.py):
    recordings/<id>/replay/   the player page
    recordings/<id>/cast/     the cast file itself, which the player fetches (never a public media URL:
                              a recording can contain anything the learner's shell printed)
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from consoles.models import TerminalRecording


def _recording(pk: int) -> TerminalRecording:
    return get_object_or_404(TerminalRecording.objects.select_related("session__lab", "session__user"), pk=pk)


@staff_member_required
def replay(request: HttpRequest, pk: int) -> HttpResponse:
    recording = _recording(pk)
    context = {
        **admin.site.each_context(request),
        "title": f"Replay: terminal {recording.terminal_name} of {recording.session.lab.title}",
        "recording": recording,
        "session": recording.session,
        "cast_url": reverse("sessions:recording_cast", args=[recording.pk]),
        "opts": TerminalRecording._meta,
    }
    return render(request, "admin/consoles/recording_replay.html", context)


@staff_member_required
def cast(request: HttpRequest, pk: int) -> FileResponse:
    recording = _recording(pk)
    try:
        handle = recording.file.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The recording's file is gone.") from None
    response = FileResponse(handle, content_type="application/x-asciicast")
    response["Cache-Control"] = "private, no-store"
    return response
