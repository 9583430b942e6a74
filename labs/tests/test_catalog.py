"""The catalog at /: search, filters, the HTMX results partial, and a constant query count."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import SiteAppearance
from labs.models import Image, Lab, Tag

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "catalog-results", "HTTP_HX_CURRENT_URL": "http://testserver/"}


def make_lab(image: Image, slug: str, tags: tuple[str, ...] = (), **fields: object) -> Lab:
    fields.setdefault("title", slug.replace("-", " ").title())
    fields.setdefault("published", True)
    lab = Lab.objects.create(slug=slug, image=image, **fields)
    for name in tags:
        lab.tags.add(Tag.objects.get_or_create(name=name)[0])
    return lab


@pytest.fixture
def catalog_labs(container_image: Image) -> dict[str, Lab]:
    return {
        "shell": make_lab(
            container_image, "shell-basics", ("linux", "bash"), title="Shell basics",
            summary="Move around the filesystem", difficulty="beginner", consoles=["terminal"],
        ),
        "docker": make_lab(
            container_image, "docker-networks", ("docker", "networking"), title="Container networks",
            summary="Bridge and overlay networks", difficulty="advanced", consoles=["terminal", "editor"],
        ),
        "desktop": make_lab(
            container_image, "gui-apps", ("linux",), title="Desktop apps",
            summary="A graphical desktop in the browser", difficulty="intermediate", consoles=["vnc"],
        ),
        "draft": make_lab(
            container_image, "secret-draft", ("linux",), title="Shell secrets draft",
            summary="Not ready", published=False,
        ),
    }


def titles(response) -> list[str]:  # type: ignore[no-untyped-def]
    """Titles of the cards on the page, in order (works for full pages and partials alike)."""
    return re.findall(r'class="card-link">([^<]+)</a>', response.content.decode())


def test_plain_request_renders_the_full_page(client, catalog_labs) -> None:
    response = client.get(reverse("labs:catalog"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html and 'id="catalog-results"' in html
    assert 'role="search"' in html and 'name="q"' in html and 'name="difficulty"' in html and 'name="tag"' in html
    assert 'hx-get="/"' in html and "hx-push-url" in html and "delay:" in html
    assert titles(response) == ["Container networks", "Desktop apps", "Shell basics"]
    assert "Shell secrets draft" not in html  # unpublished


def test_cards_show_summary_difficulty_tags_and_consoles(client, catalog_labs) -> None:
    html = client.get(reverse("labs:catalog")).content.decode()
    assert 'href="/labs/docker-networks/"' in html
    assert "Bridge and overlay networks" in html
    assert "Advanced" in html and "badge-advanced" in html
    assert "#networking" in html and 'href="/?tag=networking"' in html
    assert "console-editor" in html and "Desktop" in html


def test_htmx_request_returns_only_the_results_partial(client, catalog_labs) -> None:
    response = client.get(reverse("labs:catalog"), {"q": "shell"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "<form" not in html
    assert html.lstrip().startswith('<section id="catalog-results"')
    assert "Shell basics" in html and "Container networks" not in html
    assert 'hx-swap-oob="innerHTML:#sr-announcer"' in html  # result count for screen readers
    assert "HX-Request" in response["Vary"]


def test_htmx_history_restore_gets_the_full_page(client, catalog_labs) -> None:
    response = client.get(reverse("labs:catalog"), {"q": "shell"}, HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HTMX)
    html = response.content.decode()
    assert "<html" in html and "<form" in html


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("shell", ["Shell basics"]),  # title
        ("OVERLAY", ["Container networks"]),  # summary, any case
        ("networking", ["Container networks"]),  # tag
        ("linux", ["Desktop apps", "Shell basics"]),  # tag shared by two labs, each listed once
        ("linux graphical", ["Desktop apps"]),  # every word must match somewhere
        ("nothing-like-this", []),
        ("   ", ["Container networks", "Desktop apps", "Shell basics"]),
    ],
)
def test_search(client, catalog_labs, q, expected) -> None:
    assert titles(client.get(reverse("labs:catalog"), {"q": q})) == expected


def test_difficulty_filter(client, catalog_labs) -> None:
    assert titles(client.get(reverse("labs:catalog"), {"difficulty": "advanced"})) == ["Container networks"]
    # An unknown difficulty is ignored rather than emptying the page.
    assert len(titles(client.get(reverse("labs:catalog"), {"difficulty": "impossible"}))) == 3


def test_tag_filter(client, catalog_labs) -> None:
    response = client.get(reverse("labs:catalog"), {"tag": "linux"})
    assert titles(response) == ["Desktop apps", "Shell basics"]
    assert '<option value="linux" selected>' in response.content.decode()
    assert titles(client.get(reverse("labs:catalog"), {"tag": "unknown"})) == []


def test_filters_combine(client, catalog_labs) -> None:
    query = {"q": "desktop", "tag": "linux", "difficulty": "intermediate"}
    response = client.get(reverse("labs:catalog"), query, **HTMX)
    assert titles(response) == ["Desktop apps"]
    assert "Clear filters" in response.content.decode()


def test_tag_options_only_list_tags_of_published_labs(client, container_image) -> None:
    make_lab(container_image, "public", ("visible",))
    make_lab(container_image, "private", ("invisible",), published=False)
    html = client.get(reverse("labs:catalog")).content.decode()
    assert '<option value="visible"' in html
    assert "invisible" not in html


def test_empty_catalog(client, db) -> None:
    html = client.get(reverse("labs:catalog")).content.decode()
    assert "No labs have been published yet." in html


def test_no_match_offers_a_way_back(client, catalog_labs) -> None:
    html = client.get(reverse("labs:catalog"), {"q": "zzz"}, **HTMX).content.decode()
    assert "No labs match your search." in html and 'href="/"' in html


@pytest.mark.parametrize("htmx", [False, True])
def test_query_count_does_not_grow_with_the_number_of_labs(client, container_image, django_assert_num_queries, htmx):
    SiteAppearance.load()
    headers = HTMX if htmx else {}
    make_lab(container_image, "lab-0", ("t0", "shared"), consoles=["terminal"])
    with CaptureQueriesContext(connection) as one_lab:
        assert client.get(reverse("labs:catalog"), **headers).status_code == 200
    for i in range(1, 10):
        make_lab(container_image, f"lab-{i}", (f"t{i}", "shared"), consoles=["terminal"])
    with django_assert_num_queries(len(one_lab.captured_queries)):
        response = client.get(reverse("labs:catalog"), {"q": "lab"} if htmx else {}, **headers)
    assert len(titles(response)) == 10
