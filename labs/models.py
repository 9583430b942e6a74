from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse


class Image(models.Model):
    """What a session boots from: a container image reference or a VM disk/ISO file."""

    class Kind(models.TextChoices):
        CONTAINER = "container", "Container image"
        VM = "vm", "Virtual machine disk or ISO"

    class DiskFormat(models.TextChoices):
        NONE = "", "Not a disk"
        QCOW2 = "qcow2", "qcow2"
        RAW = "raw", "raw"
        ISO = "iso", "ISO"

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CONTAINER)
    reference = models.CharField(
        max_length=255, blank=True, help_text="Container image reference, e.g. labs/python:1"
    )
    file = models.FileField(upload_to="images/", blank=True, max_length=500)
    disk_format = models.CharField(max_length=8, choices=DiskFormat.choices, blank=True, default="")
    sha256 = models.CharField(max_length=64, blank=True, editable=False)
    size_bytes = models.BigIntegerField(default=0, editable=False)
    virtual_size_bytes = models.BigIntegerField(default=0, editable=False)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="uploaded_images",
        help_text="Set for a learner's own ISO; staff images have no owner.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["container", "vm"]), name="image_kind_valid"
            ),
            models.CheckConstraint(
                condition=~Q(kind="container") | ~Q(reference=""),
                name="container_image_has_reference",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == self.Kind.CONTAINER and not self.reference:
            raise ValidationError({"reference": "A container image needs an image reference."})
        if self.kind == self.Kind.VM and not (self.file or self.reference):
            raise ValidationError({"file": "A VM image needs a disk or ISO file."})


# A user name as useradd takes it (the learner's shell runs as this user, resolved in the image).
SHELL_USER_VALIDATOR = RegexValidator(r"^[a-z_][a-z0-9_-]{0,31}$", "Give a user name such as root or learner.")
HOST_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")
MAX_HOSTS = 4


class Tag(models.Model):
    name = models.SlugField(max_length=40, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class LabQuerySet(models.QuerySet["Lab"]):
    MAX_SEARCH_TERMS = 8

    def published(self) -> LabQuerySet:
        return self.filter(published=True)

    def search(self, q: str = "", difficulty: str = "", tag: str = "") -> LabQuerySet:
        """Every word of `q` must match the title, summary or a tag; the filters narrow further."""
        labs = self
        for term in q.split()[: self.MAX_SEARCH_TERMS]:
            labs = labs.filter(
                Q(title__icontains=term)
                | Q(summary__icontains=term)
                | Q(pk__in=Lab.tags.through.objects.filter(tag__name__icontains=term).values("lab_id"))
            )
        if difficulty:
            labs = labs.filter(difficulty=difficulty)
        if tag:
            labs = labs.filter(tags__name=tag)
        return labs


class IdleSignal(models.TextChoices):
    """What counts as activity for a lab's idle timeout (Lab.idle_signals); each marks the session
    active through sessions_app.actions.mark_active."""

    TERMINAL = "terminal", "Terminal or VNC input"
    EDITOR = "editor", "Saving in the editor"
    PREVIEW = "preview", "Web preview traffic"
    CPU = "cpu", "Work running in the session (CPU use above the threshold)"
    PAGE = "page", "Session page in use (its heartbeat)"


# Not the page's heartbeat: a tab left open with nothing running does not keep a session.
DEFAULT_IDLE_SIGNALS = ("terminal", "editor", "preview", "cpu")


def default_idle_signals() -> list[str]:
    return list(DEFAULT_IDLE_SIGNALS)


class Lab(models.Model):
    class Difficulty(models.TextChoices):
        BEGINNER = "beginner", "Beginner"
        INTERMEDIATE = "intermediate", "Intermediate"
        ADVANCED = "advanced", "Advanced"

    class NetworkMode(models.TextChoices):
        BRIDGE = "bridge", "Bridge (own network with internet access)"
        ISOLATED = "isolated", "Isolated (no egress, no other sessions, no host)"
        NONE = "none", "No network"
        UNRESTRICTED = "unrestricted", "Unrestricted (staff only)"

    CONSOLE_KINDS = ("terminal", "vnc", "editor")

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    summary = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True, help_text="Markdown shown on the lab page.")
    difficulty = models.CharField(max_length=16, choices=Difficulty.choices, default=Difficulty.BEGINNER)
    tags = models.ManyToManyField(Tag, blank=True, related_name="labs")
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="labs")
    runner = models.CharField(
        max_length=40, default="default", help_text="Key of the LAB_RUNNERS setting."
    )
    cpu = models.DecimalField(
        max_digits=4, decimal_places=2, default=1,
        validators=[MinValueValidator(0.05), MaxValueValidator(64)],
    )
    memory_mb = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(16), MaxValueValidator(262144)]
    )
    pids_limit = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(16), MaxValueValidator(65536)]
    )
    disk_mb = models.PositiveIntegerField(default=2048, validators=[MinValueValidator(16)])
    network_mode = models.CharField(max_length=16, choices=NetworkMode.choices, default=NetworkMode.BRIDGE)
    ttl_minutes = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(24 * 60)]
    )
    max_extensions = models.PositiveIntegerField(default=2)
    extension_minutes = models.PositiveIntegerField(default=15, validators=[MinValueValidator(1)])
    idle_timeout_minutes = models.PositiveIntegerField(
        default=15, help_text="0 turns the idle timeout off."
    )
    idle_signals = models.JSONField(
        default=default_idle_signals, blank=True,
        help_text="What counts as activity for the idle timeout, any of " + ", ".join(IdleSignal.values)
                  + ". Without page, a tab left open with nothing running does not keep the session.",
    )
    idle_cpu_percent = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="CPU use, in percent of the lab's CPUs, above which work in the session counts as activity "
                  "(sampled by the watchdog, run_watchdog).",
    )
    auto_delete_minutes = models.PositiveIntegerField(
        default=60, help_text="Stopped sessions are deleted this long after they end."
    )
    exposed_ports = models.JSONField(default=list, blank=True, help_text="Ports for the web preview.")
    docker_access = models.BooleanField(default=False, help_text="Docker-in-Docker engine in the session.")
    dind_images = models.JSONField(
        default=list, blank=True, help_text="Images preloaded into the session's own Docker engine."
    )
    consoles = models.JSONField(default=list, blank=True, help_text='Any of "terminal", "vnc", "editor".')
    record_terminal = models.BooleanField(default=False)
    judge = models.JSONField(default=list, blank=True, help_text="Final checks run by the judge.")
    finish_text = models.TextField(blank=True, help_text="Markdown shown when the lab is complete.")
    assets = models.JSONField(
        default=list, blank=True, help_text='Files copied into the session: [{"file", "target", "chmod"}].'
    )
    unlock_steps_in_order = models.BooleanField(default=True, help_text="A step opens once the one before passes.")
    shell_user = models.CharField(
        max_length=32, blank=True, default="", validators=[SHELL_USER_VALIDATOR],
        help_text="Who the learner is in the session: empty for the image's own user, or \"root\" "
                  "(Killercoda scenarios, which expect root).",
    )
    hosts = models.JSONField(
        default=list, blank=True,
        help_text='Host names when a session has several machines, the learner\'s first: ["controlplane", '
                  '"node01"]. Empty: one machine.',
    )
    # What the last import of a Killercoda scenario set, field by field: a re-import keeps what staff
    # changed since, unless the scenario changed that value too (labs/labformat.py).
    imported_values = models.JSONField(default=dict, blank=True, editable=False)
    intro_background_script = models.TextField(blank=True, help_text="Runs as root when the session starts.")
    intro_foreground_script = models.TextField(
        blank=True, help_text="Runs in the learner's first terminal when the session starts.")
    source_path = models.CharField(max_length=500, blank=True, editable=False)
    # Which format the lab was imported from: Killercoda scenarios get their conventions in a
    # session (/root is the workspace, scripts as root; labs/assets.py, LAB_FORMAT.md).
    source_format = models.CharField(
        max_length=20, blank=True, default="", editable=False,
        choices=[("", "Lab directory or admin"), ("killercoda", "Killercoda scenario")],
    )
    published = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LabQuerySet.as_manager()

    class Meta:
        ordering = ["title"]
        constraints = [
            models.CheckConstraint(condition=Q(cpu__gt=0), name="lab_cpu_positive"),
            models.CheckConstraint(condition=Q(memory_mb__gte=16), name="lab_memory_minimum"),
            models.CheckConstraint(condition=Q(ttl_minutes__gte=1), name="lab_ttl_positive"),
            models.CheckConstraint(
                condition=Q(network_mode__in=["bridge", "isolated", "none", "unrestricted"]),
                name="lab_network_mode_valid",
            ),
            models.CheckConstraint(
                condition=Q(difficulty__in=["beginner", "intermediate", "advanced"]),
                name="lab_difficulty_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("labs:detail", args=[self.slug])

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not isinstance(self.consoles, list) or any(c not in self.CONSOLE_KINDS for c in self.consoles):
            errors["consoles"] = f"Consoles must be a list drawn from {', '.join(self.CONSOLE_KINDS)}."
        elif len(set(self.consoles)) != len(self.consoles):
            errors["consoles"] = "Consoles must not repeat."
        if not isinstance(self.exposed_ports, list) or any(
            not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 65535 for p in self.exposed_ports
        ):
            errors["exposed_ports"] = "Exposed ports must be a list of port numbers from 1 to 65535."
        if not isinstance(self.dind_images, list) or any(not isinstance(i, str) or not i for i in self.dind_images):
            errors["dind_images"] = "Preloaded images must be a list of image references."
        if not isinstance(self.judge, list):
            errors["judge"] = "The judge must be a list of checks."
        signals = self.idle_signals
        if not isinstance(signals, list) or any(s not in IdleSignal.values for s in signals):
            errors["idle_signals"] = f"Idle signals must be a list drawn from {', '.join(IdleSignal.values)}."
        elif len(set(signals)) != len(signals):
            errors["idle_signals"] = "Idle signals must not repeat."
        elif not signals and self.idle_timeout_minutes:
            errors["idle_signals"] = "Choose at least one idle signal, or set the idle timeout to 0."
        hosts = self.hosts
        if not isinstance(hosts, list) or any(not isinstance(h, str) or not HOST_NAME.match(h) for h in hosts):
            errors["hosts"] = "Hosts must be a list of host names (lower-case letters, digits and -)."
        elif len(set(self.hosts)) != len(self.hosts) or len(self.hosts) > MAX_HOSTS:
            errors["hosts"] = f"Hosts must not repeat, and a session has at most {MAX_HOSTS}."
        elif len(self.hosts) > 1 and self.network_mode == self.NetworkMode.NONE:
            errors["hosts"] = "Several hosts need a network to reach each other (not network mode none)."
        if errors:
            raise ValidationError(errors)

    @property
    def max_minutes(self) -> int:
        return self.ttl_minutes + self.max_extensions * self.extension_minutes


class LabStep(models.Model):
    lab = models.ForeignKey(Lab, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown")
    verify = models.JSONField(default=list, blank=True, help_text="Checks that verify this step.")
    solution = models.TextField(blank=True, help_text="Hidden from learners.")
    hints = models.JSONField(default=list, blank=True)
    background_script = models.TextField(blank=True, help_text="Runs in the session when the step starts.")
    foreground_script = models.TextField(blank=True, help_text="Runs in the learner's terminal when the step starts.")

    class Meta:
        ordering = ["lab", "order"]
        constraints = [models.UniqueConstraint(fields=["lab", "order"], name="step_order_unique_per_lab")]

    def __str__(self) -> str:
        return f"{self.lab.slug} #{self.order}: {self.title}"
