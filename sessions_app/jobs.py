"""RQ entry points for the session lifecycle. Each takes a primary key and is idempotent."""

from __future__ import annotations

from sessions_app import provisioning, reaping


def provision_session(session_id: str) -> None:
    provisioning.provision(session_id)


def teardown_session(session_id: str) -> None:
    provisioning.teardown(session_id)


def remove_environment(session_id: str) -> None:
    """Remove what an abandoned start left behind once the reaper has failed the session."""
    reaping.remove_environment(session_id)
