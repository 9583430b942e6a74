"""Every page Django serves carries the Content-Security-Policy, with a nonce of its own that only
the page's own script and style elements carry, and no inline code that the policy would block.

(How the pages behave in Chromium with the policy enforced is tests/e2e/test_content_security_policy.py.)
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib import admin
from django.http import HttpRequest
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone

from consoles.models import TerminalRecording
from judge.models import Attempt, HintRequest
from labsite.errors import server_error
from sessions_app.models import Session, State

pytestmark = pytest.mark.django_db

NONCE_SOURCE = re.compile(r"'nonce-([A-Za-z0-9+/=]+)'")


def _boom(request: HttpRequest) -> Any:
    raise RuntimeError("a bug in a view")


# This module is also a URLconf (below): the platform's URLs plus a view that fails.
urlpatterns = [path("boom/", _boom), path("", include("labsite.urls"))]
handler500 = server_error


def policy(response: Any) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.request['PATH_INFO']} has no Content-Security-Policy"
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def header_nonce(directives: dict[str, list[str]]) -> str | None:
    nonces = {match.group(1) for match in NONCE_SOURCE.finditer(" ".join(directives.get("script-src", [])))}
    assert len(nonces) <= 1
    return nonces.pop() if nonces else None


class InlineCode(HTMLParser):
    """What of a page the policy decides on: inline scripts and styles, style and on* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[tuple[str, dict[str, str | None]]] = []  # inline scripts and styles: the nonce decides
        self.attributes: list[str] = []  # style="…" and onclick="…": never allowed by a nonce

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "style" or (tag == "script" and not attributes.get("src")
                              and attributes.get("type") != "application/json"):  # data, never run
            self.inline.append((tag, attributes))
        for name, _value in attrs:
            if name == "style" or name.startswith("on"):
                self.attributes.append(f"<{tag} {name}=…>")


def inline_code(response: Any) -> InlineCode:
    parser = InlineCode()
    parser.feed(response.content.decode())
    return parser


def assert_strict_page(response: Any) -> str | None:
    """The page's policy is the strict one, and its inline scripts and styles carry its nonce."""
    directives = policy(response)
    nonce = header_nonce(directives)
    for directive in ("script-src", "style-src"):
        assert "'unsafe-inline'" not in directives[directive]
        assert "'unsafe-eval'" not in directives[directive]
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"]
    code = inline_code(response)
    assert code.attributes == [], f"{response.request['PATH_INFO']}: {code.attributes}"
    for tag, attributes in code.inline:
        assert attributes.get("nonce") == nonce, f"<{tag} {attributes}> lacks the page's nonce {nonce}"
    return nonce


@pytest.fixture
def running_session(owner: Any, lab: Any) -> Session:
    now = timezone.now()
    return Session.objects.create(user=owner, lab=lab, state=State.RUNNING, runner_name="fake", started_at=now,
                                  expires_at=now + timezone.timedelta(hours=1))


def learner_pages(lab: Any, session: Session) -> list[str]:
    return [
        reverse("labs:catalog"), reverse("labs:catalog") + "?q=hello", lab.get_absolute_url(),
        session.get_absolute_url(), reverse("sessions:list"), reverse("attempts:mine"),
        reverse("sessions:snapshots:list"), reverse("sessions:isos:list"),
        reverse("judge:attempts", args=[session.pk]),
    ]


def test_learner_pages_carry_the_strict_policy_with_their_own_nonce(owner_client, lab, running_session) -> None:
    for url in learner_pages(lab, running_session):
        response = owner_client.get(url)
        assert response.status_code == 200, url
        nonce = assert_strict_page(response)
        assert nonce, f"{url}: base.html's elements carry a nonce, so the header must name one"
        assert f'nonce="{nonce}"' in response.content.decode()


def test_account_pages_carry_the_strict_policy(owner_client) -> None:
    for name in ("account_email", "account_change_password", "socialaccount_connections"):
        response = owner_client.get(reverse(name))
        assert response.status_code == 200, name
        assert assert_strict_page(response)


def test_every_response_gets_a_fresh_nonce(owner_client, lab) -> None:
    nonces = {header_nonce(policy(owner_client.get(lab.get_absolute_url()))) for _ in range(5)}
    assert len(nonces) == 5 and None not in nonces


def test_sign_in_and_sign_up_pages_carry_the_policy(client) -> None:
    for url in (reverse("account_login"), reverse("account_signup")):
        response = client.get(url)
        assert response.status_code == 200
        assert assert_strict_page(response)


