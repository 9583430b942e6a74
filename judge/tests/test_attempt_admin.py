"""Staff see every attempt in the admin, filtered by lab, status and result, with the result readable."""

from __future__ import annotations

from django.urls import reverse

from judge.models import Attempt
from judge.tests import judge_fixtures

# The shared fixtures, under the names the tests ask for.
checked_lab = judge_fixtures.checked_lab
running = judge_fixtures.running


def test_staff_filter_attempts_and_read_a_result(client, staff_user, running):
    failed = Attempt.objects.create(
        user=running.user, session=running, lab=running.lab, status=Attempt.Status.DONE, passed=False,
        result={"passed": False, "failures": [{"code": "image_too_large", "message": "471 MB", "hint": ""}]},
        log="Step 1/9 : FROM labs/python:3.11\n")
    Attempt.objects.create(user=running.user, session=running, lab=running.lab, status=Attempt.Status.ERROR)
    client.force_login(staff_user)
    changelist = reverse("admin:judge_attempt_changelist")
    page = client.get(changelist, {"passed__exact": "0", "lab__id__exact": running.lab.pk}).content.decode()
    assert "image_too_large" in page and "1 attempt" in page
    assert "By status" in page and "By passed" in page
    detail = client.get(reverse("admin:judge_attempt_change", args=[failed.pk])).content.decode()
    assert "&quot;code&quot;: &quot;image_too_large&quot;" in detail
    assert "Step 1/9 : FROM labs/python:3.11" in detail


def test_learners_cannot_open_the_admin(client, running):
    client.force_login(running.user)
    response = client.get(reverse("admin:judge_attempt_changelist"))
    assert response.status_code == 302
