"""The hint panel: it loads its list lazily, polls while an answer is pending, and gives up on lost jobs."""

from __future__ import annotations

from datetime import timedelta

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from judge.models import HintRequest
from judge.tests.hint_fixtures import session  # noqa: F401


def test_the_included_panel_loads_its_list_when_shown(rf, owner, session):  # noqa: F811
    request = rf.get("/")
    request.user = owner
    html = render_to_string("judge/_hints.html", {"session": session}, request=request)
    assert "Get a hint" in html and "data-editor-context" in html
    assert f'hx-get="{reverse("hints:list", args=[session.pk])}" hx-trigger="load"' in html


def test_a_pending_request_polls_until_answered(owner_client, session):  # noqa: F811
    hint = HintRequest.objects.create(user=session.user, session=session)
    url = reverse("hints:list", args=[session.pk])
    assert 'hx-trigger="every 2s"' in owner_client.get(url).content.decode()
    HintRequest.objects.filter(pk=hint.pk).update(answer="Done.", source=HintRequest.Source.GEMINI,
                                                 answered_at=timezone.now())
    html = owner_client.get(url).content.decode()
    assert "every 2s" not in html and "Done." in html


def test_a_request_whose_job_was_lost_stops_the_polling(owner_client, session):  # noqa: F811
    hint = HintRequest.objects.create(user=session.user, session=session)
    HintRequest.objects.filter(pk=hint.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    html = owner_client.get(reverse("hints:list", args=[session.pk])).content.decode()
    assert "every 2s" not in html and "No answer came" in html
