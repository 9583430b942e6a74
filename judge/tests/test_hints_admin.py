"""Staff read hint requests in the admin: what was sent to the model and what came back."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

import judge.hints.admin  # judge/admin.py imports it too; imported here so the test stands alone
from judge.models import HintRequest
from judge.tests.hint_fixtures import session  # noqa: F401


def test_the_admin_lists_requests_and_shows_the_context_read_only(client, staff_user, session):  # noqa: F811
    assert isinstance(admin.site._registry[HintRequest], judge.hints.admin.HintRequestAdmin)
    hint = HintRequest.objects.create(user=session.user, session=session, step=session.lab.steps.first(),
                                      context={"lab": "Hello shell", "file": {"path": "app.py"}},
                                      answer="Check the port.", source=HintRequest.Source.FALLBACK,
                                      error="no Gemini API key is configured (GEMINI_API_KEY)")
    client.force_login(staff_user)
    listing = client.get(reverse("admin:judge_hintrequest_changelist"))
    assert listing.status_code == 200 and "hello-shell" in listing.content.decode()
    detail = client.get(reverse("admin:judge_hintrequest_change", args=[hint.pk])).content.decode()
    assert "&quot;path&quot;: &quot;app.py&quot;" in detail and "Check the port." in detail
    assert client.get(reverse("admin:judge_hintrequest_add")).status_code == 403
