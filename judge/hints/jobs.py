"""RQ entry point for hints: answer one pending HintRequest (judge/hints/answers.py does the work)."""

from __future__ import annotations

from judge.hints import answers as hints


def answer_hint_job(hint_id: int) -> None:
    """Queued by hints.request_hint after the request is committed; safe to run twice."""
    hints.answer_hint(hint_id)
