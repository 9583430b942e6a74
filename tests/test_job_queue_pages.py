"""django-rq's staff pages without Redis: hidden from the admin and explained, never a 500.

Real pages through the test client. Without REDIS_URL (the embedded install) the settings point
the queues at "redis://embedded/0", a Redis that does not exist; with REDIS_URL set but the
server killed (a real redis-server, tests/redis_server.py), the pages say it does not answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

DASHBOARD_LINK = 'href="/admin/django_rq/dashboard/"'
QUEUE_PAGES = ["/rq/", "/rq/queues/0/", "/rq/queues/0/failed/", "/rq/workers/0/", "/admin/django_rq/dashboard/"]


@pytest.fixture
def embedded(settings: Any) -> None:
    """As labsite/settings.py has it without REDIS_URL."""
    settings.REDIS_URL = ""
    settings.LAB_EMBEDDED_JOBS = "thread"
    settings.RQ_QUEUES = {name: {**config, "URL": "redis://embedded/0", "ASYNC": False}
                          for name, config in settings.RQ_QUEUES.items()}


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_without_redis_the_admin_shows_no_job_queue_link_and_says_why(staff_client, embedded):
    response = staff_client.get(reverse("admin:index"))

    assert response.status_code == 200
    page = response.content.decode()
    assert DASHBOARD_LINK not in page
    assert "Jobs run in the web process, not in RQ workers (REDIS_URL is not set)" in page


@pytest.mark.parametrize("path", QUEUE_PAGES)
@pytest.mark.parametrize(("setup", "status", "says"), [
    ("embedded", 200, "in background threads of the web process"),
    ("queue_down", 503, "Redis does not answer"),
], ids=["without-redis", "with-redis-down"])
def test_the_job_queue_pages_say_why_there_is_no_queue_to_show(staff_client, request, setup, status, says, path):
    request.getfixturevalue(setup)

    response = staff_client.get(path)

    assert response.status_code == status
    page = response.content.decode()
    assert f'data-job-queue="{"embedded" if setup == "embedded" else "unreachable"}"' in page
    assert says in page


def test_without_redis_a_learner_is_still_sent_to_the_admin_login(owner_client, embedded):
    response = owner_client.get("/rq/")

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_with_redis_the_admin_links_to_the_job_queue_dashboard(staff_client, queues_on_own_redis):
    index = staff_client.get(reverse("admin:index")).content.decode()
    dashboard = staff_client.get("/admin/django_rq/dashboard/")

    assert DASHBOARD_LINK in index
    assert "REDIS_URL is not set" not in index
    assert dashboard.status_code == 200
    assert "data-job-queue" not in dashboard.content.decode()
    assert staff_client.get("/rq/").status_code == 200


@pytest.mark.parametrize("path", ["/rq/queues/99/", "/rq/workers/99/", "/rq/queues/99/failed/", "/rq/schedulers/0/",
                                  "/admin/django_rq/dashboard/queues/99/"])
def test_a_queue_or_scheduler_that_is_not_there_is_a_404(staff_client, owner, path):
    learner = Client()
    learner.force_login(owner)

    assert staff_client.get(path).status_code == 404
    assert learner.get(path).status_code == 302  # learners learn nothing, as on every dashboard page
