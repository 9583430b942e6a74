"""What the judge reports: pass or fail, every failure with a stable code, metrics and notes.

A JudgeResult is stored as JSON in Attempt.result (``to_dict``) and read back for the pages
(``from_dict``). Failure codes are part of the lab format: lab authors map them (``codes:``)
and tests assert on them, so a code never changes meaning once published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Notes are for people reading a result, not archives: the end of a long log is what matters.
NOTE_LIMIT = 16_000


def truncate_note(text: str, limit: int = NOTE_LIMIT) -> str:
    """Keep the end of a long text (where builds and programs say what went wrong)."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"[… {dropped} earlier characters not shown …]\n" + text[-limit:]


# What a failing check script printed, shown with its failure (the end, where errors are).
DETAIL_LIMIT = 2000


@dataclass
class Failure:
    code: str
    message: str
    hint: str = ""
    detail: str = ""  # program output the learner needs to see to fix it (a verify script's)

    def to_dict(self) -> dict[str, str]:
        found = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.detail:
            found["detail"] = self.detail
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(code=str(data.get("code", "")), message=str(data.get("message", "")),
                   hint=str(data.get("hint", "")), detail=str(data.get("detail", "")))


@dataclass
class CheckReport:
    """One check's part of a result, so the page can list what was checked."""

    kind: str
    title: str
    passed: bool
    skipped: bool = False
    duration_ms: int = 0
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "passed": self.passed, "skipped": self.skipped,
                "duration_ms": self.duration_ms, "failures": [f.to_dict() for f in self.failures]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckReport:
        return cls(kind=str(data.get("kind", "")), title=str(data.get("title", "")),
                   passed=bool(data.get("passed")), skipped=bool(data.get("skipped")),
                   duration_ms=int(data.get("duration_ms") or 0),
                   failures=[Failure.from_dict(f) for f in data.get("failures") or []])


@dataclass
class JudgeResult:
    passed: bool
    failures: list[Failure] = field(default_factory=list)
    metrics: dict[str, float | int | str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    checks: list[CheckReport] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        return [failure.code for failure in self.failures]

    def add_note(self, title: str, text: str) -> None:
        text = text.strip("\n")
        if text:
            self.notes[title] = truncate_note(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": [f.to_dict() for f in self.failures],
            "metrics": dict(self.metrics),
            "notes": dict(self.notes),
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeResult:
        return cls(
            passed=bool(data.get("passed")),
            failures=[Failure.from_dict(f) for f in data.get("failures") or []],
            metrics=dict(data.get("metrics") or {}),
            notes={str(k): str(v) for k, v in (data.get("notes") or {}).items()},
            checks=[CheckReport.from_dict(c) for c in data.get("checks") or []],
        )
