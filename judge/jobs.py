"""RQ entry points of the judge. Each takes a primary key and is idempotent."""

from __future__ import annotations

from judge import engine, steps


def run_attempt(attempt_id: int) -> None:
    engine.execute_attempt(attempt_id)


def run_step_scripts(run_ids: list[int]) -> None:
    steps.run_step_scripts(run_ids)
