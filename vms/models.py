"""Snapshots: saved VM states a learner can boot a new session from."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Snapshot(models.Model):
    """A saved VM state (disk, and memory when it was running) that a new session can boot from."""

    class Status(models.TextChoices):
        CREATING = "creating", "Creating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="snapshots")
    lab = models.ForeignKey("labs.Lab", on_delete=models.CASCADE, related_name="snapshots")
    source_session = models.ForeignKey("sessions_app.Session", on_delete=models.SET_NULL, null=True, blank=True,
                                       related_name="snapshots")
    name = models.CharField(max_length=100)
    path = models.CharField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    reserved_bytes = models.BigIntegerField(default=0)
    includes_memory = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CREATING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "sessions_app_snapshot"  # the table it had before the vms app existed
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="snapshot_size_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner})"
