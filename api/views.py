"""The API tokens page: a user's own tokens, made (shown once) and revoked here."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from api.forms import TokenForm
from api.models import MAX_TOKENS_PER_USER, ApiToken
from webserver.http import AuthenticatedHttpRequest


def _page(request: AuthenticatedHttpRequest, form: TokenForm, new_token: str = "", status: int = 200) -> HttpResponse:
    tokens = list(ApiToken.objects.filter(user=request.user))
    return render(request, "api/tokens.html", {
        "form": form, "tokens": tokens, "new_token": new_token,
        "can_create": len(tokens) < MAX_TOKENS_PER_USER, "max_tokens": MAX_TOKENS_PER_USER,
    }, status=status)


@login_required
@require_GET
def token_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _page(request, TokenForm())


@never_cache  # the answer carries the token itself: no cache may keep it
@login_required
@require_POST
def token_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    if ApiToken.objects.filter(user=request.user).count() >= MAX_TOKENS_PER_USER:
        messages.error(request, f"You have {MAX_TOKENS_PER_USER} tokens already: revoke one to make another.")
        return redirect("api_tokens:list")
    _, token = ApiToken.issue(request.user, form.cleaned_data["name"], form.cleaned_data["scope"],
                              expires_in_days=form.expires_in_days())
    # Rendered, not redirected: the token must never pass through the messages' storage.
    return _page(request, TokenForm(), new_token=token, status=201)


@login_required
@require_POST
def token_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token.delete()
    messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
    return redirect("api_tokens:list")
