"""Personal API tokens: what a script or another system shows instead of a session cookie.

The token is shown once, when it is made; only its sha256 is kept, with its first characters
(`prefix`) to find the row and to tell tokens apart on the page. A read token may only look;
starting, stopping, extending and checking need a write token. A token may expire (chosen when it
is made: 30, 90 or 365 days, or never); an expired one is refused with a message saying so and
stays listed, marked expired, until its owner revokes it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

STARTS_WITH = "labs_"  # every API token starts so, which tells it apart from other secrets
PREFIX_LENGTH = len(STARTS_WITH) + 10  # "labs_" and 60 random bits: enough to find the row
TOKEN_LENGTH = len(STARTS_WITH) + 43  # token_urlsafe(32): 32 random bytes, 43 characters
MAX_TOKENS_PER_USER = 20
LAST_USED_WRITE_SECONDS = 60  # last_used_at is written at most this often per token
EXPIRY_DAYS = (30, 90, 365)  # the lifetimes offered on the page, besides "never"


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def find(self, token: str) -> ApiToken | None:
        """The token's row if `token` is one of ours and its owner may still sign in; else None."""
        if len(token) != TOKEN_LENGTH or not token.startswith(STARTS_WITH):
            return None
        found = self.select_related("user").filter(prefix=token[:PREFIX_LENGTH]).first()
        if found is None or not hmac.compare_digest(found.digest, digest_of(token)):
            return None
        if not found.user.is_active:
            return None
        return found


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "write", "Read and write"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, so you know which one to revoke.")
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False, help_text="sha256 of the token.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(scope__in=["read", "write"]), name="api_token_scope_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.scope}) of {self.user}"

    @classmethod
    def issue(cls, user: Any, name: str, scope: str, expires_in_days: int | None = None) -> tuple[ApiToken, str]:
        """Make a token for `user` (expiring after `expires_in_days`, or never when None); returns
        the row and the token itself, which is never stored."""
        token = STARTS_WITH + secrets.token_urlsafe(32)
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        row = cls.objects.create(user=user, name=name, scope=scope, prefix=token[:PREFIX_LENGTH],
                                 digest=digest_of(token), expires_at=expires_at)
        return row, token

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def expired(self) -> bool:
        return self.is_expired()

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE

    def record_use(self) -> None:
        """Note that the token was used (one write per LAST_USED_WRITE_SECONDS at most)."""
        now = timezone.now()
        recent = now - timedelta(seconds=LAST_USED_WRITE_SECONDS)
        updated = ApiToken.objects.filter(pk=self.pk).filter(
            models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=recent)).update(last_used_at=now)
        if updated:
            self.last_used_at = now
