"""The preview's parts of the session page, so the session page needs no import of this app."""

from __future__ import annotations

from typing import Any

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from preview import origin
from preview.views import share_panel_context

register = template.Library()


@register.simple_tag
def preview_frame_sandbox() -> str:
    """The sandbox attribute for the preview iframe (empty when previews have a host of their own)."""
    return origin.frame_sandbox()


@register.simple_tag(takes_context=True)
def share_panel(context: template.Context, session: Any) -> SafeString:
    """The share-links panel, listed at once so it renders without JavaScript too."""
    request = context["request"]
    return render_to_string("preview/_shares.html", share_panel_context(request, session), request=request)
