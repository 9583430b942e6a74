"""Lists cost the same number of queries however many rows they hold (no N+1)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from judge.models import Attempt
from labs.models import Lab, Tag
from sessions_app.models import Session, State


def queries(api, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert api.get(path).status_code == 200
    return len(captured)


def add_rows(lab, owner, n: int) -> None:
    tag, _ = Tag.objects.get_or_create(name="shell")
    for i in range(n):
        more = Lab.objects.create(slug=f"lab-{Lab.objects.count()}-{i}", title="More", image=lab.image,
                                  runner="fake", published=True)
        more.tags.add(tag)
        session = Session.objects.create(user=owner, lab=more, runner_name="fake", state=State.STOPPED)
        Attempt.objects.create(user=owner, session=session, lab=more, status=Attempt.Status.DONE, passed=True)


def test_lists_do_not_query_per_row(staff_api, owner, lab):
    add_rows(lab, owner, 2)
    paths = ["/labs", "/staff/sessions", "/staff/attempts"]
    few = [queries(staff_api, path) for path in paths]
    add_rows(lab, owner, 5)
    assert [queries(staff_api, path) for path in paths] == few
