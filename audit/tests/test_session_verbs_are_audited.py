"""Starting, stopping and extending a session each leave one audit entry: who, what, on which
session and from where; the reaper's stops are the system's."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from audit.tests.helpers import ADDRESS, actions_logged, client_for, only_entry, running_session
from sessions_app import actions
from sessions_app.models import EndReason, Session, State
from sessions_app.reaping import reap


def test_starting_a_lab_records_the_learner_the_session_and_the_address(owner, lab,
                                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(owner).post(reverse("labs:start", args=[lab.slug]))
    session = Session.objects.get(user=owner)
    assert response["Location"] == session.get_absolute_url()

    entry = only_entry("session.start")
    assert (entry.actor, entry.actor_name, entry.address) == (owner, "olivia", ADDRESS)
    assert (entry.target_type, entry.target_id) == ("sessions_app.session", str(session.pk))
    assert entry.target_label.startswith("hello-shell for olivia")
    assert entry.extra == {"lab": "hello-shell", "runner": "fake", "waiting": False}  # not in line: no capacity set
    assert actions_logged() == ["session.start"]


def test_a_refused_start_records_nothing(owner, lab):
    running_session(owner, lab)  # the default quota allows one live session
    client_for(owner).post(reverse("labs:start", args=[lab.slug]))
    assert not AuditEntry.objects.filter(action="session.start").exists()


def test_the_learner_stopping_records_one_stop_even_when_pressed_twice(owner, lab):
    session = running_session(owner, lab)
    client = client_for(owner)
    client.post(reverse("sessions:stop", args=[session.pk]))
    client.post(reverse("sessions:stop", args=[session.pk]))

    entry = only_entry("session.stop")
    assert (entry.actor, entry.address, entry.target_id) == (owner, ADDRESS, str(session.pk))
    assert entry.extra == {"reason": EndReason.LEARNER}


def test_a_stop_called_without_an_actor_names_the_learner(owner, lab):
    """Callers that do not say who (the JSON API, older code) still leave an actor for a learner's stop."""
    session = running_session(owner, lab)
    actions.stop_session(session)
    entry = only_entry("session.stop")
    assert (entry.actor, entry.address) == (owner, None)


def test_staff_stopping_from_the_session_page_is_recorded_as_staff(owner, staff_user, lab):
    session = running_session(owner, lab)
    client_for(staff_user).post(reverse("sessions:stop", args=[session.pk]))
    entry = only_entry("session.stop")
    assert (entry.actor, entry.extra["reason"], entry.address) == (staff_user, EndReason.STAFF, ADDRESS)


def test_extending_records_the_learner_and_the_new_deadline(owner, lab):
    session = running_session(owner, lab)
    client_for(owner).post(reverse("sessions:extend", args=[session.pk]))
    session.refresh_from_db()

    entry = only_entry("session.extend")
    assert (entry.actor, entry.address, entry.target_id) == (owner, ADDRESS, str(session.pk))
    assert entry.extra == {"minutes": lab.extension_minutes, "by_staff": False,
                           "expires_at": session.expires_at.isoformat()}


def test_a_refused_extension_records_nothing(owner, lab):
    session = running_session(owner, lab)
    Session.objects.filter(pk=session.pk).update(extensions_used=lab.max_extensions)
    client_for(owner).post(reverse("sessions:extend", args=[session.pk]))
    assert not AuditEntry.objects.exists()


def test_the_admin_stop_and_extend_actions_record_the_staff_member_per_session(owner, other_learner, staff_user, lab):
    first, second = running_session(owner, lab), running_session(other_learner, lab)
    client = client_for(staff_user)
    changelist = reverse("admin:sessions_app_session_changelist")
    client.post(changelist, {"action": "extend_sessions", "_selected_action": [first.pk, second.pk]})
    client.post(changelist, {"action": "stop_sessions", "_selected_action": [first.pk, second.pk]})

    for action in ("session.extend", "session.stop"):
        entries = AuditEntry.objects.filter(action=action)
        assert sorted(e.target_id for e in entries) == sorted([str(first.pk), str(second.pk)])
        assert {(e.actor, e.address) for e in entries} == {(staff_user, ADDRESS)}
    assert {e.extra["by_staff"] for e in AuditEntry.objects.filter(action="session.extend")} == {True}


def test_stop_all_records_the_whole_action_and_each_stop(owner, other_learner, staff_user, lab):
    sessions = [running_session(owner, lab), running_session(other_learner, lab)]
    url = reverse("admin:sessions_app_session_stop_all")
    client_for(staff_user).post(url, {"scope": "lab", "lab": lab.pk, "confirmed_count": 2})

    whole = only_entry("session.stop_all")
    assert (whole.actor, whole.address, whole.target_type, whole.target_id) == (
        staff_user, ADDRESS, "labs.lab", str(lab.pk))
    assert whole.extra == {"lab": "hello-shell", "stopped": 2}
    stops = AuditEntry.objects.filter(action="session.stop")
    assert sorted(e.target_id for e in stops) == sorted(str(s.pk) for s in sessions)
    assert {(e.actor, e.address, e.extra["stop_all"]) for e in stops} == {(staff_user, ADDRESS, True)}


def test_the_reaper_records_expiry_and_idle_stops_as_the_system(owner, other_learner, lab):
    lab.idle_timeout_minutes = 5
    lab.save(update_fields=["idle_timeout_minutes"])
    expired, idle = running_session(owner, lab), running_session(other_learner, lab)
    long_ago = timezone.now() - timedelta(hours=1)
    Session.objects.filter(pk=expired.pk).update(expires_at=long_ago)
    Session.objects.filter(pk=idle.pk).update(last_active_at=long_ago)

    report = reap()

    assert (report.expired, report.idle) == (1, 1)
    entries = {e.target_id: e for e in AuditEntry.objects.filter(action="session.stop")}
    assert entries.keys() == {str(expired.pk), str(idle.pk)}
    assert entries[str(expired.pk)].extra == {"reason": EndReason.EXPIRED}
    assert entries[str(idle.pk)].extra == {"reason": EndReason.IDLE}
    for entry in entries.values():
        assert (entry.actor, entry.actor_name, entry.who, entry.address) == (None, "", "system", None)
    assert Session.objects.get(pk=expired.pk).state == State.STOPPING
