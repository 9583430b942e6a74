from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from vms.models import Snapshot


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
