from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from runners import get_runner
from runners.base import Runner
from sessions_app import live


class InvalidTransition(Exception):
    """A state change the session's state machine does not allow."""


class StaleTransition(InvalidTransition):
    """Another process changed the session's state first."""


class State(models.TextChoices):
    # In line for a slot on a runner with a capacity set (sessions_app/admission.py): no job queued yet.
    WAITING = "waiting", "In line"
    REQUESTED = "requested", "Queued"
    PROVISIONING = "provisioning", "Provisioning"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


# The only place transitions are defined; every state change goes through Session.transition().
TRANSITIONS: dict[str, frozenset[str]] = {
    # Admitted to a free slot (admission.admit), or left the line: no environment, so no teardown.
    State.WAITING: frozenset({State.REQUESTED, State.STOPPED}),
    State.REQUESTED: frozenset({State.PROVISIONING, State.STOPPING, State.FAILED}),
    State.PROVISIONING: frozenset({State.RUNNING, State.STOPPING, State.FAILED}),
    State.RUNNING: frozenset({State.STOPPING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.EXPIRED, State.FAILED}),
    State.STOPPED: frozenset(),
    State.FAILED: frozenset(),
    State.EXPIRED: frozenset(),
}
LIVE_STATES = (State.WAITING, State.REQUESTED, State.PROVISIONING, State.RUNNING, State.STOPPING)
ENDED_STATES = (State.STOPPED, State.FAILED, State.EXPIRED)
# The states that hold one of a runner's slots (RunnerCapacity): admitted and not yet ended.
SLOT_STATES = (State.REQUESTED, State.PROVISIONING, State.RUNNING, State.STOPPING)


class EndReason(models.TextChoices):
    NONE = "", "—"
    LEARNER = "learner", "Stopped by the learner"
    STAFF = "staff", "Stopped by staff"
    EXPIRED = "expired", "Time limit reached"
    IDLE = "idle", "Idle timeout"
    ERROR = "error", "Error"
    VANISHED = "vanished", "Environment disappeared"


class SessionQuerySet(models.QuerySet["Session"]):
    def live(self) -> SessionQuerySet:
        return self.filter(state__in=LIVE_STATES)

    def ended(self) -> SessionQuerySet:
        return self.filter(state__in=ENDED_STATES)

    def transition_all(self, from_state: str, to_state: str, **changes: Any) -> int:
        """Move every row of this queryset still in `from_state` to `to_state`; return how many moved.

        The bulk form of Session.transition(), checked against the same table.
        """
        if to_state not in TRANSITIONS[from_state]:
            raise InvalidTransition(f"{from_state} → {to_state} is not allowed")
        if to_state in ENDED_STATES:
            changes.setdefault("ended_at", timezone.now())
        return self.filter(state=from_state).update(state=to_state, **changes)

    def visible_to(self, user: Any) -> SessionQuerySet:
        """The sessions `user` may see: their own, or all for staff (sessions_app/access.py)."""
        if user is None or not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(user_id=user.pk)


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lab_sessions")
    lab = models.ForeignKey("labs.Lab", on_delete=models.PROTECT, related_name="sessions")
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED, db_index=True)
    runner_name = models.CharField(max_length=40, blank=True)
    runner_state = models.JSONField(default=dict, blank=True)
    endpoints = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # When the learner's own terminal first sent them output: request → first shell byte (metrics).
    first_output_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_active_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True, default="")
    error = models.TextField(blank=True)
    extensions_used = models.PositiveIntegerField(default=0)
    boot_snapshot = models.ForeignKey("vms.Snapshot", on_delete=models.SET_NULL, null=True, blank=True,
                                      related_name="booted_sessions")
    boot_iso = models.ForeignKey("labs.Image", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="booted_sessions", help_text="A learner ISO booted instead of the disk.")
    # Scripts waiting to run in the learner's first terminal (Killercoda's foreground scripts), in
    # order: [{"label": "Step 2", "script": "..."}]. Queued when a step starts, taken when terminal
    # "1" is attached (claim_foreground_scripts).
    foreground_queue = models.JSONField(default=list, blank=True)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "state"], name="session_user_state")]
        permissions = [("stop_all_sessions", "Can stop every session of a lab, of a runner or of the site at once")]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=[s.value for s in State]), name="session_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.lab.slug} for {self.user} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("sessions:detail", args=[self.pk])

    def runner(self) -> Runner:
        """The runner that holds (or will hold) this session's environment: the alias it was
        started on, else its lab's. RunnerError if that alias is not configured."""
        return get_runner(self.runner_name or self.lab.runner)

    def is_learner(self, user: Any) -> bool:
        """Whether `user` is the learner this session belongs to (staff looking at it are not)."""
        return user is not None and user.is_authenticated and self.user_id == user.pk

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def is_ended(self) -> bool:
        return self.state in ENDED_STATES

    def queue_foreground_script(self, label: str, script: str) -> None:
        """Add a script for the learner's first terminal (see foreground_queue)."""
        with transaction.atomic():
            locked = Session.objects.select_for_update().only("foreground_queue").get(pk=self.pk)
            Session.objects.filter(pk=self.pk).update(
                foreground_queue=[*locked.foreground_queue, {"label": label, "script": script}])

    def claim_foreground_scripts(self) -> list[dict[str, str]]:
        """Take every queued script for the first terminal (each is taken once, whoever asks first)."""
        with transaction.atomic():
            locked = Session.objects.select_for_update().only("foreground_queue").get(pk=self.pk)
            if not locked.foreground_queue:
                return []
            Session.objects.filter(pk=self.pk).update(foreground_queue=[])
            return list(locked.foreground_queue)

    def note_first_output(self, at: datetime) -> bool:
        """Record when the learner first saw their shell's output, once: a conditional UPDATE, so
        concurrent terminals (tabs, reconnects) cannot overwrite the first time. Returns whether
        this call set it."""
        updated = Session.objects.filter(pk=self.pk, first_output_at__isnull=True).update(first_output_at=at)
        if updated:
            self.first_output_at = at
        return bool(updated)

    def can_transition(self, new_state: str) -> bool:
        return new_state in TRANSITIONS[self.state]

    def transition(self, new_state: str, **changes: Any) -> None:
        """Move to `new_state` (saving `changes` with it) if the state machine allows it.

        The update is conditional on the state this object holds, so two workers cannot both
        make the same move: the loser gets StaleTransition and its object is refreshed.
        """
        if new_state not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"session {self.pk}: {self.state} → {new_state} is not allowed")
        if new_state in ENDED_STATES:
            changes.setdefault("ended_at", timezone.now())
        updated = Session.objects.filter(pk=self.pk, state=self.state).update(state=new_state, **changes)
        if updated != 1:
            self.refresh_from_db()
            raise StaleTransition(f"session {self.pk} is now {self.state}; cannot move to {new_state}")
        self.state = new_state
        for field, value in changes.items():
            setattr(self, field, value)
        live.publish_on_commit(self.pk)  # the session page hears it at once (sessions_app/streams.py)

    def log(self, message: str, level: str = "info") -> SessionEvent:
        event = SessionEvent.objects.create(session=self, message=message[:2000], level=level)
        live.publish_on_commit(self.pk)
        return event

    def seconds_left(self, now: datetime | None = None) -> int | None:
        if self.expires_at is None:
            return None
        now = now or timezone.now()
        return max(0, int((self.expires_at - now).total_seconds()))

    def idle_deadline(self) -> datetime | None:
        minutes = self.lab.idle_timeout_minutes
        if not minutes:
            return None
        return self.last_active_at + timedelta(minutes=minutes)

    @property
    def extensions_left(self) -> int:
        return max(0, self.lab.max_extensions - self.extensions_used)


