"""Admin for images, tags, labs and their steps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt

from audit.records import client_address, record, record_many
from labs import vm_images
from labs.forms import ImageAdminForm
from labs.models import IdleSignal, Image, Lab, LabStep, Tag

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "reference", "disk_format", "size", "short_sha256", "active", "updated_at"]
    list_filter = ["kind", "active", "disk_format"]
    search_fields = ["name", "reference", "sha256", "description"]
    readonly_fields = ["sha256", "size", "virtual_size", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "active", "description"]}),
        ("Source", {"fields": ["reference", "file", "disk_format"]}),
        ("Verified contents", {"fields": ["sha256", "size", "virtual_size"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]
    actions = ["activate", "deactivate"]
    form = ImageAdminForm

    # Uploads stream through a hashing handler, which must be installed before the request body
    # is read; CSRF is still checked, by changeform_view's own csrf_protect. The server refuses a
    # body much past LAB_VM_IMAGE_MAX_BYTES before reading it (webserver/body_limits.py); the
    # handler holds the file itself to the limit.
    @method_decorator(csrf_exempt)
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        vm_images.install_upload_handler(request, max_bytes=settings.LAB_VM_IMAGE_MAX_BYTES)
        return super().add_view(request, form_url, extra_context)

    @method_decorator(csrf_exempt)
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: Any = None) -> HttpResponse:
        vm_images.install_upload_handler(request, max_bytes=settings.LAB_VM_IMAGE_MAX_BYTES)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        # The form tells why the handler dropped a file (too large), which it learns only once it parses the body.
        return type(form.__name__, (form,), {"upload_request": request})

    def save_model(self, request: HttpRequest, obj: Image, form: Any, change: bool) -> None:
        verified = getattr(form, "verified", None)
        if verified is None:
            super().save_model(request, obj, form, change)
            return
        vm_images.apply_info(obj, verified)
        try:
            super().save_model(request, obj, form, change)
            vm_images.make_read_only(Path(obj.file.path))
            record("image.upload", actor=request.user, target=obj, address=client_address(request),
                   extra={"sha256": verified.sha256, "disk_format": verified.disk_format})
        except Exception:
            if obj.file and obj.file.name:
                obj.file.storage.delete(obj.file.name)
            raise
        self.message_user(
            request,
            f"Stored {obj.name} read-only: {verified.disk_format}, sha256 {verified.sha256}, "
            f"virtual size {filesizeformat(verified.virtual_size_bytes)}.",
            messages.SUCCESS,
        )

    @admin.display(description="size", ordering="size_bytes")
    def size(self, image: Image) -> str:
        return filesizeformat(image.size_bytes) if image.size_bytes else "—"

    @admin.display(description="virtual size", ordering="virtual_size_bytes")
    def virtual_size(self, image: Image) -> str:
        return filesizeformat(image.virtual_size_bytes) if image.virtual_size_bytes else "—"

    @admin.display(description="sha256", ordering="sha256")
    def short_sha256(self, image: Image) -> str:
        return image.sha256[:12] if image.sha256 else "—"

    @admin.action(description="Enable selected images", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Image]) -> None:
        record_many("image.enable", queryset, actor=request.user, address=client_address(request))
        count = queryset.update(active=True)
        self.message_user(request, f"Enabled {count} image(s).", messages.SUCCESS)

    @admin.action(description="Disable selected images (no new sessions)", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Image]) -> None:
        record_many("image.disable", queryset, actor=request.user, address=client_address(request))
        count = queryset.update(active=False)
        self.message_user(request, f"Disabled {count} image(s).", messages.SUCCESS)


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    list_display = ["name", "lab_count"]
    search_fields = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tag]:
        return super().get_queryset(request).annotate(lab_count=Count("labs"))

    @admin.display(description="labs", ordering="lab_count")
    def lab_count(self, tag: Tag) -> int:
        return getattr(tag, "lab_count", 0)


# Step scripts run in the learner's session, so staff must see and edit them next to the step;
# collapsed because most steps have none.
STEP_FIELDSETS: _FieldsetSpec = [
    (None, {"fields": ["order", "title", "body", "verify", "solution", "hints"]}),
    ("Scripts run when the step starts", {"fields": ["background_script", "foreground_script"],
                                          "classes": ["collapse"]}),
]


class LabStepInline(admin.StackedInline):
    model = LabStep
    fieldsets = STEP_FIELDSETS
    extra = 0
    ordering = ["order"]


@admin.register(Lab)
class LabAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "image", "runner", "difficulty", "network_mode", "ttl_minutes", "published",
                    "updated_at"]
    list_filter = ["published", "difficulty", "network_mode", "runner", "docker_access", "tags", "image"]
    search_fields = ["slug", "title", "summary", "image__name"]
    list_select_related = ["image"]
    prepopulated_fields = {"slug": ["title"]}
    filter_horizontal = ["tags"]
    # source_format is set by import_lab (it changes how a session is prepared), so it is shown, not edited.
    readonly_fields = ["source_path", "source_format", "created_at", "updated_at"]
    inlines = [LabStepInline]

    def formfield_for_dbfield(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if db_field.name == "idle_signals":
            # A list of choices kept as JSON: shown as checkboxes, not as JSON to type.
            return forms.MultipleChoiceField(
                choices=IdleSignal.choices, widget=forms.CheckboxSelectMultiple, required=False,
                label="Idle signals", help_text="What counts as activity for the idle timeout. Without the page's "
                "heartbeat, a tab left open with nothing running does not keep the session; CPU use counts "
                "only while the watchdog (run_watchdog) runs.")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if db_field.name == "image":
            kwargs["queryset"] = Image.objects.filter(owner__isnull=True)  # learners' ISOs are theirs alone
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    actions = ["publish", "unpublish"]
    fieldsets = [
        (None, {"fields": ["title", "slug", "summary", "description", "difficulty", "tags", "published"]}),
        ("Environment", {"fields": ["image", "runner", "shell_user", "hosts", "consoles", "exposed_ports",
                                    "docker_access", "dind_images", "network_mode", "record_terminal"]}),
        ("Resources", {"fields": ["cpu", "memory_mb", "pids_limit", "disk_mb"]}),
        ("Time limits", {"fields": ["ttl_minutes", "max_extensions", "extension_minutes",
                                    "idle_timeout_minutes", "idle_signals", "idle_cpu_percent",
                                    "auto_delete_minutes"]}),
        ("Judge and completion", {"fields": ["judge", "unlock_steps_in_order", "finish_text"]}),
        ("Files copied into the session", {"fields": ["assets"], "classes": ["collapse"]}),
        ("Scripts run when the session starts", {"fields": ["intro_background_script", "intro_foreground_script"],
                                                 "classes": ["collapse"]}),
        ("History", {"fields": ["source_path", "source_format", "created_at", "updated_at"]}),
    ]

    @admin.action(description="Publish selected labs", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Lab]) -> None:
        record_many("lab.publish", queryset, actor=request.user, address=client_address(request))
        count = queryset.update(published=True)
        self.message_user(request, f"Published {count} lab(s).", messages.SUCCESS)

    @admin.action(description="Unpublish selected labs", permissions=["change"])
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Lab]) -> None:
        record_many("lab.unpublish", queryset, actor=request.user, address=client_address(request))
        count = queryset.update(published=False)
        self.message_user(request, f"Unpublished {count} lab(s).", messages.SUCCESS)


@admin.register(LabStep)
class LabStepAdmin(admin.ModelAdmin):
    list_display = ["lab", "order", "title"]
    list_filter = ["lab"]
    search_fields = ["title", "body", "lab__slug", "lab__title"]
    list_select_related = ["lab"]
    ordering = ["lab__title", "order"]
    fieldsets = [(None, {"fields": ["lab"]}), *STEP_FIELDSETS]
