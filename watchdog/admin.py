"""Alerts and the sessions' latest figures in the admin: read only, but staff may resolve alerts."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.records import client_address
from watchdog import actions
from watchdog.models import Alert, SessionSample


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["first_seen", "kind", "level", "status", "subject", "value_shown", "threshold_shown",
                    "last_seen", "resolved_at"]
    list_filter = ["status", "kind", "level"]
    search_fields = ["subject", "message", "session__lab__slug", "session__user__username"]
    date_hierarchy = "first_seen"
    list_select_related = ["session"]
    readonly_fields = ["kind", "subject", "session", "level", "status", "value", "threshold", "message",
                       "first_seen", "last_seen", "resolved_at", "resolution"]
    actions = ["resolve_alerts"]
    list_per_page = 100

    @admin.display(description="value", ordering="value")
    def value_shown(self, alert: Alert) -> str:
        return f"{alert.value:.0f}%"

    @admin.display(description="threshold", ordering="threshold")
    def threshold_shown(self, alert: Alert) -> str:
        return f"{alert.threshold:g}%"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Resolve selected alerts", permissions=["change"])
    def resolve_alerts(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        resolved = sum(actions.resolve_by_staff(alert, request.user, client_address(request))
                       for alert in queryset.filter(status=Alert.Status.OPEN))
        self.message_user(request, f"Resolved {resolved} alert(s). An alert opens again if its figure still "
                                   "holds for the window.", messages.SUCCESS)


@admin.register(SessionSample)
class SessionSampleAdmin(admin.ModelAdmin):
    list_display = ["session", "sampled_at", "cpu_percent", "memory_shown", "disk_shown"]
    list_select_related = ["session__lab", "session__user"]
    search_fields = ["session__id", "session__lab__slug", "session__user__username"]
    readonly_fields = ["session", "cpu_percent", "memory_bytes", "memory_limit_bytes", "disk_used_bytes",
                       "disk_total_bytes", "sampled_at"]

    @admin.display(description="memory")
    def memory_shown(self, sample: SessionSample) -> str:
        percent = sample.memory_percent
        return f"{sample.memory_bytes >> 20} of {sample.memory_limit_bytes >> 20} MiB" + (
            f" ({percent:.0f}%)" if percent is not None else "")

    @admin.display(description="disk")
    def disk_shown(self, sample: SessionSample) -> str:
        if sample.disk_percent is None or sample.disk_used_bytes is None or sample.disk_total_bytes is None:
            return "-"
        return f"{sample.disk_used_bytes >> 20} of {sample.disk_total_bytes >> 20} MiB ({sample.disk_percent:.0f}%)"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
