"""What the API changes lands in the audit log as the pages' actions do: who, what, from where."""

from __future__ import annotations

from audit.models import AuditEntry


def test_start_extend_and_stop_through_the_api_are_audited(owner_api, owner, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        session_id = owner_api.post("/sessions", {"lab": lab.slug}).json()["id"]
    owner_api.post(f"/sessions/{session_id}/extend")
    with django_capture_on_commit_callbacks(execute=True):
        owner_api.post(f"/sessions/{session_id}/stop")
    entries = AuditEntry.objects.filter(target_id=session_id, action__in=["session.start", "session.extend",
                                                                          "session.stop"]).order_by("at", "pk")
    assert [(e.action, e.actor, e.address) for e in entries] == [
        ("session.start", owner, "127.0.0.1"), ("session.extend", owner, "127.0.0.1"),
        ("session.stop", owner, "127.0.0.1"),
    ]
    assert entries.last().extra["via"] == "api"


def test_a_staff_stop_names_the_staff_member(staff_api, staff_user, running, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        staff_api.post(f"/staff/sessions/{running.pk}/stop")
    entry = AuditEntry.objects.get(action="session.stop", target_id=str(running.pk))
    assert (entry.actor, entry.extra["reason"], entry.extra["via"]) == (staff_user, "staff", "api")
