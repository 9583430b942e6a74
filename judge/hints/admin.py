"""Admin for hint requests: what was asked with which context, and what was answered (read-only).

Imported from judge/admin.py before its catch-all registration.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from judge.models import HintRequest


class HintRequestAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "lab", "step_order", "source", "answered_at", "has_error")
    list_filter = ("source", "created_at")
    search_fields = ("user__username", "session__lab__slug", "answer", "error")
    date_hierarchy = "created_at"
    list_select_related = ("user", "session__lab", "step")
    readonly_fields = ("user", "session", "step", "source", "created_at", "answered_at", "answer", "error",
                       "context_pretty")
    exclude = ("context",)

    @admin.display(description="Lab", ordering="session__lab__slug")
    def lab(self, obj: HintRequest) -> str:
        return obj.session.lab.slug

    @admin.display(description="Step")
    def step_order(self, obj: HintRequest) -> str:
        return str(obj.step.order) if obj.step else "—"

    @admin.display(description="Error", boolean=True)
    def has_error(self, obj: HintRequest) -> bool:
        return bool(obj.error)

    @admin.display(description="Context sent")
    def context_pretty(self, obj: HintRequest) -> str:
        return format_html('<pre class="admin-result">{}</pre>',
                           json.dumps(obj.context, indent=2, ensure_ascii=False))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: HintRequest | None = None) -> bool:
        return False


# judge/admin.py registers every judge model it finds without an admin; whichever runs first,
# this tailored one wins.
if admin.site.is_registered(HintRequest):
    admin.site.unregister(HintRequest)
admin.site.register(HintRequest, HintRequestAdmin)
