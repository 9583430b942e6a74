"""Admin for quotas, the site's appearance, and the user page with its quota inline."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from accounts.models import SiteAppearance, UserQuota


class UserQuotaForm(forms.ModelForm):
    """Refuses a capacity below what the user already stores (the database would refuse it too)."""

    class Meta:
        model = UserQuota
        fields = ["user", "max_concurrent_sessions", "snapshot_capacity_bytes"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        capacity = cleaned.get("snapshot_capacity_bytes")
        stored = self.instance.snapshot_stored_bytes or 0
        if capacity is not None and capacity < stored:
            self.add_error(
                "snapshot_capacity_bytes",
                f"The user already stores {filesizeformat(stored)} of snapshots; "
                f"the capacity cannot be smaller than that.",
            )
        return cleaned


def _stored(quota: UserQuota) -> str:
    return filesizeformat(quota.snapshot_stored_bytes)


def _capacity(quota: UserQuota) -> str:
    return filesizeformat(quota.snapshot_capacity_bytes)


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    form = UserQuotaForm
    list_display = ["user", "max_concurrent_sessions", "capacity", "stored", "updated_at"]
    list_filter = ["max_concurrent_sessions"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["stored", "updated_at"]
    fields = ["user", "max_concurrent_sessions", "snapshot_capacity_bytes", "stored", "updated_at"]

    @admin.display(description="snapshot capacity", ordering="snapshot_capacity_bytes")
    def capacity(self, quota: UserQuota) -> str:
        return _capacity(quota)

    @admin.display(description="snapshots stored", ordering="snapshot_stored_bytes")
    def stored(self, quota: UserQuota) -> str:
        return _stored(quota)

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("user")  # a quota belongs to its user for good
        return fields


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    form = UserQuotaForm
    fields = ["max_concurrent_sessions", "snapshot_capacity_bytes", "stored"]
    readonly_fields = ["stored"]
    can_delete = False
    max_num = 1
    min_num = 0
    extra = 1
    verbose_name_plural = "quota"

    @admin.display(description="snapshots stored")
    def stored(self, quota: UserQuota) -> str:
        return _stored(quota) if quota.pk else "—"


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin with the user's quota on the change page."""

    inlines = [UserQuotaInline]

    def get_inline_instances(self, request: HttpRequest, obj: Model | None = None) -> list[Any]:
        # On the add page the quota is left to UserQuota.for_user(), so nothing can create it twice.
        if obj is None:
            return []
        return super().get_inline_instances(request, obj)


@admin.register(SiteAppearance)
class SiteAppearanceAdmin(admin.ModelAdmin):
    """The single appearance row: the list page opens it, and it can be neither added twice nor deleted."""

    list_display = ["site_name", "accent_color", "tagline"]
    fields = ["site_name", "tagline", "accent_color", "logo"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not SiteAppearance.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            return super().changelist_view(request, extra_context)  # raises PermissionDenied
        appearance = SiteAppearance.load()
        opts = self.model._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[appearance.pk])
        )
