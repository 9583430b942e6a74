"""Admin for sessions: read-mostly, with stop and extend going through sessions_app.actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from sessions_app import actions
from sessions_app.models import EndReason, Session, SessionEvent, State


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
