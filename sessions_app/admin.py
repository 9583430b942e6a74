"""Admin for sessions: read-mostly, with stop and extend going through sessions_app.actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from sessions_app import actions
from sessions_app.models import EndReason, PreviewShare, Session, SessionEvent, Snapshot, State, TerminalRecording


class SessionEventInline(admin.TabularInline):
    model = SessionEvent
    fields = ["created_at", "level", "message"]
    readonly_fields = ["created_at", "level", "message"]
    ordering = ["created_at", "pk"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["short_id", "lab", "user", "state", "runner_name", "created_at", "expires_at", "ended_at",
                    "end_reason"]
    list_display_links = ["short_id"]
    list_filter = ["state", "lab", "runner_name", "end_reason"]
    search_fields = ["id", "user__username", "user__email", "lab__slug", "lab__title"]
    list_select_related = ["lab", "user"]
    date_hierarchy = "created_at"
    inlines = [SessionEventInline]
    actions = ["stop_sessions", "extend_sessions"]
    # State changes go through the state machine (the actions), never through a form field.
    readonly_fields = ["id", "user", "lab", "state", "runner_name", "runner_state", "endpoints", "created_at",
                       "started_at", "expires_at", "last_active_at", "ended_at", "end_reason", "error",
                       "extensions_used"]
    fieldsets = [
        (None, {"fields": ["id", "user", "lab", "state", "end_reason", "error"]}),
        ("Time", {"fields": ["created_at", "started_at", "expires_at", "last_active_at", "ended_at",
                             "extensions_used"]}),
        ("Runner", {"fields": ["runner_name", "runner_state", "endpoints"]}),
    ]

    @admin.display(description="session", ordering="id")
    def short_id(self, session: Session) -> str:
        return str(session.pk)[:8]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sessions are started by learners from the lab page

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Deleting a live session would orphan its container or VM; stop it first.
        if isinstance(obj, Session) and obj.is_live:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # bulk delete would not check each session is ended
        return found

    @admin.action(description="Stop selected sessions", permissions=["change"])
    def stop_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        stopped = 0
        untouched = 0
        for session in queryset.select_related("lab", "user"):
            was_stopping_or_ended = session.is_ended or session.state == State.STOPPING
            try:
                result = actions.stop_session(session, reason=EndReason.STAFF)
            except actions.JobQueueUnavailable as exc:
                self.message_user(request, f"{exc} No session was stopped from here on.", messages.ERROR)
                break
            except actions.SessionActionError as exc:
                self.message_user(request, f"{session}: {exc}", messages.WARNING)
                continue
            if not was_stopping_or_ended and result.state == State.STOPPING:
                stopped += 1
            else:
                untouched += 1
        if stopped:
            self.message_user(request, f"Stopping {stopped} session(s).", messages.SUCCESS)
        if untouched:
            self.message_user(request, f"{untouched} session(s) were already stopping or ended.", messages.INFO)

    @admin.action(description="Extend selected sessions", permissions=["change"])
    def extend_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        extended = 0
        for session in queryset.select_related("lab", "user"):
            try:
                actions.extend_session(session, by_staff=True)
            except actions.SessionActionError as exc:
                self.message_user(request, f"{session}: {exc}", messages.WARNING)
            else:
                extended += 1
        if extended:
            self.message_user(request, f"Extended {extended} session(s).", messages.SUCCESS)


@admin.register(SessionEvent)
class SessionEventAdmin(admin.ModelAdmin):
    """The session log, read only: it records what happened."""

    list_display = ["created_at", "session", "level", "short_message"]
    list_filter = ["level"]
    search_fields = ["message", "session__id", "session__user__username", "session__lab__slug"]
    list_select_related = ["session__lab", "session__user"]
    date_hierarchy = "created_at"
    readonly_fields = ["session", "created_at", "level", "message"]

    @admin.display(description="message")
    def short_message(self, event: SessionEvent) -> str:
        return event.message if len(event.message) <= 120 else event.message[:119] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(PreviewShare)
class PreviewShareAdmin(admin.ModelAdmin):
    list_display = ("session", "port", "created_by", "created_at", "expires_at", "revoked_at")
    list_filter = ("port",)
    search_fields = ("session__id", "created_by__username", "session__lab__slug")
    list_select_related = ("session", "session__lab", "session__user", "created_by")
    readonly_fields = ("id", "session", "port", "created_by", "created_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # shares are made by the session's owner on the session page

    @admin.action(description="Revoke selected share links")
    def revoke(self, request: HttpRequest, queryset: QuerySet[PreviewShare]) -> None:
        from django.utils import timezone

        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} share link(s).", messages.SUCCESS)


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "lab", "status", "size_bytes", "includes_memory", "created_at")
    list_filter = ("status", "includes_memory", "lab")
    search_fields = ("name", "owner__username", "lab__slug")
    list_select_related = ("owner", "lab")
    readonly_fields = ("id", "owner", "lab", "source_session", "path", "size_bytes", "reserved_bytes",
                       "includes_memory", "status", "error", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # snapshots are taken from running sessions, with quota accounting


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
        from django.urls import reverse
        from django.utils.html import format_html

        return format_html('<a href="{}">Replay</a>', reverse("sessions:recording_replay", args=[recording.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # recordings are made by the terminal itself

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
