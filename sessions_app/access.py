"""The one way views and consumers load a session: owner or staff, anyone else gets nothing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.http import Http404

from sessions_app.models import Session


def get_session_for_user(user: Any, pk: UUID | str) -> Session:
    """Return the session if `user` owns it or is staff; raise Http404 otherwise.

    A 404 (not a 403) so outsiders cannot probe which session ids exist.
    """
    try:
        return Session.objects.visible_to(user).select_related("lab", "lab__image", "user").get(pk=pk)
    except (Session.DoesNotExist, ValueError, ValidationError):
        raise Http404("No such session") from None


def get_learners_session(user: Any, pk: UUID | str) -> Session:
    """The session only if `user` is the learner it belongs to: staff may look at a session, but
    what only its learner does (checks, activity) stays theirs. Http404 otherwise."""
    session = get_session_for_user(user, pk)
    if not session.is_learner(user):
        raise Http404("No such session")
    return session
