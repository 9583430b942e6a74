"""RQ entry points of the judge. Each takes a primary key and is idempotent."""

from __future__ import annotations

from judge import engine


def run_attempt(attempt_id: int) -> None:
    engine.execute_attempt(attempt_id)
