from __future__ import annotations

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from consoles.models import TerminalRecording


@admin.register(TerminalRecording)
class TerminalRecordingAdmin(admin.ModelAdmin):
    """Recorded terminals (labs with record_terminal), read only, each with a Replay link."""

    list_display = ["started_at", "session", "terminal_name", "width", "height", "ended_at", "size_bytes", "replay"]
    list_filter = ["session__lab"]
    search_fields = ["session__id", "session__user__username", "session__lab__slug", "terminal_name"]
    list_select_related = ["session__lab", "session__user"]
    date_hierarchy = "started_at"
    # The file as plain text: recordings are served only through the staff-only replay view.
    fields = readonly_fields = ("session", "terminal_name", "cast_file", "width", "height", "started_at", "ended_at",
                                "size_bytes", "replay")

    @admin.display(description="cast file")
    def cast_file(self, recording: TerminalRecording) -> str:
        return recording.file.name or ""

    @admin.display(description="replay")
    def replay(self, recording: TerminalRecording) -> str:
        return format_html('<a href="{}">Replay</a>', reverse("sessions:recording_replay", args=[recording.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # recordings are made by the terminal itself

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
