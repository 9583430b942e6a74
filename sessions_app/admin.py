"""Admin for sessions: read-mostly, with stop and extend going through sessions_app.actions."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from audit.records import client_address
from labs.models import Lab
from runners import runner_configs
from sessions_app import actions, admission
from sessions_app.models import EndReason, HousekeepingPass, RunnerCapacity, Session, SessionEvent, State

STOP_ALL_PERMISSION = "sessions_app.stop_all_sessions"


class StopAllForm(forms.Form):
    """Which sessions staff's "stop all" stops: of one lab, of one runner, or everywhere."""

    scope = forms.ChoiceField(choices=[("lab", "Every session of one lab"), ("runner", "Every session of one runner"),
                                       ("all", "Every session of the site")], widget=forms.RadioSelect)
    lab = forms.ModelChoiceField(queryset=Lab.objects.order_by("title"), required=False)
    runner = forms.ChoiceField(required=False)
    # What the confirmation page showed: a different number now means the staff member confirms again.
    confirmed_count = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = set(runner_configs()) | set(Session.objects.live().values_list("runner_name", flat=True).distinct())
        runner = self.fields["runner"]
        assert isinstance(runner, forms.ChoiceField)
        runner.choices = [("", "---------")] + [(name, name) for name in sorted(n for n in names if n)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("scope") == "lab" and not data.get("lab"):
            self.add_error("lab", "Choose the lab whose sessions to stop.")
        if data.get("scope") == "runner" and not data.get("runner"):
            self.add_error("runner", "Choose the runner whose sessions to stop.")
        return data

    def selection(self) -> tuple[Lab | None, str]:
        scope = self.cleaned_data["scope"]
        return (self.cleaned_data["lab"] if scope == "lab" else None,
                self.cleaned_data["runner"] if scope == "runner" else "")


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

    def get_urls(self) -> list[URLPattern]:
        stop_all = path("stop-all/", self.admin_site.admin_view(self.stop_all_view),
                        name="sessions_app_session_stop_all")
        return [stop_all, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {**(extra_context or {}), "may_stop_all": request.user.has_perm(STOP_ALL_PERMISSION)}
        return super().changelist_view(request, extra_context=context)

    def stop_all_view(self, request: HttpRequest) -> HttpResponse:
        """Choose the sessions, see how many, confirm: each is stopped and logged with who asked."""
        if not request.user.has_perm(STOP_ALL_PERMISSION):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else (request.GET if "scope" in request.GET else None)
        form = StopAllForm(data)
        count: int | None = None
        description = ""
        if form.is_valid():
            lab, runner = form.selection()
            count = actions.sessions_to_stop(lab, runner).count()
            description = (f"of the lab “{lab.title}”" if lab else f"on the runner “{runner}”" if runner
                           else "of the whole site")
            confirmed = form.cleaned_data.get("confirmed_count")
            if request.method == "POST" and confirmed == count:
                try:
                    stopped = actions.stop_all(request.user.get_username(), lab=lab, runner=runner,
                                               actor=request.user, address=client_address(request))
                except actions.JobQueueUnavailable as exc:
                    self.message_user(request, f"{exc} No session was stopped.", messages.ERROR)
                else:
                    self.message_user(request, f"Stopping {stopped} session(s) {description}.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:sessions_app_session_changelist"))
            elif request.method == "POST":
                self.message_user(request, f"The number of sessions changed since you looked: it is now {count}. "
                                           "Confirm again.", messages.WARNING)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Stop all sessions",
                   "form": form, "count": count, "description": description}
        return TemplateResponse(request, "admin/sessions_app/session/stop_all.html", context)

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
                result = actions.stop_session(session, reason=EndReason.STAFF, asked_by=request.user.get_username(),
                                              actor=request.user, address=client_address(request))
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
                actions.extend_session(session, by_staff=True, actor=request.user, address=client_address(request))
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


@admin.register(RunnerCapacity)
class RunnerCapacityAdmin(admin.ModelAdmin):
    list_display = ["runner", "max_sessions", "waiting"]
    search_fields = ["runner"]

    @admin.display(description="waiting in line")
    def waiting(self, capacity: RunnerCapacity) -> int:
        return Session.objects.filter(runner_name=capacity.runner, state=State.WAITING).count()

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # A raised capacity lets the line in now rather than at the reaper's next pass.
        transaction.on_commit(lambda: admission.admit(obj.runner))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        runner = obj.runner
        super().delete_model(request, obj)
        transaction.on_commit(lambda: admission.admit(runner))  # unlimited now: everyone waiting goes in


@admin.register(HousekeepingPass)
class HousekeepingPassAdmin(admin.ModelAdmin):
    """The reaper's and reconciler's recent passes (a day of them), as /metrics reports them: read only."""

    list_display = ["started_at", "kind", "duration_seconds", "sessions_handled", "orphans_removed"]
    list_filter = ["kind"]
    date_hierarchy = "started_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
