from __future__ import annotations

from django.conf import settings
from django.db import models


class Attempt(models.Model):
    """One run of the judge: a step's verify checks, or the lab's final checks (step is null)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Checking"
        DONE = "done", "Done"
        ERROR = "error", "Error"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attempts")
    session = models.ForeignKey("sessions_app.Session", on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="attempts")
    lab = models.ForeignKey("labs.Lab", on_delete=models.CASCADE, related_name="attempts")
    step = models.ForeignKey("labs.LabStep", on_delete=models.CASCADE, null=True, blank=True,
                             related_name="attempts")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    passed = models.BooleanField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True, help_text="Build and check output, streamed while it runs.")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["session", "step"], name="attempt_session_step")]

    def __str__(self) -> str:
        target = f"step {self.step.order}" if self.step_id and self.step else "final"
        return f"{self.lab.slug} {target} by {self.user} ({self.status})"


class HintRequest(models.Model):
    """A learner's request for a hint and the answer given (from Gemini or the lab's fallback)."""

    class Source(models.TextChoices):
        PENDING = "", "Pending"
        GEMINI = "gemini", "Gemini"
        FALLBACK = "fallback", "Lab hint (fallback)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="hint_requests")
    session = models.ForeignKey("sessions_app.Session", on_delete=models.CASCADE, related_name="hint_requests")
    step = models.ForeignKey("labs.LabStep", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    context = models.JSONField(default=dict, blank=True, help_text="What was sent to the model.")
    answer = models.TextField(blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, blank=True, default="")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"hint for {self.user} at {self.created_at:%Y-%m-%d %H:%M}"


class StepRun(models.Model):
    """A step's background script, run in a session when the step starts (once per session and step);
    with no step, the lab's intro script, run when the session starts.

    The unique pair (session, step) is what makes "once" hold when two workers see the same
    step open at the same time: only the one that creates the row queues the script.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        NONE = "none", "No background script"  # the step has only a foreground script

    session = models.ForeignKey("sessions_app.Session", on_delete=models.CASCADE, related_name="step_runs")
    step = models.ForeignKey("labs.LabStep", on_delete=models.CASCADE, related_name="runs", null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    exit_code = models.IntegerField(null=True, blank=True)
    output = models.TextField(blank=True, help_text="The end of the script's output.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["session", "step"], name="step_run_once_per_session"),
            models.UniqueConstraint(fields=["session"], condition=models.Q(step__isnull=True),
                                    name="intro_run_once_per_session"),
        ]

    def __str__(self) -> str:
        return f"{self.label.lower()} script in {self.session_id} ({self.status})"

    @property
    def label(self) -> str:
        return f"Step {self.step.order}" if self.step is not None else "Intro"
