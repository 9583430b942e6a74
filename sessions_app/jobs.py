"""RQ entry points for the session lifecycle. Each takes a primary key and is idempotent."""

from __future__ import annotations

from sessions_app import provisioning


def provision_session(session_id: str) -> None:
    provisioning.provision(session_id)


def teardown_session(session_id: str) -> None:
    provisioning.teardown(session_id)
