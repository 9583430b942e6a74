from __future__ import annotations

from django.conf import settings
from django.core.validators import FileExtensionValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

GIB = 1024**3


class UserQuota(models.Model):
    """Per-user limits. Snapshot bytes are bounded in the database, so no race can exceed them."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    max_concurrent_sessions = models.PositiveIntegerField(default=1)
    snapshot_capacity_bytes = models.BigIntegerField(default=2 * GIB)
    snapshot_stored_bytes = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(snapshot_stored_bytes__gte=0), name="quota_stored_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(snapshot_stored_bytes__lte=F("snapshot_capacity_bytes")),
                name="quota_stored_within_capacity",
            ),
        ]

    def __str__(self) -> str:
        return f"quota of {self.user}"

    @classmethod
    def for_user(cls, user: models.Model) -> UserQuota:
        quota, _ = cls.objects.get_or_create(user=user)
        return quota


class SiteAppearance(models.Model):
    """The one row that brands the site; edited in the admin."""

    SINGLETON_PK = 1

    site_name = models.CharField(max_length=80, default="Browser Labs")
    logo = models.FileField(
        upload_to="branding/",
        blank=True,
        validators=[FileExtensionValidator(["png", "svg", "jpg", "jpeg", "webp"])],
    )
    accent_color = models.CharField(
        max_length=7,
        default="#2563eb",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a colour like #2563eb.")],
    )
    tagline = models.CharField(max_length=160, blank=True, default="Hands-on labs in your browser")

    class Meta:
        verbose_name = "site appearance"
        verbose_name_plural = "site appearance"

    def __str__(self) -> str:
        return self.site_name

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> SiteAppearance:
        obj, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return obj
