from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.records import client_address
from preview import actions
from preview.models import PreviewShare


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
        # One by one through the verb, so each session's log says who revoked its link.
        live = list(queryset.filter(revoked_at__isnull=True).select_related("session"))
        for share in live:
            actions.revoke_share(share, request.user, address=client_address(request))
        self.message_user(request, f"Revoked {len(live)} share link(s).", messages.SUCCESS)