def test_error_pages_carry_the_policy(client, owner_client, settings) -> None:
    assert client.get("/no/such/page/").status_code == 404
    assert_strict_page(client.get("/no/such/page/"))
    settings.ROOT_URLCONF = __name__
    failing = Client(raise_request_exception=False)
    response = failing.get("/boom/")
    assert response.status_code == 500
    assert assert_strict_page(response), "the 500 page's <style> needs the nonce"


def test_only_the_session_page_allows_style_attributes_for_xterm(owner_client, lab, running_session) -> None:
    session_page = policy(owner_client.get(running_session.get_absolute_url()))
    assert session_page["style-src-attr"] == ["'unsafe-inline'"]
    assert "style-src-attr" not in policy(owner_client.get(lab.get_absolute_url()))


def test_consoles_may_connect_to_the_pages_own_websocket_origin(owner_client, running_session, settings) -> None:
    settings.ALLOWED_HOSTS = ["labs.example.org"]
    plain = policy(owner_client.get(running_session.get_absolute_url(), HTTP_HOST="labs.example.org"))
    assert plain["connect-src"] == ["'self'", "ws://labs.example.org"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    secure = policy(owner_client.get(running_session.get_absolute_url(), HTTP_HOST="labs.example.org",
                                     HTTP_X_FORWARDED_PROTO="https"))
    assert secure["connect-src"] == ["'self'", "wss://labs.example.org"]


def test_the_preview_host_may_be_framed_when_previews_have_one(owner_client, running_session, settings) -> None:
    assert policy(owner_client.get(running_session.get_absolute_url()))["frame-src"] == ["'self'"]
    settings.LAB_PREVIEW_HOST = "preview.labs.example.org"
    framed = policy(owner_client.get(running_session.get_absolute_url()))["frame-src"]
    assert framed == ["'self'", "preview.labs.example.org"]


def test_forms_may_go_only_to_the_platform_and_github(client) -> None:
    assert policy(client.get(reverse("account_login")))["form-action"] == ["'self'", "https://github.com"]


def test_admin_pages_carry_the_strict_policy(client, staff_user, owner, running_session) -> None:
    client.force_login(staff_user)
    recording = TerminalRecording.objects.create(session=running_session, terminal_name="1", width=80, height=24)
    attempt = Attempt.objects.create(user=owner, session=running_session, lab=running_session.lab, status="done",
                                     passed=False, result={"failures": [{"code": "x"}]}, log="built\n")
    hint = HintRequest.objects.create(user=owner, session=running_session, context={"step": 1}, answer="Try ls.")
    urls = [reverse("admin:index"), reverse("sessions:recording_replay", args=[recording.pk])]
    for model in admin.site._registry:
        if model._meta.app_label != "django_rq":  # its dashboard is django-rq's page (below)
            urls.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    urls += [reverse("admin:sessions_app_session_change", args=[running_session.pk]),
             reverse("admin:auth_user_change", args=[owner.pk]),
             reverse("admin:judge_attempt_change", args=[attempt.pk]),  # its result and log as <pre>
             reverse("admin:judge_hintrequest_change", args=[hint.pk])]
    for url in urls:
        response = client.get(url, follow=True)  # a singleton's changelist redirects to its change form
        assert response.status_code == 200, url
        assert_strict_page(response)


def test_django_rq_pages_keep_their_inline_code_without_a_nonce(client, staff_user) -> None:
    client.force_login(staff_user)
    for url in (reverse("django_rq:home"), reverse("admin:django_rq_home")):
        response = client.get(url)
        assert response.status_code == 200, url
        directives = policy(response)
        # Its own templates' inline scripts and styles: 'unsafe-inline', which any nonce would switch off.
        assert directives["script-src"] == ["'self'", "'unsafe-inline'"]
        assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
        assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]


def test_only_the_replay_page_may_compile_webassembly(client, staff_user, running_session) -> None:
    client.force_login(staff_user)
    recording = TerminalRecording.objects.create(session=running_session, terminal_name="1")
    replay = policy(client.get(reverse("sessions:recording_replay", args=[recording.pk])))
    assert "'wasm-unsafe-eval'" in replay["script-src"]  # asciinema-player's emulator is WebAssembly
    assert "'wasm-unsafe-eval'" not in policy(client.get(reverse("admin:index")))["script-src"]
