"""Terminal recordings: casts of a session's terminals that staff can replay."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class TerminalRecording(models.Model):
    """A terminal stream saved as an asciinema v2 cast, for staff to replay."""

    session = models.ForeignKey("sessions_app.Session", on_delete=models.CASCADE, related_name="recordings")
    terminal_name = models.CharField(max_length=40)
    file = models.FileField(upload_to="recordings/%Y/%m/", max_length=300)
    width = models.PositiveIntegerField(default=80)
    height = models.PositiveIntegerField(default=24)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    size_bytes = models.BigIntegerField(default=0)

    class Meta:
        db_table = "sessions_app_terminalrecording"  # the table it had before the consoles app existed
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"recording {self.terminal_name} of {self.session_id}"