class SessionEvent(models.Model):
    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    message = models.TextField()

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.created_at:%H:%M:%S} {self.message}"


class HousekeepingPass(models.Model):
    """One finished pass of the reaper or the reconciler, for /metrics (how long passes take, when
    the last one ran, what they found). Each pass writes its row and prunes rows older than
    KEEP_HOURS, so the table stays small whatever the loop's interval."""

    KEEP_HOURS = 24

    class Kind(models.TextChoices):
        REAP = "reap", "Reaper"
        RECONCILE = "reconcile", "Reconciler"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    started_at = models.DateTimeField()
    duration_seconds = models.FloatField()
    orphans_removed = models.PositiveIntegerField(default=0)
    sessions_handled = models.PositiveIntegerField(
        default=0, help_text="Sessions the pass stopped, failed, deleted or re-queued.")

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["kind", "started_at"], name="housekeeping_kind_started")]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["reap", "reconcile"]), name="housekeeping_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} at {self.started_at:%Y-%m-%d %H:%M:%S} ({self.duration_seconds:.2f} s)"

    @classmethod
    def record(cls, kind: str, started_at: datetime, duration_seconds: float, *, orphans_removed: int = 0,
               sessions_handled: int = 0) -> HousekeepingPass:
        """Write a finished pass and drop this kind's rows older than KEEP_HOURS (never the new one)."""
        row = cls.objects.create(kind=kind, started_at=started_at, duration_seconds=duration_seconds,
                                 orphans_removed=orphans_removed, sessions_handled=sessions_handled)
        cutoff = started_at - timedelta(hours=cls.KEEP_HOURS)
        cls.objects.filter(kind=kind, started_at__lt=cutoff).exclude(pk=row.pk).delete()
        return row


class RunnerCapacity(models.Model):
    """How many sessions one runner alias may hold at once, set by staff. No row: unlimited. Starts
    past it wait in line (State.WAITING) and are admitted in order as slots free (admission.py);
    the row is also the lock that serialises that count."""

    runner = models.CharField(max_length=40, unique=True, help_text="The runner alias (Session.runner_name).")
    max_sessions = models.PositiveIntegerField(
        help_text="Sessions requested, provisioning, running or stopping on this runner at once.")

    class Meta:
        verbose_name_plural = "runner capacities"
        ordering = ["runner"]

    def __str__(self) -> str:
        return f"{self.runner}: {self.max_sessions} at once"
