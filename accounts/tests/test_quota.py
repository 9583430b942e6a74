"""UserQuota: defaults, and the database itself refusing snapshot bytes outside [0, capacity]."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F

from accounts.models import GIB, UserQuota

pytestmark = pytest.mark.django_db


def test_a_new_quota_allows_one_session_and_two_gib_of_snapshots(owner):
    quota = UserQuota.for_user(owner)

    assert quota.max_concurrent_sessions == 1
    assert quota.snapshot_capacity_bytes == 2 * GIB
    assert quota.snapshot_stored_bytes == 0


def test_for_user_returns_the_same_quota_every_time(owner):
    assert UserQuota.for_user(owner).pk == UserQuota.for_user(owner).pk
    assert UserQuota.objects.filter(user=owner).count() == 1


def test_storing_more_than_the_capacity_raises_integrity_error(owner):
    quota = UserQuota.for_user(owner)
    quota.snapshot_stored_bytes = quota.snapshot_capacity_bytes + 1

    with pytest.raises(IntegrityError), transaction.atomic():
        quota.save()

    quota.refresh_from_db()
    assert quota.snapshot_stored_bytes == 0


def test_a_negative_stored_size_raises_integrity_error(owner):
    quota = UserQuota.for_user(owner)
    quota.snapshot_stored_bytes = -1

    with pytest.raises(IntegrityError), transaction.atomic():
        quota.save()


def test_storing_exactly_the_capacity_is_allowed(owner):
    quota = UserQuota.for_user(owner)
    quota.snapshot_stored_bytes = quota.snapshot_capacity_bytes

    quota.save()

    quota.refresh_from_db()
    assert quota.snapshot_stored_bytes == 2 * GIB


def test_an_increment_that_would_overflow_is_refused_by_the_database(owner):
    quota = UserQuota.for_user(owner)
    UserQuota.objects.filter(pk=quota.pk).update(snapshot_stored_bytes=2 * GIB - 10)

    with pytest.raises(IntegrityError), transaction.atomic():
        UserQuota.objects.filter(pk=quota.pk).update(snapshot_stored_bytes=F("snapshot_stored_bytes") + 11)

    quota.refresh_from_db()
    assert quota.snapshot_stored_bytes == 2 * GIB - 10


def test_lowering_the_capacity_below_what_is_stored_raises_integrity_error(owner):
    quota = UserQuota.for_user(owner)
    UserQuota.objects.filter(pk=quota.pk).update(snapshot_stored_bytes=GIB)

    with pytest.raises(IntegrityError), transaction.atomic():
        UserQuota.objects.filter(pk=quota.pk).update(snapshot_capacity_bytes=GIB - 1)


def test_deleting_a_user_deletes_their_quota(owner):
    UserQuota.for_user(owner)

    owner.delete()

    assert not UserQuota.objects.exists()
