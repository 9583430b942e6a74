"""Share links: who else may see a port of a session's preview, until when."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from sessions_app.models import State


class PreviewShare(models.Model):
    """An explicit, expiring, revocable link that lets others see one port of a session's preview."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey("sessions_app.Session", on_delete=models.CASCADE, related_name="preview_shares")
    port = models.PositiveIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sessions_app_previewshare"  # the table it had before the preview app existed
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"share of {self.session_id}:{self.port}"

    def is_valid(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now and self.session.state == State.RUNNING
