"""RQ entry points for the session lifecycle. Each takes a primary key and is idempotent."""

from __future__ import annotations


def provision_session(session_id: str) -> None:
    raise NotImplementedError


def teardown_session(session_id: str) -> None:
    raise NotImplementedError
