"""Share links for a session's web preview: list, create, revoke (owner and staff only); and the
preview's address on the platform's host when previews have a host of their own.

HTMX requests get the panel (templates/preview/_shares.html) back; plain form
posts redirect to the session page with a message, so everything works without JavaScript.
The workflows (validation, signing, logging) are in preview.actions and preview.access.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST, require_safe

from audit.records import client_address
from preview import access, actions, origin
from preview.models import PreviewShare
from sessions_app.access import get_session_for_user
from sessions_app.models import Session, State
from webserver.http import AuthenticatedHttpRequest, HtmxHttpRequest

PANEL_TEMPLATE = "preview/_shares.html"
PANEL_ANCHOR = "#preview-shares"
LISTED = 20  # the newest shares shown, live or not


@dataclass(frozen=True)
class ShareLink:
    share: PreviewShare
    url: str  # absolute, with the token; meaningful only while `active`
    active: bool

    @property
    def expires_at(self) -> datetime:
        return self.share.expires_at


class ShareForm(forms.Form):
    port = forms.TypedChoiceField(coerce=int)
    minutes = forms.IntegerField()

    def __init__(self, *args: Any, session: Session, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["port"] = forms.TypedChoiceField(
            coerce=int, choices=[(p, str(p)) for p in access.declared_ports(session)]
        )
        # The limit is a setting, read per request so tests and reconfiguration see it.
        self.fields["minutes"] = forms.IntegerField(min_value=1, max_value=actions.share_max_minutes())


def share_panel_context(request: HtmxHttpRequest, session: Session, *, new_share: PreviewShare | None = None,
                        error: str = "") -> dict[str, Any]:
    """The panel's context; the session page can call this too, so the panel renders without HTMX
    (and gets the preview iframe's sandbox with it)."""
    now = timezone.now()
    links = [
        ShareLink(
            share=share,
            url=origin.public_url(request, access.share_path(share)),
            active=share.revoked_at is None and share.expires_at > now,
        )
        for share in session.preview_shares.select_related("created_by")[:LISTED]
    ]
    max_minutes = actions.share_max_minutes()
    return {
        "session": session,
        "preview_frame_sandbox": origin.frame_sandbox(),
        "share_panel": {
            "links": links,
            "active_count": sum(link.active for link in links),
            "ports": access.declared_ports(session),
            "can_share": session.state == State.RUNNING,
            "default_minutes": min(actions.SHARE_DEFAULT_MINUTES, max_minutes),
            "max_minutes": max_minutes,
            "new_share_id": new_share.pk if new_share else None,
            "error": error,
        },
    }


def _panel(request: HtmxHttpRequest, session: Session, **kwargs: Any) -> HttpResponse:
    return render(request, PANEL_TEMPLATE, share_panel_context(request, session, **kwargs))


def _back_to_session(session: Session) -> HttpResponse:
    return redirect(session.get_absolute_url() + PANEL_ANCHOR)


@login_required
@require_GET
def share_list(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    if not request.htmx:
        return _back_to_session(session)
    return _panel(request, session)


@login_required
@require_POST
def create(request: AuthenticatedHttpRequest, pk: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    form = ShareForm(request.POST, session=session)
    share = None
    error = ""
    if not form.is_valid():
        error = " ".join(str(message) for errors in form.errors.values() for message in errors)
    else:
        try:
            share = actions.create_share(session, form.cleaned_data["port"], form.cleaned_data["minutes"],
                                         request.user, address=client_address(request))
        except actions.ShareError as exc:
            error = str(exc)
    if request.htmx:
        return _panel(request, session, new_share=share, error=error)
    if share is None:
        messages.error(request, f"No share link made: {error}")
    else:
        url = origin.public_url(request, access.share_path(share))
        messages.success(request, f"Share link for port {share.port}, valid until "
                                  f"{timezone.localtime(share.expires_at):%H:%M}: {url}")
    return _back_to_session(session)


@login_required
@require_POST
def revoke(request: AuthenticatedHttpRequest, pk: UUID, share_id: UUID) -> HttpResponse:
    session = get_session_for_user(request.user, pk)
    share = get_object_or_404(PreviewShare.objects.select_related("session"), pk=share_id, session=session)
    actions.revoke_share(share, request.user, address=client_address(request))
    if request.htmx:
        return _panel(request, session)
    messages.info(request, f"The share link for port {share.port} no longer works.")
    return _back_to_session(session)


@require_safe
def open_preview(request: HttpRequest, pk: str, port: str, path: str | None = None) -> HttpResponse:
    """Only with LAB_PREVIEW_HOST set (otherwise labsite/asgi.py hands these paths to the proxy):
    point the browser to the preview host (preview.origin.platform_redirect decides where, with
    which token)."""
    response = HttpResponseRedirect(origin.platform_redirect(request, pk, int(port)))
    response["Cache-Control"] = "no-store"  # the address carries a one-minute token
    response["Referrer-Policy"] = "no-referrer"
    return response
