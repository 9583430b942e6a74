"""RQ entry points for the session lifecycle. Each takes a primary key and is idempotent.
Queued by name (sessions_app.actions), so the verbs need not import what the jobs run."""

from __future__ import annotations

from sessions_app import provisioning


def provision_session(session_id: str) -> None:
    provisioning.provision(session_id)


def teardown_session(session_id: str) -> None:
    provisioning.teardown(session_id)


def remove_environment(session_id: str) -> None:
    """Remove what an abandoned start left behind once the reaper has failed the session."""
    provisioning.remove_environment(session_id)
