"""Staff's "stop all" (admin: Sessions → Stop all…): every session of a lab, of a runner or of the
site, after a confirmation that states the count, for holders of its own permission only; each
stop is logged with who asked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from labs.models import Lab
from sessions_app.models import EndReason, Session, State

URL = reverse("admin:sessions_app_session_stop_all")


def live_session(user, lab: Lab, runner: str = "fake", state: str = State.RUNNING) -> Session:
    now = timezone.now()
    return Session.objects.create(user=user, lab=lab, state=state, runner_name=runner, runner_state={},
                                  started_at=now, expires_at=now + timedelta(hours=1))


@pytest.fixture
def other_lab(lab) -> Lab:
    return Lab.objects.create(slug="other-lab", title="Other lab", image=lab.image, runner="fake", published=True)


@pytest.fixture
def sessions(owner, other_learner, lab, other_lab) -> dict[str, Session]:
    return {
        "lab-fake": live_session(owner, lab),
        "lab-starting": live_session(other_learner, lab, state=State.PROVISIONING),
        "other-fake": live_session(owner, other_lab),
        "other-docker": live_session(other_learner, other_lab, runner="docker"),
        "lab-ended": live_session(owner, lab, state=State.STOPPED),
    }


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def states(sessions: dict[str, Session]) -> dict[str, str]:
    return {name: Session.objects.get(pk=s.pk).state for name, s in sessions.items()}


def test_the_confirmation_states_the_count_and_only_a_matching_confirmation_stops(staff_client, sessions, lab):
    page = staff_client.get(URL, {"scope": "lab", "lab": lab.pk})
    assert page.status_code == 200
    assert "This stops 2 sessions of the lab “Hello shell”." in page.content.decode()

    # A confirmation of another number (sessions started since) stops nothing and shows the new count.
    response = staff_client.post(URL, {"scope": "lab", "lab": lab.pk, "confirmed_count": 5})
    assert response.status_code == 200
    assert "it is now 2" in response.content.decode()
    assert states(sessions)["lab-fake"] == State.RUNNING

    response = staff_client.post(URL, {"scope": "lab", "lab": lab.pk, "confirmed_count": 2})
    assert response.status_code == 302 and response["Location"] == reverse("admin:sessions_app_session_changelist")
    # Stopping: each teardown is queued (it runs after the commit, in a worker).
    assert states(sessions) == {"lab-fake": State.STOPPING, "lab-starting": State.STOPPING,
                                "other-fake": State.RUNNING, "other-docker": State.RUNNING,
                                "lab-ended": State.STOPPED}
    stopped = Session.objects.get(pk=sessions["lab-fake"].pk)
    assert stopped.end_reason == EndReason.STAFF
    assert stopped.events.filter(message="Stopping (stopped by staff: stella, stop all).").exists()


def test_by_runner_and_everywhere(staff_client, sessions):
    staff_client.post(URL, {"scope": "runner", "runner": "docker", "confirmed_count": 1})
    assert states(sessions)["other-docker"] == State.STOPPING
    assert states(sessions)["other-fake"] == State.RUNNING

    page = staff_client.get(URL, {"scope": "all"})
    assert "This stops 3 sessions of the whole site." in page.content.decode()
    staff_client.post(URL, {"scope": "all", "confirmed_count": 3})
    assert set(states(sessions).values()) == {State.STOPPING, State.STOPPED}
    assert states(sessions)["lab-ended"] == State.STOPPED  # an ended session is left as it was


def test_nothing_to_stop_says_so(staff_client, db, lab):
    page = staff_client.get(URL, {"scope": "lab", "lab": lab.pk})
    assert "there is nothing to stop" in page.content.decode()


def test_an_incomplete_choice_is_refused_with_a_clear_error(staff_client, sessions):
    page = staff_client.get(URL, {"scope": "lab"})
    assert page.status_code == 200
    assert "Choose the lab whose sessions to stop." in page.content.decode()
    response = staff_client.post(URL, {"scope": "everything", "confirmed_count": 4})
    assert response.status_code == 200
    assert states(sessions)["lab-fake"] == State.RUNNING


def test_staff_without_the_permission_are_refused_and_see_no_button(client, django_user_model, password, sessions,
                                                                    lab):
    clerk = django_user_model.objects.create_user("clerk", "clerk@example.com", password, is_staff=True)
    ours = Permission.objects.filter(content_type__app_label="sessions_app")
    clerk.user_permissions.add(ours.get(codename="view_session"), ours.get(codename="change_session"))
    client.force_login(clerk)
    assert client.get(URL, {"scope": "all"}).status_code == 403
    assert client.post(URL, {"scope": "all", "confirmed_count": 4}).status_code == 403
    assert states(sessions)["lab-fake"] == State.RUNNING
    assert "Stop all…" not in client.get(reverse("admin:sessions_app_session_changelist")).content.decode()

    clerk.user_permissions.add(ours.get(codename="stop_all_sessions"))
    clerk = django_user_model.objects.get(pk=clerk.pk)  # permissions are cached on the instance
    client.force_login(clerk)
    assert "Stop all…" in client.get(reverse("admin:sessions_app_session_changelist")).content.decode()
    assert client.get(URL, {"scope": "all"}).status_code == 200


def test_a_learner_is_sent_to_the_admin_login(owner_client, sessions):
    response = owner_client.post(URL, {"scope": "all", "confirmed_count": 4})
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    assert states(sessions)["lab-fake"] == State.RUNNING
