"""The watchdog's rows: alerts staff see in the admin, and each live session's latest figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models
from django.db.models import Count, Q

from watchdog.rules import CRITICAL, KIND_LABELS, WARNING


class Alert(models.Model):
    """A threshold that held for its window, on the host or a session. Open until the figure has
    stayed below the clear point for the window (or the session ended, or staff resolved it); at
    most one open alert per kind and subject."""

    class Level(models.TextChoices):
        WARNING = "warning", "warning"
        CRITICAL = "critical", "critical"

    class Status(models.TextChoices):
        OPEN = "open", "open"
        RESOLVED = "resolved", "resolved"

    kind = models.CharField(max_length=32, choices=list(KIND_LABELS.items()))
    # What the figure is of: a host ("host web-1"), a disk ("web-1:/var/lib/labs"), an engine's storage,
    # or a session's id (with the session below while it exists).
    subject = models.CharField(max_length=255)
    session = models.ForeignKey("sessions_app.Session", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="resource_alerts")
    level = models.CharField(max_length=16, choices=Level.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    value = models.FloatField(help_text="The latest figure, in percent.")
    threshold = models.FloatField(help_text="The level's figure, in percent.")
    message = models.TextField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True, help_text="Why it was resolved.")

    class Meta:
        ordering = ["-first_seen"]
        indexes = [models.Index(fields=["status", "first_seen"], name="alert_status_first_seen"),
                   models.Index(fields=["session", "status"], name="alert_session_status")]
        constraints = [
            # Two watchdogs running at once (a restart overlapping) cannot open the same alert twice.
            models.UniqueConstraint(fields=["kind", "subject"], condition=Q(status="open"),
                                    name="alert_one_open_per_subject"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.level} on {self.subject} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN

    @classmethod
    def open_summary(cls, now: datetime) -> dict[str, Any]:
        """What /readyz reports: open alerts by level, how many are critical on the host, the oldest."""
        open_alerts = cls.objects.filter(status=cls.Status.OPEN)
        counts = open_alerts.aggregate(
            open=Count("pk"),
            warning=Count("pk", filter=Q(level=WARNING)),
            critical=Count("pk", filter=Q(level=CRITICAL)),
            host_critical=Count("pk", filter=Q(level=CRITICAL, kind__startswith="host_")),
        )
        oldest = open_alerts.order_by("first_seen", "pk").values("kind", "level", "first_seen").first()
        return {
            "open": counts["open"],
            "by_level": {WARNING: counts["warning"], CRITICAL: counts["critical"]},
            "host_critical": counts["host_critical"],
            "oldest": None if oldest is None else {
                "kind": oldest["kind"], "level": oldest["level"],
                "age_seconds": max(0, int((now - oldest["first_seen"]).total_seconds())),
            },
        }


class SessionSample(models.Model):
    """A running session's latest figures from its runner (one row per session, replaced at every
    pass), so /metrics and the session page read them without asking the engine."""

    session = models.OneToOneField("sessions_app.Session", on_delete=models.CASCADE, primary_key=True,
                                   related_name="resource_sample")
    cpu_percent = models.FloatField(help_text="100 is one CPU.")
    memory_bytes = models.BigIntegerField()
    memory_limit_bytes = models.BigIntegerField()
    disk_used_bytes = models.BigIntegerField(null=True, blank=True)  # None where the runner does not limit the disk
    disk_total_bytes = models.BigIntegerField(null=True, blank=True)
    sampled_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"sample of {self.session_id} at {self.sampled_at:%H:%M:%S}"

    @property
    def memory_percent(self) -> float | None:
        return 100.0 * self.memory_bytes / self.memory_limit_bytes if self.memory_limit_bytes else None

    @property
    def disk_percent(self) -> float | None:
        if not self.disk_total_bytes or self.disk_used_bytes is None:
            return None
        return 100.0 * self.disk_used_bytes / self.disk_total_bytes
