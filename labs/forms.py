"""The admin's image form: a VM disk or ISO upload is validated before anything is stored."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest

from labs import vm_images
from labs.models import Image

# Fields that describe the verified contents of a VM image; they never change after it is stored.
FROZEN_VM_FIELDS = ("file", "reference", "disk_format", "kind")


class ImageAdminForm(forms.ModelForm):
    """Container images need only a reference; a VM image needs an uploaded file of the declared format.

    After `is_valid()`, `verified` holds what qemu-img confirmed about a new upload, for the
    admin's save_model to record.
    """

    class Meta:
        model = Image
        fields = ["name", "kind", "active", "description", "reference", "file", "disk_format"]
        help_texts = {
            "file": "A qcow2 or raw disk, or an ISO. Checked with qemu-img before it is kept; stored read-only. "
                    "For very large files use `manage.py register_image` on the server.",
            "disk_format": "Required for a VM image: the upload must really be in this format.",
        }

    # The admin's request (ImageAdmin.get_form), whose upload handler may have dropped a file too large.
    upload_request: HttpRequest | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verified: vm_images.ImageInfo | None = None

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        rejection = vm_images.upload_rejection(self.upload_request) if self.upload_request is not None else ""
        if rejection:
            self.add_error("file", rejection)
            return cleaned
        kind = cleaned.get("kind")
        upload = cleaned.get("file")
        is_new_upload = isinstance(upload, UploadedFile)
        instance = self.instance

        if instance.pk and instance.kind == Image.Kind.VM:
            changed = [name for name in FROZEN_VM_FIELDS if name in self.changed_data]
            if changed:
                raise forms.ValidationError(
                    "The file of an existing VM image cannot be replaced or changed "
                    f"({', '.join(changed)}); create a new image instead."
                )
            return cleaned

        if kind == Image.Kind.CONTAINER:
            if is_new_upload:
                self.add_error("file", "A container image is an image reference; it takes no file.")
            return cleaned

        if kind == Image.Kind.VM:
            if not is_new_upload:
                if cleaned.get("reference"):
                    self.add_error("reference", "Upload the file here, or register a file already on the server "
                                                "with `manage.py register_image` (it is checked the same way).")
                else:
                    self.add_error("file", "A VM image needs a disk or ISO file.")
                return cleaned
            declared = cleaned.get("disk_format") or ""
            if not declared:
                self.add_error("disk_format", "Choose the format of the uploaded file (qcow2, raw or ISO).")
                return cleaned
            assert isinstance(upload, UploadedFile)
            try:
                self.verified = vm_images.inspect_upload(upload, declared)
            except vm_images.ImageRejected as exc:
                self.add_error("file", str(exc))
        return cleaned
