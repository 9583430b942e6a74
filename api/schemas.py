"""What the API takes and answers, as pydantic models (ninja builds the OpenAPI schema from them).

Answers are made from model rows; the `resolve_*` methods say how a field comes from the row.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.urls import reverse
from ninja import Field, Schema

from judge.models import Attempt
from judge.pages import history_row
from judge.results import JudgeResult
from labs.models import Lab
from sessions_app.models import Session


class Error(Schema):
    detail: str = Field(description="What went wrong, in a sentence for a person.")


class QuotaError(Error):
    session: UUID | None = Field(None, description="The session that holds the quota, when there is one.")


# What an endpoint that changes something may answer besides its success (api/v1.py's handlers).
WRITE_ERRORS: dict[int, type[Error]] = {403: Error, 404: Error, 409: Error, 503: Error}


class StepOut(Schema):
    order: int = Field(description="The step's number: what `step` means when asking for a check.")
    title: str
    has_check: bool

    @staticmethod
    def resolve_has_check(step: object) -> bool:
        return bool(getattr(step, "verify", None))


class LabOut(Schema):
    slug: str
    title: str
    summary: str
    difficulty: str
    tags: list[str]
    ttl_minutes: int
    max_extensions: int
    extension_minutes: int
    consoles: list[str]
    has_final_check: bool
    url: str

    @staticmethod
    def resolve_tags(lab: Lab) -> list[str]:
        return [tag.name for tag in lab.tags.all()]  # prefetched by the endpoints

    @staticmethod
    def resolve_consoles(lab: Lab) -> list[str]:
        return [str(kind) for kind in lab.consoles or []]

    @staticmethod
    def resolve_has_final_check(lab: Lab) -> bool:
        return bool(lab.judge)

    @staticmethod
    def resolve_url(lab: Lab) -> str:
        return lab.get_absolute_url()


class LabDetailOut(LabOut):
    steps: list[StepOut]

    @staticmethod
    def resolve_steps(lab: Lab) -> list[object]:
        return list(lab.steps.all())


class StartIn(Schema):
    # A slug's characters only: anything else (a NUL byte, which PostgreSQL refuses) is a 422, not a 500.
    lab: str = Field(description="The lab's slug, as `GET /labs` lists it.", min_length=1, max_length=80,
                     pattern=r"^[-a-zA-Z0-9_]+$")


class SessionOut(Schema):
    id: UUID
    user: str
    lab: str
    lab_title: str
    state: str = Field(description="waiting (in line for a free slot), requested, provisioning, running, "
                                   "stopping, stopped, failed or expired.")
    created_at: datetime
    started_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    end_reason: str
    error: str
    seconds_left: int | None
    extensions_left: int
    url: str = Field(description="The session's page, where the learner works in it.")

    @staticmethod
    def resolve_user(session: Session) -> str:
        return session.user.get_username()

    @staticmethod
    def resolve_lab(session: Session) -> str:
        return session.lab.slug

    @staticmethod
    def resolve_lab_title(session: Session) -> str:
        return session.lab.title

    @staticmethod
    def resolve_seconds_left(session: Session) -> int | None:
        return session.seconds_left()

    @staticmethod
    def resolve_url(session: Session) -> str:
        return session.get_absolute_url()


class CheckIn(Schema):
    step: int | None = Field(None, ge=1, description="The step's number; leave it out (or null) for the lab's "
                                                     "final check.")


class FailureOut(Schema):
    code: str
    message: str
    hint: str
    detail: str


class AttemptOut(Schema):
    id: int
    user: str
    session: UUID | None
    lab: str
    step: int | None = Field(description="The step's number, null for the final check.")
    status: str = Field(description="queued, running, done or error.")
    verdict: str = Field(description="passed, not passed, could not run, queued or checking.")
    passed: bool | None
    error: str = Field(description="Why the check could not run (status error).")
    failures: list[FailureOut]
    created_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    url: str = Field(description="The attempt's page, with its log; empty once its session is deleted.")

    @staticmethod
    def resolve_user(attempt: Attempt) -> str:
        return attempt.user.get_username()

    @staticmethod
    def resolve_session(attempt: Attempt) -> UUID | None:
        return attempt.session_id  # type: ignore[return-value]

    @staticmethod
    def resolve_lab(attempt: Attempt) -> str:
        return attempt.lab.slug

    @staticmethod
    def resolve_step(attempt: Attempt) -> int | None:
        return attempt.step.order if attempt.step_id and attempt.step else None

    @staticmethod
    def resolve_verdict(attempt: Attempt) -> str:
        return str(history_row(attempt)["verdict"])

    @staticmethod
    def resolve_error(attempt: Attempt) -> str:
        if attempt.status != Attempt.Status.ERROR:
            return ""
        return str((attempt.result or {}).get("error") or "The check could not run.")

    @staticmethod
    def resolve_failures(attempt: Attempt) -> list[dict[str, str]]:
        if attempt.status != Attempt.Status.DONE:
            return []
        return [{"code": f.code, "message": f.message, "hint": f.hint, "detail": f.detail}
                for f in JudgeResult.from_dict(attempt.result or {}).failures]

    @staticmethod
    def resolve_url(attempt: Attempt) -> str:
        if not attempt.session_id:
            return ""
        return reverse("judge:attempt", args=[attempt.session_id, attempt.pk])
