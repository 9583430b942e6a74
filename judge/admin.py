"""Admin for the judge app: every attempt of every learner, filterable, with its result readable.

Models without a tailored admin get a plain one at the end, so nothing is left out.
"""

from __future__ import annotations

import json

from django.apps import apps
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from judge.hints import admin as hint_admin  # noqa: F401  (registers the hint request admin first)
from judge.models import Attempt, StepRun


@admin.register(Attempt)
class AttemptAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "lab", "target", "status", "passed", "failure_codes", "duration_ms")
    list_filter = ("status", "passed", "lab", ("step", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("user__username", "user__email", "lab__slug", "lab__title")
    date_hierarchy = "created_at"
    list_select_related = ("user", "lab", "step")
    autocomplete_fields = ()
    readonly_fields = ("user", "session", "lab", "step", "status", "passed", "duration_ms", "created_at",
                       "finished_at", "result_pretty", "log_text")
    exclude = ("result", "log")

    @admin.display(description="Checked")
    def target(self, obj: Attempt) -> str:
        return f"step {obj.step.order}" if obj.step_id and obj.step else "final"

    @admin.display(description="Failure codes")
    def failure_codes(self, obj: Attempt) -> str:
        failures = (obj.result or {}).get("failures") or []
        return ", ".join(str(f.get("code", "")) for f in failures if isinstance(f, dict))

    @admin.display(description="Result")
    def result_pretty(self, obj: Attempt) -> str:
        return format_html('<pre class="admin-result">{}</pre>',
                           json.dumps(obj.result, indent=2, ensure_ascii=False, sort_keys=False))

    @admin.display(description="Log")
    def log_text(self, obj: Attempt) -> str:
        return format_html('<pre class="admin-log">{}</pre>',
                           obj.log or "")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # attempts come from learners' checks, never from the admin

    def has_change_permission(self, request: HttpRequest, obj: Attempt | None = None) -> bool:
        return False


@admin.register(StepRun)
class StepRunAdmin(admin.ModelAdmin):
    """Background scripts of steps and intros (Killercoda's ``background``): what ran where, and how it ended."""

    list_display = ("created_at", "session", "step_label", "status", "exit_code", "finished_at")
    list_filter = ("status", "session__lab", "created_at")
    search_fields = ("session__user__username", "session__lab__slug", "step__title")
    list_select_related = ("session__user", "session__lab", "step__lab")
    readonly_fields = ("session", "step", "status", "exit_code", "output", "created_at", "finished_at")

    @admin.display(description="Step")
    def step_label(self, obj: StepRun) -> str:
        return f"{obj.session.lab.slug} · {obj.label.lower()}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs come from sessions, never from the admin


for _model in apps.get_app_config("judge").get_models():
    if not admin.site.is_registered(_model):
        admin.site.register(_model)
