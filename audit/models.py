"""One row per state-changing action: who, what, on what, when and from where."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    """What someone (or the system, when `actor_name` is empty) did.

    `actor` goes to NULL when the user is deleted; `actor_name` keeps who it was. `extra` holds
    a few plain facts about the action (a reason, a port, a count), never tokens or passwords.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_name = models.CharField(max_length=150, blank=True, help_text="Empty for the system (reaper, jobs).")
    action = models.CharField(max_length=64, db_index=True, help_text="A dotted code, e.g. session.start.")
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's address, if by request.")
    extra = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.who} {self.action} {self.target_label}".strip()

    @property
    def who(self) -> str:
        return self.actor_name or "system"
