import time

import pytest
from django.db import connection

from accounts.models import UserQuota
from sessions_app import actions
from sessions_app.models import Session, State
from tests.concurrency import at_once


def test_a_second_session_is_refused_with_a_link_to_the_running_one(owner, lab, django_capture_on_commit_callbacks):
    first = actions.start_session(owner, lab)
    with pytest.raises(actions.QuotaExceeded) as refused:
        actions.start_session(owner, lab)
    assert refused.value.session == first
    assert "limit 1" in str(refused.value)
    assert Session.objects.filter(user=owner).count() == 1


def test_a_raised_quota_allows_more_sessions(owner, lab):
    UserQuota.objects.create(user=owner, max_concurrent_sessions=2)
    actions.start_session(owner, lab)
    actions.start_session(owner, lab)
    with pytest.raises(actions.QuotaExceeded):
        actions.start_session(owner, lab)


def test_ended_sessions_do_not_count(owner, lab):
    first = actions.start_session(owner, lab)
    Session.objects.filter(pk=first.pk).update(state=State.STOPPED)
    second = actions.start_session(owner, lab)
    assert second.pk != first.pk


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_starts_cannot_both_pass_the_quota(owner, lab, monkeypatch):
    """Two real transactions on two connections race; the quota row lock lets exactly one win."""
    if connection.vendor != "postgresql":
        pytest.fail("this race test must run on PostgreSQL (set DATABASE_URL)")
    original_create = Session.objects.create

    def slow_create(**kwargs):
        time.sleep(0.3)  # widen the window between the count and the insert
        return original_create(**kwargs)

    monkeypatch.setattr(Session.objects, "create", slow_create)
    UserQuota.for_user(owner)
    def attempt() -> str:
        try:
            actions.start_session(owner, lab)
        except actions.QuotaExceeded:
            return "refused"
        return "started"

    outcomes = at_once(attempt, timeout=30)
    assert sorted(outcomes) == ["refused", "started"]
    assert Session.objects.filter(user=owner).count() == 1
