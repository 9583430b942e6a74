"""Lab detail page, error pages, the allauth pages in the site layout, and the vendored assets.

This module doubles as a URLconf (see `urlpatterns` below) so the error handlers can be
exercised through the client with views that raise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, reverse

from labs.models import Lab, LabStep
from sessions_app.models import Session, State

ROOT = Path(settings.BASE_DIR)
VENDORED = {
    "htmx.org": ["htmx/htmx.min.js"],
    "@xterm/xterm": ["xterm/xterm.js", "xterm/xterm.css"],
    "@xterm/addon-fit": ["xterm-addon-fit/addon-fit.js"],
    "@novnc/novnc": ["novnc/rfb.bundle.js", "novnc/LICENSE.txt"],
    "asciinema-player": ["asciinema-player/asciinema-player.min.js", "asciinema-player/asciinema-player.css"],
    # CodeMirror 6 is ES modules, bundled into one file by deploy/scripts/vendor-assets.sh.
    **{
        name: ["codemirror/codemirror.bundle.js"]
        for name in (
            "codemirror", "@codemirror/commands", "@codemirror/lang-python", "@codemirror/lang-yaml",
            "@codemirror/language", "@codemirror/legacy-modes", "@codemirror/state", "@codemirror/view",
        )
    },
}


def _forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def _broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


urlpatterns = [
    path("test-403/", _forbidden),
    path("test-500/", _broken),
    path("", include("labsite.urls")),
]
handler403 = "labsite.errors.permission_denied"
handler404 = "labsite.errors.page_not_found"
handler500 = "labsite.errors.server_error"




@pytest.fixture
def draft_lab(container_image) -> Lab:  # type: ignore[no-untyped-def]
    return Lab.objects.create(slug="draft", title="Draft lab", image=container_image, published=False)


# ---- lab detail ------------------------------------------------------------------------


def test_lab_detail_shows_description_steps_and_resources(owner_client, lab) -> None:
    LabStep.objects.create(lab=lab, order=2, title="Look around", body="Run `ls`.")
    lab.memory_mb, lab.cpu, lab.network_mode = 1024, "0.50", Lab.NetworkMode.ISOLATED
    lab.description = "# Hello\n\nRun `echo hi`.\n\n<script>alert(1)</script>[x](javascript:alert(2))"
    lab.save()
    response = owner_client.get(lab.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Hello shell</h1>" in html
    assert "<h2>Hello</h2>" in html and "<code>echo hi</code>" in html
    assert "alert" not in html and "javascript:" not in html
    assert "<li>Greet</li>" in html and "<li>Look around</li>" in html
    assert "0.5 cores" in html and "1 GB" in html and "30 min" in html
    assert "Isolated (no egress" in html
    assert f'action="{reverse("labs:start", args=[lab.slug])}"' in html and "Start lab" in html


def test_anonymous_visitors_get_a_sign_in_link_back_to_the_lab(client, lab) -> None:
    html = client.get(lab.get_absolute_url()).content.decode()
    assert f'href="{reverse("account_login")}?next=/labs/hello-shell/"' in html
    assert reverse("labs:start", args=[lab.slug]) not in html


def test_a_live_session_is_offered_instead_of_a_new_one(owner_client, owner, lab) -> None:
    session = Session.objects.create(user=owner, lab=lab, state=State.RUNNING)
    html = owner_client.get(lab.get_absolute_url()).content.decode()
    assert "Resume session" in html and session.get_absolute_url() in html
    assert reverse("labs:start", args=[lab.slug]) not in html


def test_start_redirects_to_the_new_session(owner_client, owner, lab) -> None:
    response = owner_client.post(reverse("labs:start", args=[lab.slug]))
    session = Session.objects.get(user=owner)
    assert response.status_code == 302 and response["Location"] == session.get_absolute_url()


def test_unpublished_lab_is_404_for_learners_and_visitors(client, owner_client, draft_lab) -> None:
    for c in (client, owner_client):
        response = c.get(draft_lab.get_absolute_url())
        assert response.status_code == 404
        assert "Page not found" in response.content.decode()


def test_unpublished_lab_is_visible_to_staff(client, staff_user, draft_lab) -> None:
    client.force_login(staff_user)
    response = client.get(draft_lab.get_absolute_url())
    assert response.status_code == 200
    assert "Unpublished" in response.content.decode()


def test_unknown_lab_is_404(client, db) -> None:
    assert client.get("/labs/no-such-lab/").status_code == 404


# ---- error pages (DEBUG is False under pytest-django) -----------------------------------


def test_404_page(client, db) -> None:
    assert settings.DEBUG is False
    response = client.get("/definitely/not/a/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html and 'class="site-header"' in html and 'href="/"' in html


@pytest.mark.urls(__name__)
def test_403_page(owner_client) -> None:
    response = owner_client.get("/test-403/")
    assert response.status_code == 403
    assert "You can\u2019t open this page" in response.content.decode()


@pytest.mark.urls(__name__)
def test_500_page_renders_without_the_database(client, db, monkeypatch) -> None:
    def no_database(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is down")

    # The context processors of base.html would hit the database; the 500 page must not need them.
    monkeypatch.setattr("accounts.models.SiteAppearance.load", no_database)
    client.raise_request_exception = False
    response = client.get("/test-500/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong" in html and "<html" in html
    assert "{%" not in html and "{{" not in html


# ---- allauth pages in the site layout --------------------------------------------------


@pytest.mark.parametrize("name", ["account_login", "account_signup"])
def test_sign_in_and_sign_up_use_the_site_layout(client, db, name) -> None:
    response = client.get(reverse(name))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="site-header"' in html and 'class="skip-link"' in html
    assert 'class="auth-card"' in html and 'class="stack-form"' in html
    assert '<label for="id_password' in html  # every field has a visible label
    assert 'class="button' in html


def test_sign_out_page_uses_the_site_layout(owner_client) -> None:
    response = owner_client.get(reverse("account_logout"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="auth-card"' in html and "Sign Out" in html and 'class="auth-nav"' in html


# ---- vendored front-end assets ---------------------------------------------------------


def _vendored_versions() -> dict[str, str]:
    lines = (ROOT / "static" / "vendor" / "VERSIONS.txt").read_text().splitlines()
    pairs = [line.split() for line in lines if line.strip() and not line.startswith("#")]
    return {name: version for name, version in pairs}


def test_vendored_versions_match_the_lock_file() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    manifest = json.loads((ROOT / "package.json").read_text())
    vendored = _vendored_versions()
    assert set(vendored) == set(VENDORED) == set(manifest["dependencies"])
    for name, version in vendored.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
        assert manifest["dependencies"][name] == version, f"{name} must be pinned exactly in package.json"
    assert vendored["htmx.org"].startswith("2.")
    assert vendored["@xterm/xterm"].startswith("6.0.")
    assert vendored["@xterm/addon-fit"].startswith("0.11.")
    assert vendored["@novnc/novnc"].startswith("1.7.")


def test_vendored_files_are_present_and_offline() -> None:
    vendor = ROOT / "static" / "vendor"
    for files in VENDORED.values():
        for name in files:
            assert (vendor / name).is_file(), name
    # Minified files ship without sourceMappingURL comments (the maps are not vendored).
    for name in ("xterm/xterm.js", "xterm-addon-fit/addon-fit.js", "htmx/htmx.min.js"):
        assert "sourceMappingURL" not in (vendor / name).read_text(), name


def test_pages_load_no_third_party_assets(client, lab) -> None:
    html = client.get(reverse("labs:catalog")).content.decode()
    assert "/static/vendor/htmx/htmx.min.js" in html
    assert "cdn" not in html.lower() and "unpkg" not in html
