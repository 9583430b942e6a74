"""Only the session's owner and staff see or ask for its hints; everyone else gets a 404."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from judge.models import HintRequest
from judge.tests.hint_fixtures import session  # noqa: F401


def test_another_learner_gets_404_and_nothing_is_stored(client, other_learner, session, settings):  # noqa: F811
    settings.LAB_GEMINI_API_KEY = ""
    client.force_login(other_learner)
    assert client.get(reverse("hints:list", args=[session.pk])).status_code == 404
    assert client.post(reverse("hints:ask", args=[session.pk]), HTTP_HX_REQUEST="true").status_code == 404
    assert not HintRequest.objects.exists()


def test_anonymous_visitors_get_404(client, session):  # noqa: F811
    assert client.get(reverse("hints:list", args=[session.pk])).status_code == 404
    assert client.post(reverse("hints:ask", args=[session.pk])).status_code == 404


def test_staff_may_read_a_learners_hints(client, staff_user, session):  # noqa: F811
    HintRequest.objects.create(user=session.user, session=session, answer="Check the port.",
                               source=HintRequest.Source.GEMINI)
    client.force_login(staff_user)
    assert "Check the port." in client.get(reverse("hints:list", args=[session.pk])).content.decode()


def test_asking_needs_the_csrf_token(owner, session):  # noqa: F811
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(reverse("hints:ask", args=[session.pk])).status_code == 403
    assert not HintRequest.objects.exists()


def test_without_htmx_asking_redirects_back_to_the_session(owner_client, session, settings,  # noqa: F811
                                                           django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("hints:ask", args=[session.pk]))
    assert response.status_code == 302 and response.url == session.get_absolute_url()
    assert HintRequest.objects.get().source == HintRequest.Source.FALLBACK
