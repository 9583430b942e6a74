"""The audit log in the admin: read only, filtered by action, actor and date; superusers may
delete old entries, nobody may add or change one."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from audit.models import AuditEntry


class ActorKindFilter(admin.SimpleListFilter):
    title = "done by"
    parameter_name = "by"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("people", "people"), ("system", "the system")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        if self.value() == "system":
            return queryset.filter(actor_name="")
        if self.value() == "people":
            return queryset.exclude(actor_name="")
        return queryset


class ActionFilter(admin.SimpleListFilter):
    """The actions that were recorded, not every action that could be."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        actions = AuditEntry.objects.order_by("action").values_list("action", flat=True).distinct()
        return [(action, action) for action in actions]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "who", "action", "target_type", "target_label", "address"]
    list_filter = [ActionFilter, ActorKindFilter, ("actor", admin.RelatedOnlyFieldListFilter), "target_type"]
    search_fields = ["actor_name", "action", "target_id", "target_label", "address"]
    date_hierarchy = "at"
    readonly_fields = ["at", "actor", "actor_name", "action", "target_type", "target_id", "target_label", "address",
                       "extra"]
    list_per_page = 100
    show_full_result_count = False  # counting a long log on every page is slow; the filters narrow it

    @admin.display(description="who", ordering="actor_name")
    def who(self, entry: AuditEntry) -> str:
        return entry.who

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_superuser)  # tidying up old entries; nobody edits the record
