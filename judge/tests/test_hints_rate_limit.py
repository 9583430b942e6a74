"""At most five hint requests per session and minute, counted from the stored requests."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from judge.models import HintRequest
from judge.tests.hint_fixtures import ask, session  # noqa: F401


def test_the_sixth_request_in_a_minute_is_refused_with_the_wait(owner_client, session, settings,  # noqa: F811
                                                                django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    for _ in range(5):
        status, html = ask(owner_client, session, django_capture_on_commit_callbacks)
        assert "data-hint-notice" not in html
    # The oldest of the five was 40 seconds ago: 20 seconds to wait.
    oldest = HintRequest.objects.filter(session=session).order_by("created_at").first()
    HintRequest.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(seconds=40))
    status, html = ask(owner_client, session, django_capture_on_commit_callbacks)
    assert status == 200
    assert "You asked for 5 hints in the last minute." in html
    wait = int(html.split("Try again in ")[1].split(" second")[0])
    assert 18 <= wait <= 20
    assert HintRequest.objects.filter(session=session).count() == 5


def test_requests_older_than_a_minute_no_longer_count(owner_client, session, settings,  # noqa: F811
                                                      django_capture_on_commit_callbacks):
    settings.LAB_GEMINI_API_KEY = ""
    for _ in range(5):
        ask(owner_client, session, django_capture_on_commit_callbacks)
    HintRequest.objects.filter(session=session).update(created_at=timezone.now() - timedelta(seconds=61))
    _status, html = ask(owner_client, session, django_capture_on_commit_callbacks)
    assert "data-hint-notice" not in html
    assert HintRequest.objects.filter(session=session).count() == 6
