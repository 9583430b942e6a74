"""The audit log in the admin: staff filter it by action, actor, kind of actor and date and
search it; nobody adds or edits an entry, only superusers delete; learners never reach it; a
deleted user's entries keep their name."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from audit.records import record
from audit.tests.helpers import client_for, running_session

LIST = reverse("admin:audit_auditentry_changelist")


@pytest.fixture
def log(owner, other_learner, staff_user, lab):
    session = running_session(owner, lab)
    entries = {
        "start": record("session.start", actor=owner, target=session, address="198.51.100.1"),
        "stop": record("session.stop", actor=staff_user, target=session, address="198.51.100.2"),
        "expired": record("session.stop", target=session, extra={"reason": "expired"}),
        "import": record("lab.import", target=lab),
        "old": record("session.start", actor=other_learner, target=session, address="198.51.100.3"),
    }
    AuditEntry.objects.filter(pk=entries["old"].pk).update(at=timezone.now() - timedelta(days=400))
    return entries


@pytest.fixture
def auditor(django_user_model, password):
    """Staff who may read the log, and nothing more."""
    user = django_user_model.objects.create_user("audrey", "audrey@example.com", password, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    return user


def listed(client: Client, **query: object) -> set[int]:
    response = client.get(LIST, query)
    assert response.status_code == 200
    return {entry.pk for entry in response.context["cl"].result_list}


def pks(log: dict[str, AuditEntry], *names: str) -> set[int]:
    return {log[name].pk for name in names}


def test_staff_filter_the_log_by_action_actor_kind_of_actor_and_date(auditor, owner, log):
    client = client_for(auditor)
    assert listed(client) == pks(log, "start", "stop", "expired", "import", "old")
    assert listed(client, action="session.stop") == pks(log, "stop", "expired")
    assert listed(client, by="system") == pks(log, "expired", "import")
    assert listed(client, by="people") == pks(log, "start", "stop", "old")
    assert listed(client, actor__id__exact=owner.pk) == pks(log, "start")
    today = timezone.localdate()
    assert listed(client, at__year=today.year, at__month=today.month, at__day=today.day) == pks(
        log, "start", "stop", "expired", "import")


def test_staff_search_by_actor_name_target_and_address(auditor, log):
    client = client_for(auditor)
    assert listed(client, q="oscar") == pks(log, "old")  # the actor (the session is olivia's)
    assert listed(client, q="198.51.100.2") == pks(log, "stop")
    assert listed(client, q='"Hello shell"') == pks(log, "import")  # the lab's title; sessions name its slug


def test_the_filters_offer_the_actions_that_were_recorded(auditor, log):
    html = client_for(auditor).get(LIST).content.decode()
    for action in ("session.start", "session.stop", "lab.import"):
        assert f"?action={action}" in html
    assert "?action=share.create" not in html


def test_the_list_and_an_entry_show_who_acted_and_the_system(auditor, log):
    client = client_for(auditor)
    html = client.get(LIST).content.decode()
    assert "stella" in html and "system" in html
    page = client.get(reverse("admin:audit_auditentry_change", args=[log["stop"].pk]))
    assert page.status_code == 200
    assert "198.51.100.2" in page.content.decode()
    assert 'name="action"' not in page.content.decode()  # shown, not editable


def test_nobody_adds_or_changes_an_entry(auditor, staff_user, log):
    for client in (client_for(auditor), client_for(staff_user)):
        assert client.get(reverse("admin:audit_auditentry_add")).status_code == 403
        response = client.post(reverse("admin:audit_auditentry_change", args=[log["stop"].pk]),
                               {"action": "session.extend", "actor_name": "someone else"})
        assert response.status_code == 403
    entry = AuditEntry.objects.get(pk=log["stop"].pk)
    assert (entry.action, entry.actor_name) == ("session.stop", "stella")


def test_only_superusers_delete_entries(auditor, staff_user, log):
    delete = reverse("admin:audit_auditentry_delete", args=[log["old"].pk])
    assert client_for(auditor).post(delete, {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=log["old"].pk).exists()

    assert client_for(staff_user).post(delete, {"post": "yes"}).status_code == 302
    assert not AuditEntry.objects.filter(pk=log["old"].pk).exists()


def test_learners_and_staff_without_the_permission_cannot_reach_the_log(owner, django_user_model, password, log):
    for client in (Client(), client_for(owner)):
        response = client.get(LIST)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
        assert client.get(reverse("admin:audit_auditentry_change", args=[log["start"].pk])).status_code == 302
    other_staff = django_user_model.objects.create_user("sam", "sam@example.com", password, is_staff=True)
    assert client_for(other_staff).get(LIST).status_code == 403


def test_a_deleted_users_entries_keep_their_name(auditor, owner, log):
    owner.delete()  # also deletes their sessions; the log keeps what it said about them
    entry = AuditEntry.objects.get(pk=log["start"].pk)
    assert (entry.actor, entry.actor_name, entry.who) == (None, "olivia", "olivia")
    assert entry.target_label.startswith("hello-shell for olivia")
    assert log["start"].pk in listed(client_for(auditor), q="olivia")
    assert listed(client_for(auditor), by="people") == pks(log, "start", "stop", "old")
