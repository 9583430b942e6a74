"""The one way views and consumers load a session: owner or staff, anyone else gets nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.http import Http404

from sessions_app.models import Session


def _get_session_for_user(user: Any, pk: UUID | str) -> Session:
    """Return the session if `user` owns it or is staff; raise Http404 otherwise.

    A 404 (not a 403) so outsiders cannot probe which session ids exist.
    """
    if user is None or not user.is_authenticated:
        raise Http404("No such session")
    try:
        session = Session.objects.select_related("lab", "lab__image", "user").get(pk=pk)
    except (Session.DoesNotExist, ValueError, ValidationError):
        raise Http404("No such session") from None
    if session.user_id != user.pk and not user.is_staff:
        raise Http404("No such session")
    return session
