"""My attempts: a learner's checks across every session and lab, their own only, a page at a time."""

from __future__ import annotations

import re
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from judge.models import Attempt
from judge.views import HISTORY_PAGE_SIZE
from labs.models import Lab, LabStep
from sessions_app.models import Session, State

URL = reverse("attempts:mine")


def make_lab(image, slug: str) -> Lab:
    lab = Lab.objects.create(slug=slug, title=f"Lab {slug}", image=image, runner="fake", published=True)
    LabStep.objects.create(lab=lab, order=1, title="Build it", body="Build.", verify=[{"kind": "file", "path": "x"}])
    return lab


def attempt(user, lab: Lab, *, minutes_ago: int, passed: bool | None = True, step: bool = True,
            codes: tuple[str, ...] = (), session: Session | None = None,
            status: str = Attempt.Status.DONE) -> Attempt:
    session = session or Session.objects.create(user=user, lab=lab, state=State.STOPPED)
    failures = [{"code": code, "message": f"{code} happened", "hint": ""} for code in codes]
    made = Attempt.objects.create(
        user=user, session=session, lab=lab, step=lab.steps.get() if step else None, status=status, passed=passed,
        result={"passed": bool(passed), "failures": failures, "notes": {"build log": "x" * 5000}},
        log="y" * 5000, duration_ms=1500)
    # created_at is set on insert; move it back so the order is known.
    Attempt.objects.filter(pk=made.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return made


def rows(page: str) -> list[str]:
    return re.findall(r'data-attempt="(\d+)"', page)


def test_a_learner_sees_their_attempts_in_every_lab_newest_first(client, owner, container_image):
    docker_lab, shell_lab = make_lab(container_image, "docker-one"), make_lab(container_image, "shell-two")
    old = attempt(owner, docker_lab, minutes_ago=30, passed=False, codes=("image_too_large", "build_too_slow"))
    final = attempt(owner, shell_lab, minutes_ago=10, step=False)
    broken = attempt(owner, docker_lab, minutes_ago=5, passed=None, status=Attempt.Status.ERROR)
    client.force_login(owner)
    response = client.get(URL)
    page = response.content.decode()
    assert response.status_code == 200
    assert rows(page) == [str(broken.pk), str(final.pk), str(old.pk)]
    verdicts = re.findall(r'data-verdict="([^"]+)"', page)
    assert verdicts == ["could not run", "passed", "not passed"]
    assert "Lab docker-one" in page and "Lab shell-two" in page
    assert "Final check" in page and "Step 1: Build it" in page
    assert '<code class="failure-code">image_too_large</code> <code class="failure-code">build_too_slow</code>' in page
    assert reverse("judge:attempt", args=[old.session_id, old.pk]) in page  # details on the session's page
    assert 'aria-current="page">My attempts</a>' in page  # the header's link, marked


def test_nobody_sees_anyone_elses_attempts_here(client, owner, other_learner, staff_user, container_image):
    lab = make_lab(container_image, "shared")
    mine = attempt(owner, lab, minutes_ago=3)
    theirs = attempt(other_learner, lab, minutes_ago=2, passed=False, codes=("secret_code",))
    staffs = attempt(staff_user, lab, minutes_ago=1)
    for user, expected in ((owner, mine), (other_learner, theirs), (staff_user, staffs)):
        client.force_login(user)
        page = client.get(URL).content.decode()
        assert rows(page) == [str(expected.pk)], user  # staff too: everyone else's are in the admin
        assert ("secret_code" in page) == (user == other_learner)
    # A page number cannot reach further either.
    client.force_login(owner)
    assert rows(client.get(URL + "?page=2").content.decode()) == [str(mine.pk)]


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_attempts_come_a_page_at_a_time(client, owner, container_image):
    lab = make_lab(container_image, "many")
    session = Session.objects.create(user=owner, lab=lab, state=State.STOPPED)
    made = [attempt(owner, lab, minutes_ago=minute, session=session) for minute in range(HISTORY_PAGE_SIZE + 3)]
    client.force_login(owner)
    first = client.get(URL).content.decode()
    assert rows(first) == [str(a.pk) for a in made[:HISTORY_PAGE_SIZE]]
    assert "Page 1 of 2" in first and 'href="?page=2"' in first
    second = client.get(URL + "?page=2").content.decode()
    assert rows(second) == [str(a.pk) for a in made[HISTORY_PAGE_SIZE:]]
    assert 'href="?page=1"' in second


def test_the_query_count_does_not_grow_with_the_attempts(client, owner, container_image):
    client.force_login(owner)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL).status_code == 200
        return len(captured)

    lab = make_lab(container_image, "first")
    attempt(owner, lab, minutes_ago=1)
    queries()  # the first request also loads what the site caches (its appearance)
    one = queries()
    for number in range(8):
        other = make_lab(container_image, f"lab-{number}")
        attempt(owner, other, minutes_ago=number + 2, step=number % 2 == 0, passed=False, codes=("x",))
    assert queries() == one
    # Neither the logs nor the notes are loaded for the list.
    with CaptureQueriesContext(connection) as captured:
        client.get(URL)
    listing = next(q["sql"] for q in captured.captured_queries if 'FROM "judge_attempt"' in q["sql"]
                   and "COUNT" not in q["sql"])
    assert '"judge_attempt"."log"' not in listing and '"judge_attempt"."result",' not in listing


def test_the_session_history_links_to_all_my_attempts(client, owner, container_image):
    lab = make_lab(container_image, "linked")
    made = attempt(owner, lab, minutes_ago=1)
    client.force_login(owner)
    page = client.get(reverse("judge:attempts", args=[made.session_id])).content.decode()
    assert f'href="{URL}"' in page and "All my attempts, in every lab" in page
