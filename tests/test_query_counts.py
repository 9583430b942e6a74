"""No N+1 queries on the busy pages: the query count of a page with one row is the count with many.

Each test renders the page once with a single row, then again with many rows that each point at
a different lab, user or tag, so any per-row lookup of a related object would add queries.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import SiteAppearance
from labs.models import Image, Lab, LabStep, Tag
from sessions_app.models import EndReason, Session, State

pytestmark = pytest.mark.django_db

MANY = 25
HTMX: dict[str, Any] = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "catalog-results", "HTTP_HX_CURRENT_URL": "http://testserver/"}


def make_lab(image: Image, n: int) -> Lab:
    """A published lab with its own tag, a shared tag and a step."""
    lab = Lab.objects.create(slug=f"lab-{n}", title=f"Lab {n}", summary="counting", image=image, runner="fake",
                             consoles=["terminal", "editor"], published=True)
    lab.tags.add(Tag.objects.get_or_create(name=f"t{n}")[0], Tag.objects.get_or_create(name="shared")[0])
    LabStep.objects.create(lab=lab, order=1, title="Only step", body="Do it.")
    return lab


def make_session(user: Any, lab: Lab, n: int) -> Session:
    """Alternately running and ended, so both branches of the list templates render."""
    now = timezone.now()
    if n % 2:
        return Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name="fake",
                                      started_at=now, expires_at=now + timedelta(minutes=30))
    return Session.objects.create(user=user, lab=lab, state=State.STOPPED, runner_name="fake", started_at=now,
                                  expires_at=now, ended_at=now, end_reason=EndReason.LEARNER)


def queries_for(get: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = get()
    assert response.status_code == 200
    return len(captured.captured_queries)


def assert_constant(get: Callable[[], Any], add_rows: Callable[[], None], django_assert_num_queries: Any,
                    expected_rows: Callable[[Any], int]) -> None:
    get()  # warm up: the site appearance row, the session's first touch and other one-off writes
    one = queries_for(get)
    add_rows()
    with django_assert_num_queries(one):
        response = get()
    assert expected_rows(response) > MANY  # the many rows really were on the page


@pytest.fixture(autouse=True)
def appearance(db: None) -> None:
    SiteAppearance.load()


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx-results"])
def test_the_catalog_for_a_signed_in_learner(owner_client: Client, container_image: Image,
                                             django_assert_num_queries: Any, htmx: bool) -> None:
    make_lab(container_image, 0)
    headers: dict[str, Any] = HTMX if htmx else {}

    def add_rows() -> None:
        for n in range(1, MANY + 1):
            make_lab(container_image, n)

    assert_constant(
        lambda: owner_client.get(reverse("labs:catalog"), {"q": "lab"}, **headers),
        add_rows,
        django_assert_num_queries,
        lambda response: response.content.decode().count("data-lab-card"),
    )


def test_my_sessions(owner_client: Client, owner: Any, container_image: Image, django_assert_num_queries: Any) -> None:
    make_session(owner, make_lab(container_image, 0), 0)

    def add_rows() -> None:
        for n in range(1, MANY + 1):
            make_session(owner, make_lab(container_image, n), n)

    assert_constant(
        lambda: owner_client.get(reverse("sessions:list")),
        add_rows,
        django_assert_num_queries,
        lambda response: len(response.context["sessions"]),
    )


def changelist_rows(response: Any) -> int:
    return len(response.context["cl"].result_list)


@pytest.mark.parametrize("model", [Session, Lab, LabStep], ids=lambda m: m.__name__)
def test_admin_changelists(admin_client: Client, django_user_model: Any, container_image: Image,
                           django_assert_num_queries: Any, model: type[Model]) -> None:
    learner = django_user_model.objects.create_user("learner-0")
    make_session(learner, make_lab(container_image, 0), 0)

    def add_rows() -> None:
        for n in range(1, MANY + 1):
            user = django_user_model.objects.create_user(f"learner-{n}")
            make_session(user, make_lab(container_image, n), n)

    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    assert_constant(lambda: admin_client.get(url), add_rows, django_assert_num_queries, changelist_rows)
