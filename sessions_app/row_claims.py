"""Working through many rows at once without holding them all: locked batches that skip rows another
process holds, so two reapers can run side by side and thousands of rows never sit in memory together."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from sessions_app.models import Session, SessionEvent, SessionQuerySet

BATCH = 200


def quiet_since(cutoff: datetime) -> SessionQuerySet:
    """Sessions created before `cutoff` that have logged nothing since: no worker is moving them.

    Every step of a start or a stop logs an event, so a recent event means a job is alive.
    """
    recent = SessionEvent.objects.filter(session=OuterRef("pk"), created_at__gt=cutoff)
    return Session.objects.filter(created_at__lte=cutoff).exclude(Exists(recent))


def claim_in_batches(queryset: QuerySet[Any], handle: Callable[[list[Any]], int], batch: int = BATCH) -> int:
    """Lock rows of `queryset` a batch at a time (skipping rows another process holds) and pass
    each batch's primary keys to `handle` inside the transaction; return the sum of what it returns.

    The primary-key cursor visits each row at most once per pass, even when `handle` leaves it
    matching the queryset.
    """
    total = 0
    after: Any = None
    while True:
        with transaction.atomic():
            rows = queryset.order_by("pk")
            if after is not None:
                rows = rows.filter(pk__gt=after)
            ids = list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch])
            if not ids:
                return total
            after = ids[-1]
            total += handle(ids)
