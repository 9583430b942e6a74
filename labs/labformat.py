"""Labs as code: read lab directories, check them, and import them into the database.

A lab directory holds ``lab.yaml`` and one markdown file per step; labs/LAB_FORMAT.md is
the reference. Reading is split from writing: a *loader* turns a directory into a
format-neutral :class:`LabSpec` (so other formats, e.g. Killercoda's ``index.json``, can be
added as loaders), and :func:`import_labs` checks every spec against the database before it
writes any of them, in one transaction, so a batch is imported completely or not at all.

Problems are reported as ``path/lab.yaml:12: resources.memory_mb: must be an integer ≥ 16``;
all problems of all labs are collected before anything is refused. Lab files are untrusted
input: labs/source_files.py reads them within limits, and what only staff may grant
(labs/privileges.py) is refused unless the operator allows it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction

from audit.records import record
from labs import privileges
from labs.models import IdleSignal, Image, Lab, LabStep, Tag, default_idle_signals
from labs.source_files import BoundedYamlLoader, SourceFileError, YamlLimitError, check_aliases, inside, read_text

__all__ = [
    "LOADERS",
    "ImageDefinition",
    "ImportOutcome",
    "LabImportError",
    "LabLoader",
    "LabProblem",
    "LabSpec",
    "Location",
    "StepSpec",
    "YamlLabLoader",
    "detect_loader",
    "discover_labs",
    "import_labs",
    "load_lab",
]

# Largest value a PositiveIntegerField holds on every supported database.
_INT_MAX = 2_147_483_647
_SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]+\Z")


# --------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file as the user named it, a 1-based line, a dotted field."""

    file: str
    line: int | None = None
    field: str = ""


@dataclass(frozen=True)
class LabProblem:
    location: Location
    message: str

    def __str__(self) -> str:
        where = self.location.file
        if self.location.line is not None:
            where += f":{self.location.line}"
        if self.location.field:
            return f"{where}: {self.location.field}: {self.message}"
        return f"{where}: {self.message}"


class LabImportError(Exception):
    """One or more labs were refused; ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[LabProblem]) -> None:
        problems = list(problems)
        # Read like a compiler's output: files in the order met, lines in order within each.
        first_seen: dict[str, int] = {}
        for problem in problems:
            first_seen.setdefault(problem.location.file, len(first_seen))
        self.problems = sorted(
            problems, key=lambda p: (first_seen[p.location.file], p.location.line or 0)
        )
        count = len(self.problems)
        heading = f"{count} problem{'s' if count != 1 else ''} found, nothing was imported:"
        super().__init__("\n".join([heading, *(f"  {p}" for p in self.problems)]))


# --------------------------------------------------------------------------------------
# The format-neutral description of a lab that loaders produce


@dataclass(frozen=True)
class ImageDefinition:
    """An image a lab file describes; created when no image of that name exists."""

    name: str
    kind: str
    reference: str = ""
    description: str = ""


@dataclass
class StepSpec:
    title: str
    body: str
    verify: list[Any] = field(default_factory=list)
    solution: str = ""
    hints: list[str] = field(default_factory=list)
    background_script: str = ""
    foreground_script: str = ""


@dataclass
class LabSpec:
    """Everything needed to write one lab.

    ``fields`` holds a value for every imported Lab field (omitted keys already replaced by
    their defaults), so importing a file always yields the same row whatever was there before.
    ``locate`` maps a model-level key ("lab.memory_mb", "image.name", "step.2.body", "lab")
    to where it was written, so database-side errors point into the source file.
    ``given`` names the Lab fields the file sets itself (the others hold defaults): a
    privileged value staff set in the admin is kept on re-import when the file is silent.
    """

    directory: Path
    slug: str
    fields: dict[str, Any]
    image_name: str
    image_definition: ImageDefinition | None
    tags: list[str]
    steps: list[StepSpec]
    locate: Callable[[str], Location]
    given: frozenset[str] = frozenset()
    # Killercoda scenarios: what staff changed in the admin since the last import is kept unless
    # the scenario changed that value too (Lab.imported_values holds what the last import set).
    keep_admin_edits: bool = False


@dataclass(frozen=True)
class ImportOutcome:
    slug: str
    created: bool
    lab_id: int
    directory: Path
    steps: int
    new_images: tuple[str, ...] = ()
    inactive_image: str = ""
    notes: tuple[str, ...] = ()  # privileges granted, kept from the admin or dropped (one line each)

    @property
    def action(self) -> str:
        return "created" if self.created else "updated"

    def describe(self) -> str:
        details = [f"{self.steps} step{'s' if self.steps != 1 else ''}"]
        details += [f"new image {name}" for name in self.new_images]
        if self.inactive_image:
            details.append(f"image {self.inactive_image} stays inactive until staff register its disk")
        return f"{self.action} {self.slug} ({', '.join(details)})"


# --------------------------------------------------------------------------------------
# Loaders: one per on-disk format, chosen per directory


class LabLoader(Protocol):
    """Reads one lab directory of a given format.

    ``marker`` is the file that identifies the format (``lab.yaml``; a Killercoda loader
    would use ``index.json``). ``load`` raises LabImportError with every problem it finds.
    """

    name: str
    marker: str

    def detect(self, directory: Path) -> bool: ...

    def load(self, directory: Path) -> LabSpec: ...


def detect_loader(directory: Path) -> LabLoader | None:
    """The loader for the format of ``directory``, or None when it is not a lab."""
    for loader in LOADERS:
        if loader.detect(directory):
            return loader
    return None


def load_lab(directory: Path) -> LabSpec:
    loader = detect_loader(directory)
    if loader is None:
        markers = " or ".join(sorted({lo.marker for lo in LOADERS}))
        raise LabImportError([LabProblem(Location(str(directory)), f"not a lab directory (no {markers})")])
    return loader.load(directory)


def discover_labs(paths: Iterable[Path]) -> list[Path]:
    """Expand command-line paths into lab directories.

    A path may be a lab directory, a lab's marker file, or a directory whose immediate
    subdirectories are labs (a catalog such as labs/demo_catalog).
    """
    found, problems = _discover(paths)
    if problems:
        raise LabImportError(problems)
    return found


def _discover(paths: Iterable[Path]) -> tuple[list[Path], list[LabProblem]]:
    found: list[Path] = []
    seen: set[Path] = set()
    problems: list[LabProblem] = []

    def add(directory: Path) -> None:
        # The same lab named twice (e.g. the catalog and one of its labs) is imported once.
        key = directory.resolve()
        if key not in seen:
            seen.add(key)
            found.append(directory)

    for path in paths:
        path = Path(path)
        if not path.exists():
            problems.append(LabProblem(Location(str(path)), "no such file or directory"))
        elif path.is_file() and any(path.name == lo.marker for lo in LOADERS):
            add(path.parent)
        elif not path.is_dir():
            problems.append(LabProblem(Location(str(path)), "not a lab directory or a lab's marker file"))
        elif detect_loader(path) is not None:
            add(path)
        else:
            children = [
                child
                for child in sorted(path.iterdir())
                if child.is_dir() and not child.name.startswith(".") and detect_loader(child) is not None
            ]
            if not children:
                markers = " or ".join(sorted({lo.marker for lo in LOADERS}))
                problems.append(
                    LabProblem(Location(str(path)), f"no {markers} here or in its immediate subdirectories")
                )
            for child in children:
                add(child)
    return found, problems


# --------------------------------------------------------------------------------------
# The lab.yaml format

LAB_KEYS = frozenset({
    "slug", "title", "summary", "description", "description_file", "difficulty", "tags", "image",
    "runner", "resources", "network_mode", "ttl_minutes", "max_extensions", "extension_minutes",
    "idle_timeout_minutes", "auto_delete_minutes", "exposed_ports", "docker_access", "consoles",
    "record_terminal", "published", "judge", "steps", "dind_images", "shell_user", "hosts",
    "idle_signals", "idle_cpu_percent",
})  # fmt: skip
RESOURCE_KEYS = ("cpu", "memory_mb", "pids_limit", "disk_mb")
IMAGE_KEYS = frozenset({"name", "kind", "reference", "description"})
STEP_KEYS = frozenset({"title", "file", "verify", "solution", "solution_file", "hints"})
# Plain integer Lab fields written at the top level of lab.yaml.
_TOP_LEVEL_INTS = ("ttl_minutes", "max_extensions", "extension_minutes", "idle_timeout_minutes", "auto_delete_minutes",
                   "idle_cpu_percent")
_BOOLS = ("docker_access", "record_terminal", "published")
# Where a model field lives in lab.yaml when that is not a top-level key of the same name.
_LAB_FIELD_PATHS: dict[str, tuple[str | int, ...]] = {name: ("resources", name) for name in RESOURCE_KEYS}

KeyPath = tuple[str | int, ...]


def _format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def describe_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    return str(value)


def _bounds(model: type[models.Model], name: str) -> tuple[int | float | None, int | float | None]:
    """The min/max validators of a model field, so lab.yaml limits never drift from the model."""
    low: int | float | None = None
    high: int | float | None = None
    model_field = model._meta.get_field(name)
    assert isinstance(model_field, models.Field)
    for validator in model_field.validators:
        if isinstance(validator, MinValueValidator):
            low = validator.limit_value  # type: ignore[assignment]
        elif isinstance(validator, MaxValueValidator):
            high = validator.limit_value  # type: ignore[assignment]
    return low, high


def _max_length(model: type[models.Model], name: str) -> int | None:
    return model._meta.get_field(name).max_length  # type: ignore[union-attr]


def _model_default(name: str) -> Any:
    model_field = Lab._meta.get_field(name)
    assert isinstance(model_field, models.Field)
    return model_field.get_default()


def _index_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], duplicates: list[tuple[KeyPath, int, int]],
                 visited: set[int]) -> None:
    """Record the 1-based line of every key and list item, keyed by its path in the document."""
    lines.setdefault(path, node.start_mark.line + 1)
    # Aliases reuse nodes; indexing each once keeps recursive or exponential documents cheap.
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key, line = str(key_node.value), key_node.start_mark.line + 1
            child = (*path, key)
            if key in first_seen:
                duplicates.append((child, line, first_seen[key]))
                continue
            first_seen[key] = line
            lines[child] = line
            _index_lines(value_node, child, lines, duplicates, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _index_lines(item, child, lines, duplicates, visited)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class _YamlReader:
    """Checks one lab.yaml, collecting problems rather than stopping at the first."""

    def __init__(self, directory: Path, marker: str) -> None:
        self.directory = directory
        self.yaml_path = directory / marker
        self.display = str(self.yaml_path)
        self.problems: list[LabProblem] = []
        self.lines: dict[KeyPath, int] = {}
        # Model-level key -> the lab.yaml path it came from, when that differs from the default.
        self.sources: dict[str, KeyPath] = {}

    # -- reporting ----------------------------------------------------------------------

    def line_of(self, path: KeyPath) -> int | None:
        # A missing key has no line of its own: point at the closest enclosing one.
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def where(self, path: KeyPath) -> Location:
        return Location(self.display, self.line_of(path), _format_path(path))

    def error(self, path: KeyPath, message: str) -> None:
        self.problems.append(LabProblem(self.where(path), message))

    # -- parsing --------------------------------------------------------------------------

    def parse(self) -> Any:
        try:
            text = read_text(self.yaml_path, self.directory)
        except SourceFileError as exc:
            self.problems.append(LabProblem(Location(self.display, exc.line), f"the file {exc.message}"))
            return MISSING
        loader = BoundedYamlLoader(text)
        try:
            # Compose and construct from the same node tree: the data, plus lines for every key.
            node = loader.get_single_node()
            if node is None:
                self.problems.append(LabProblem(Location(self.display, 1), "the file is empty"))
                return MISSING
            check_aliases(node)
            data = loader.construct_document(node)
        except YamlLimitError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
            self.problems.append(LabProblem(Location(self.display, line), str(exc.problem)))
            return MISSING
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            # PyYAML splits its messages: "while scanning a quoted scalar" + "found unexpected end of stream".
            text = ", ".join(part for part in (exc.context, exc.problem) if part) or "cannot be parsed"
            self.problems.append(LabProblem(Location(self.display, line), f"invalid YAML: {text}"))
            return MISSING
        except yaml.YAMLError as exc:
            self.problems.append(LabProblem(Location(self.display), f"invalid YAML: {exc}"))
            return MISSING
        finally:
            loader.dispose()
        duplicates: list[tuple[KeyPath, int, int]] = []
        _index_lines(node, (), self.lines, duplicates, set())
        for path, line, first in duplicates:
            location = Location(self.display, line, _format_path(path))
            self.problems.append(LabProblem(location, f"duplicate key (first given on line {first})"))
        return data

    # -- value checks; each returns MISSING after reporting a problem -------------------

    def keys(self, data: dict[Any, Any], allowed: frozenset[str] | tuple[str, ...], path: KeyPath) -> None:
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                self.error((*path, str(key)), f"unknown key; allowed keys are {', '.join(sorted(allowed))}")

    def mapping(self, value: Any, path: KeyPath) -> dict[Any, Any] | Any:
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping of keys to values (got {describe_value(value)})")
            return MISSING
        return value

    def string(self, data: dict[Any, Any], key: str, path: KeyPath, *, required: bool = False, default: str = "",
               max_length: int | None = None, blank: bool = True) -> str | Any:
        value = data.get(key, MISSING)
        here = (*path, key)
        if value is MISSING:
            if required:
                self.error(here, "is required")
                return MISSING
            return default
        if not isinstance(value, str):
            self.error(here, f"must be a string (got {describe_value(value)})")
            return MISSING
        if not blank and not value.strip():
            self.error(here, "must not be empty")
            return MISSING
        if max_length is not None and len(value) > max_length:
            self.error(here, f"must be at most {max_length} characters (it has {len(value)})")
            return MISSING
        return value

    def slug(self, data: dict[Any, Any], key: str, path: KeyPath, *, max_length: int | None,
             required: bool = True) -> str | Any:
        value = self.string(data, key, path, required=required, max_length=max_length, blank=False)
        if isinstance(value, str) and value and not _SLUG_RE.match(value):
            wanted = "must be a slug: letters, digits, hyphens and underscores"
            self.error((*path, key), f"{wanted} (got {describe_value(value)})")
            return MISSING
        return value

    def choice(self, data: dict[Any, Any], key: str, path: KeyPath, choices: Iterable[str], default: str) -> str | Any:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        options = list(choices)
        if not isinstance(value, str) or value not in options:
            self.error((*path, key), f"must be one of {', '.join(options)} (got {describe_value(value)})")
            return MISSING
        return value

    def boolean(self, data: dict[Any, Any], key: str, path: KeyPath, default: bool) -> bool | Any:
        value = data.get(key, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.error((*path, key), f"must be true or false (got {describe_value(value)})")
            return MISSING
        return value

    def integer(self, data: dict[Any, Any], key: str, path: KeyPath, model_field: str) -> int | Any:
        value = data.get(key, MISSING)
        if value is MISSING:
            return _model_default(model_field)
        low, high = _bounds(Lab, model_field)
        low = 0 if low is None else low
        # Field validators include the backend's integer range; keep within what all backends store.
        high = _INT_MAX if high is None else min(high, _INT_MAX)
        wanted = f"must be an integer ≥ {low}" if high == _INT_MAX else f"must be an integer from {low} to {high}"
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.error((*path, key), f"{wanted} (got {describe_value(value)})")
            return MISSING
        return value

    def cpu(self, data: dict[Any, Any], path: KeyPath) -> Decimal | Any:
        value = data.get("cpu", MISSING)
        if value is MISSING:
            return Decimal(str(_model_default("cpu")))
        cpu_field = Lab._meta.get_field("cpu")
        places = cpu_field.decimal_places  # type: ignore[attr-defined]
        low, high = _bounds(Lab, "cpu")
        wanted = f"must be a number of CPUs from {low} to {high} with at most {places} decimal places"
        number: Decimal | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                number = None
        exponent = number.as_tuple().exponent if number is not None else 0
        if (
            number is None
            or not number.is_finite()
            or not isinstance(exponent, int)
            or exponent < -places
            or (low is not None and number < Decimal(str(low)))
            or (high is not None and number > Decimal(str(high)))
        ):
            self.error((*path, "cpu"), f"{wanted} (got {describe_value(value)})")
            return MISSING
        return number

    def list_of(self, data: dict[Any, Any], key: str, path: KeyPath) -> list[Any] | Any:
        value = data.get(key, MISSING)
        if value is MISSING:
            return []
        if not isinstance(value, list):
            self.error((*path, key), f"must be a list (got {describe_value(value)})")
            return MISSING
        return value

    def strings(self, data: dict[Any, Any], key: str, path: KeyPath, *, choices: tuple[str, ...] = (),
                slugs: int | None = None, unique: bool = True) -> list[str] | Any:
        items = self.list_of(data, key, path)
        if items is MISSING:
            return MISSING
        ok = True
        for index, item in enumerate(items):
            here = (*path, key, index)
            if not isinstance(item, str) or not item.strip():
                self.error(here, f"must be a non-empty string (got {describe_value(item)})")
                ok = False
            elif choices and item not in choices:
                self.error(here, f"must be one of {', '.join(choices)} (got {describe_value(item)})")
                ok = False
            elif slugs is not None and (not _SLUG_RE.match(item) or len(item) > slugs):
                self.error(here, f"must be a slug of at most {slugs} letters, digits, hyphens and underscores "
                                 f"(got {describe_value(item)})")
                ok = False
            elif unique and item in items[:index]:
                self.error(here, f"{describe_value(item)} is listed twice")
                ok = False
        return items if ok else MISSING

    def ports(self, data: dict[Any, Any], path: KeyPath) -> list[int] | Any:
        items = self.list_of(data, "exposed_ports", path)
        if items is MISSING:
            return MISSING
        ok = True
        for index, item in enumerate(items):
            here = (*path, "exposed_ports", index)
            if not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= 65535:
                self.error(here, f"must be a port number from 1 to 65535 (got {describe_value(item)})")
                ok = False
            elif item in items[:index]:
                self.error(here, f"port {item} is listed twice")
                ok = False
        return items if ok else MISSING

    def checks(self, data: dict[Any, Any], key: str, path: KeyPath) -> list[dict[str, Any]] | Any:
        """Judge and verify checks: kept verbatim for the judge, so only their shape is checked here."""
        items = self.list_of(data, key, path)
        if items is MISSING:
            return MISSING
        ok = True
        for index, item in enumerate(items):
            here = (*path, key, index)
            if not isinstance(item, dict):
                self.error(here, f"must be a mapping with a string `kind` (got {describe_value(item)})")
                ok = False
                continue
            kind = item.get("kind", MISSING)
            if kind is MISSING:
                self.error((*here, "kind"), "is required")
                ok = False
            elif not isinstance(kind, str) or not kind.strip():
                self.error((*here, "kind"), f"must be a non-empty string (got {describe_value(kind)})")
                ok = False
            bad = _not_json(item, here)
            if bad is not None:
                self.error(bad[0], f"must hold only strings, numbers, booleans, null, lists and mappings with "
                                   f"string keys (got {bad[1]})")
                ok = False
        if ok:
            for relative, message in judge_check_problems(items, self.directory):
                self.error((*path, key, *relative), message)
                ok = False
        if ok:
            # The judge reads a script check's file at every check: it is held to the same limits.
            for index, item in enumerate(items):
                if item["kind"] == "script" and isinstance(item.get("file"), str):
                    try:
                        read_text(self.directory / item["file"], self.directory)
                    except SourceFileError as exc:
                        self.error((*path, key, index, "file"), f"{self.directory / item['file']} {exc.message}")
                        ok = False
        return items if ok else MISSING

    def text_file(self, data: dict[Any, Any], key: str, path: KeyPath, *, required: bool = False) -> str | Any:
        """The contents of a file named relative to the lab directory, which it must stay inside."""
        if key not in data and not required:
            return ""
        relative = self.string(data, key, path, required=required, blank=False)
        if relative is MISSING:
            return MISSING
        here = (*path, key)
        target = self.directory / relative
        if Path(relative).is_absolute() or not inside(target, self.directory):
            self.error(here, f"must be a path inside the lab directory (got {describe_value(relative)})")
            return MISSING
        if not target.is_file():
            self.error(here, f"file not found: {target}")
            return MISSING
        try:
            text = read_text(target, self.directory)
        except SourceFileError as exc:
            self.error(here, f"{target} {exc.message}")
            return MISSING
        text = text.removeprefix("\ufeff").rstrip()
        if not text:
            self.error(here, f"{target} is empty")
            return MISSING
        return text


def _not_json(value: Any, path: KeyPath) -> tuple[KeyPath, str] | None:
    """The first value that a JSON column cannot store (dates, sets, NaN...), with its path."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, str(value))
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _not_json(item, (*path, index))
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (*path, str(key)), f"the non-string key {key!r}"
            found = _not_json(item, (*path, key))
            if found:
                return found
        return None
    return path, f"a {type(value).__name__}"


# --------------------------------------------------------------------------------------
# judge check validation
#
# Each check kind's options (labs/LAB_FORMAT.md, "Checks") are checked by the judge's own
# schema in judge/checks/, so a malformed check is refused here, at import, with its line,
# rather than failing when a learner presses "Check".


CheckValidator = Callable[[list[Any], Path], list[tuple[KeyPath, str]]]
_check_validators: list[CheckValidator] = []


def register_check_validator(validator: CheckValidator) -> None:
    """The judge registers its schema here (JudgeConfig.ready): labs never imports the judge."""
    if validator not in _check_validators:
        _check_validators.append(validator)


def judge_check_problems(items: list[Any], directory: Path) -> list[tuple[KeyPath, str]]:
    """Problems of a list of checks, paths relative to the list (``(2, "max_size_mb")``)."""
    if not _check_validators:
        return [((), "checks cannot be validated: the judge app is not installed")]
    return [problem for validator in _check_validators for problem in validator(items, directory)]


# end of judge check validation
# --------------------------------------------------------------------------------------


class YamlLabLoader:
    """The native format: lab.yaml plus markdown step files (labs/LAB_FORMAT.md)."""

    name = "lab.yaml"
    marker = "lab.yaml"

    def detect(self, directory: Path) -> bool:
        return (directory / self.marker).is_file()

    def load(self, directory: Path) -> LabSpec:
        reader = _YamlReader(directory, self.marker)
        data = reader.parse()
        if data is MISSING:
            raise LabImportError(reader.problems)
        data = reader.mapping(data, ())
        if data is MISSING:
            raise LabImportError(reader.problems)
        reader.keys(data, LAB_KEYS, ())

        slug = reader.slug(data, "slug", (), max_length=_max_length(Lab, "slug"))
        values: dict[str, Any] = {
            "title": reader.string(data, "title", (), required=True, blank=False, max_length=_max_length(Lab, "title")),
            "summary": reader.string(data, "summary", (), max_length=_max_length(Lab, "summary")),
            "description": self._description(reader, data),
            "difficulty": reader.choice(data, "difficulty", (), Lab.Difficulty.values, _model_default("difficulty")),
            "runner": reader.string(data, "runner", (), default=_model_default("runner"), blank=False,
                                    max_length=_max_length(Lab, "runner")),
            "network_mode": reader.choice(data, "network_mode", (), Lab.NetworkMode.values,
                                          _model_default("network_mode")),
            "exposed_ports": reader.ports(data, ()),
            "consoles": reader.strings(data, "consoles", (), choices=Lab.CONSOLE_KINDS),
            "dind_images": reader.strings(data, "dind_images", ()),
            "judge": reader.checks(data, "judge", ()),
            "shell_user": reader.string(data, "shell_user", (), max_length=_max_length(Lab, "shell_user")),
            "hosts": reader.strings(data, "hosts", ()),
            "idle_signals": (reader.strings(data, "idle_signals", (), choices=tuple(IdleSignal.values))
                             if "idle_signals" in data else default_idle_signals()),
            "source_format": "",
        }
        values.update(self._resources(reader, data))
        for name in _TOP_LEVEL_INTS:
            values[name] = reader.integer(data, name, (), name)
        for name in _BOOLS:
            # Files in a catalog are meant to be seen: unlike a lab made in the admin, published by default.
            values[name] = reader.boolean(data, name, (), True if name == "published" else _model_default(name))
        tags = reader.strings(data, "tags", (), slugs=_max_length(Tag, "name"))
        image_name, image_definition = self._image(reader, data)
        steps = self._steps(reader, data)

        if reader.problems:
            raise LabImportError(reader.problems)
        return LabSpec(
            directory=directory,
            slug=slug,
            fields=values,
            image_name=image_name,
            image_definition=image_definition,
            tags=tags,
            steps=steps,
            locate=lambda key: self._locate(reader, key),
            given=self._given(data),
        )

    @staticmethod
    def _given(data: dict[Any, Any]) -> frozenset[str]:
        """The Lab fields the file sets: its top-level keys and the resources it names."""
        resources = data.get("resources")
        names = {key for key in data if isinstance(key, str)}
        if isinstance(resources, dict):
            names.update(key for key in resources if isinstance(key, str))
        return frozenset(names)

    @staticmethod
    def _locate(reader: _YamlReader, key: str) -> Location:
        if key in reader.sources:
            return reader.where(reader.sources[key])
        scope, _, rest = key.partition(".")
        if scope == "lab":
            return reader.where(_LAB_FIELD_PATHS.get(rest, (rest,)) if rest else ())
        if scope == "image":
            # A string image has no sub-keys: point at the image line itself.
            return reader.where(("image", rest) if "image" in reader.sources and rest else ("image",))
        if scope == "step":
            index, _, name = rest.partition(".")
            return reader.where(("steps", int(index), name) if name else ("steps", int(index)))
        return reader.where(())

    @staticmethod
    def _description(reader: _YamlReader, data: dict[Any, Any]) -> str | Any:
        if "description" in data and "description_file" in data:
            reader.error(("description_file",), "give either description or description_file, not both")
            return MISSING
        if "description_file" in data:
            reader.sources["lab.description"] = ("description_file",)
            return reader.text_file(data, "description_file", ())
        return reader.string(data, "description", ())

    @staticmethod
    def _resources(reader: _YamlReader, data: dict[Any, Any]) -> dict[str, Any]:
        raw = data.get("resources", {})
        resources = reader.mapping(raw, ("resources",))
        if resources is MISSING:
            return {name: MISSING for name in RESOURCE_KEYS}
        reader.keys(resources, RESOURCE_KEYS, ("resources",))
        values: dict[str, Any] = {"cpu": reader.cpu(resources, ("resources",))}
        for name in RESOURCE_KEYS[1:]:
            values[name] = reader.integer(resources, name, ("resources",), name)
        return values

    @staticmethod
    def _image(reader: _YamlReader, data: dict[Any, Any]) -> tuple[str, ImageDefinition | None]:
        raw = data.get("image", MISSING)
        name_length = _max_length(Image, "name")
        if raw is MISSING:
            reader.error(("image",), "is required: the name of an image, or a mapping {name, kind, reference}")
            return "", None
        if isinstance(raw, str):
            return reader.slug(data, "image", (), max_length=name_length), None
        image = reader.mapping(raw, ("image",))
        if image is MISSING:
            return "", None
        reader.sources["image"] = ("image",)  # marks the image as a mapping for _locate
        here: KeyPath = ("image",)
        reader.keys(image, IMAGE_KEYS, here)
        name = reader.slug(image, "name", here, max_length=name_length)
        kind = reader.choice(image, "kind", here, Image.Kind.values, Image.Kind.CONTAINER.value)
        reference = reader.string(image, "reference", here, max_length=_max_length(Image, "reference"))
        description = reader.string(image, "description", here)
        if kind == Image.Kind.CONTAINER and reference == "":
            reader.error((*here, "reference"), "is required for a container image, e.g. labs/base:bookworm")
            reference = MISSING
        if MISSING in (name, kind, reference, description):
            return "", None
        return name, ImageDefinition(name=name, kind=kind, reference=reference, description=description)

    @staticmethod
    def _steps(reader: _YamlReader, data: dict[Any, Any]) -> list[StepSpec]:
        raw = data.get("steps", MISSING)
        if raw is MISSING:
            reader.error(("steps",), "is required: a list of steps, each with a title and a markdown file")
            return []
        if not isinstance(raw, list):
            reader.error(("steps",), f"must be a list of steps (got {describe_value(raw)})")
            return []
        if not raw:
            reader.error(("steps",), "must list at least one step")
            return []
        steps: list[StepSpec] = []
        for index, item in enumerate(raw):
            here: KeyPath = ("steps", index)
            step = reader.mapping(item, here)
            if step is MISSING:
                continue
            reader.keys(step, STEP_KEYS, here)
            reader.sources[f"step.{index}.body"] = (*here, "file")
            title = reader.string(step, "title", here, required=True, blank=False,
                                  max_length=_max_length(LabStep, "title"))
            body = reader.text_file(step, "file", here, required=True)
            if "solution" in step and "solution_file" in step:
                reader.error((*here, "solution_file"), "give either solution or solution_file, not both")
                solution = MISSING
            elif "solution_file" in step:
                reader.sources[f"step.{index}.solution"] = (*here, "solution_file")
                solution = reader.text_file(step, "solution_file", here)
            else:
                solution = reader.string(step, "solution", here)
            verify = reader.checks(step, "verify", here)
            hints = reader.strings(step, "hints", here, unique=False)
            values = (title, body, solution, verify, hints)
            if not any(value is MISSING for value in values):
                steps.append(StepSpec(title=title, body=body, verify=verify, solution=solution, hints=hints))
        return steps


# Formats tried in order for each directory; labs/killercoda.py adds its loader (index.json) when
# LabsConfig.ready imports it.
LOADERS: list[LabLoader] = [YamlLabLoader()]


# --------------------------------------------------------------------------------------
# Checking against the database and writing


@dataclass
class _Plan:
    spec: LabSpec
    lab: Lab
    created: bool
    image: Image
    steps: list[LabStep]
    notes: list[str]


STEP_FIELDS = ("title", "body", "verify", "solution", "hints", "background_script", "foreground_script")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unstorable(value: Any) -> str | None:
    """Why the database cannot store some text in ``value`` (YAML and JSON escapes can make it), or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character, which cannot be stored"
            if _SURROGATE.search(item):
                return "contains a lone surrogate (an escape such as \\ud800), which is not text"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def _storage_problems(spec: LabSpec) -> list[LabProblem]:
    places: list[tuple[str, Any]] = [(f"lab.{name}", value) for name, value in spec.fields.items()]
    places.append(("lab.tags", spec.tags))
    if spec.image_definition is not None:
        places += [("image.reference", spec.image_definition.reference),
                   ("image.description", spec.image_definition.description)]
    for index, step in enumerate(spec.steps):
        places += [(f"step.{index}.{name}", getattr(step, name)) for name in STEP_FIELDS]
    problems = []
    for key, value in places:
        reason = _unstorable(value)
        if reason is not None:
            problems.append(LabProblem(spec.locate(key), reason))
    return problems


def _refusal(found: privileges.Privilege) -> str:
    return (f"{privileges.shown(found.value)} is for staff to grant: {found.reason}. Set it in the admin, or "
            f"review the lab and import it with --allow-privileged")


def _privilege_problems(spec: LabSpec) -> list[LabProblem]:
    problems = [LabProblem(spec.locate(f"lab.{found.field}"), _refusal(found))
                for found in privileges.lab_privileges(spec.fields)]
    definition = spec.image_definition
    if definition is not None and definition.kind == Image.Kind.VM and definition.reference:
        found = privileges.Privilege("image.reference", definition.reference, privileges.VM_REFERENCE_REASON)
        problems.append(LabProblem(spec.locate("image.reference"), _refusal(found)))
    return problems


def _privilege_notes(spec: LabSpec, lab: Lab, before: dict[str, Any]) -> list[str]:
    """Apply the re-import rule for privileges and say what it did (labs/LAB_FORMAT.md).

    ``before`` holds the existing lab's values. A privileged value the file does not set is
    kept; one the file replaces is reported, as is every privilege the file grants.
    """
    notes = []
    for name in privileges.FIELDS:
        old = privileges.privilege(name, before[name]) if name in before else None
        if old is not None and name not in spec.given:
            setattr(lab, name, before[name])
            notes.append(f"kept {privileges.describe(old)} set in the admin (the file does not set {name})")
            continue
        new = privileges.privilege(name, spec.fields[name]) if name in spec.fields else None
        if new is not None:
            notes.append(f"granted {privileges.describe(new)} (--allow-privileged)")
        if old is not None and spec.fields.get(name) != before[name]:
            notes.append(f"replaced {privileges.describe(old)} set in the admin by "
                         f"{privileges.shown(spec.fields.get(name))} from the file")
    return notes


def _translate(error: ValidationError, locate: Callable[[str], Location], scope: str) -> list[LabProblem]:
    """Model validation errors in the same file:line: field: message form as format errors."""
    problems: list[LabProblem] = []
    for name, messages in error.message_dict.items():
        location = locate(scope if name == NON_FIELD_ERRORS else f"{scope}.{name}")
        problems.extend(LabProblem(location, message) for message in messages)
    return problems


def _check_batch(specs: list[LabSpec]) -> list[LabProblem]:
    """Conflicts between labs imported together, which no single file can show."""
    problems: list[LabProblem] = []
    slugs: dict[str, LabSpec] = {}
    images: dict[str, LabSpec] = {}
    for spec in specs:
        other = slugs.setdefault(spec.slug, spec)
        if other is not spec:
            problems.append(LabProblem(spec.locate("lab.slug"), f"{spec.slug} is also the slug of {other.directory}"))
        definition = spec.image_definition
        if definition is None:
            continue
        other = images.setdefault(definition.name, spec)
        if other is not spec and other.image_definition != definition:
            problems.append(
                LabProblem(spec.locate("image.name"), f"image {definition.name} is described differently in "
                                                      f"{other.directory}")
            )
    return problems


def _resolve_images(specs: list[LabSpec], problems: list[LabProblem]) -> dict[str, Image]:
    """The Image for every name used: existing rows, or new unsaved ones for described images."""
    names = {spec.image_name for spec in specs}
    images = {image.name: image for image in Image.objects.filter(name__in=names)}
    for spec in specs:
        definition = spec.image_definition
        if definition is None:
            continue
        existing = images.get(definition.name)
        if existing is not None:
            # An existing image is used as it is: staff may have edited it in the admin since.
            if existing.kind != definition.kind:
                problems.append(LabProblem(
                    spec.locate("image.kind"),
                    f"an image named {definition.name} already exists with kind {existing.kind}",
                ))
            continue
        # A VM described without a disk is a placeholder: refused at start until staff add the disk.
        placeholder = definition.kind == Image.Kind.VM and not definition.reference
        image = Image(name=definition.name, kind=definition.kind, reference=definition.reference,
                      description=definition.description, active=not placeholder)
        try:
            image.full_clean()
        except ValidationError as exc:
            errors = exc.message_dict
            if placeholder:
                errors.pop("file", None)
            if errors:
                problems.extend(_translate(ValidationError(errors), spec.locate, "image"))
        images[definition.name] = image
    for spec in specs:
        if spec.image_definition is None and spec.image_name not in images:
            problems.append(LabProblem(
                spec.locate("lab.image"),
                f"no image named {spec.image_name} exists; describe it with a mapping {{name, kind, reference}}",
            ))
    return images


def _plan(spec: LabSpec, image: Image, problems: list[LabProblem]) -> _Plan:
    existing = Lab.objects.filter(slug=spec.slug).first()
    before = {name: getattr(existing, name) for name in privileges.FIELDS} if existing is not None else {}
    lab = existing or Lab(slug=spec.slug)
    kept: list[str] = []
    for name, value in spec.fields.items():
        if spec.keep_admin_edits and existing is not None and _edited_in_admin(existing, name, value):
            kept.append(name)
            continue
        setattr(lab, name, value)
    notes = _privilege_notes(spec, lab, before)
    # (A privileged value kept is already reported above, with the reason.)
    notes += [f"kept {name} as staff set it in the admin (the scenario did not change it)" for name in kept
              if privileges.privilege(name, getattr(lab, name)) is None]
    if spec.keep_admin_edits:
        lab.imported_values = {name: _comparable(name, value) for name, value in spec.fields.items()}
    if image.pk is None and image.kind == Image.Kind.VM and image.reference:
        notes.append(f"granted image.reference {image.reference!r} (--allow-privileged)")
    lab.source_path = str(spec.directory.resolve())
    exclude: list[str] = []
    if image.pk is None:
        exclude.append("image")  # not saved yet; it is created right before the lab
    else:
        lab.image = image
    try:
        lab.full_clean(exclude=exclude)
    except ValidationError as exc:
        problems.extend(_translate(exc, spec.locate, "lab"))
    steps = []
    for index, step_spec in enumerate(spec.steps):
        step = LabStep(order=index + 1, title=step_spec.title, body=step_spec.body, verify=step_spec.verify,
                       solution=step_spec.solution, hints=step_spec.hints,
                       background_script=step_spec.background_script,
                       foreground_script=step_spec.foreground_script)
        try:
            step.full_clean(exclude=["lab"], validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            problems.extend(_translate(exc, spec.locate, f"step.{index}"))
        steps.append(step)
    return _Plan(spec=spec, lab=lab, created=existing is None, image=image, steps=steps, notes=notes)


def _comparable(name: str, value: Any) -> Any:
    """The Lab field `name`'s value as JSON keeps it, whatever type it came in (a CPU count of 1,
    1.0 or Decimal("1.00") is "1")."""
    field = Lab._meta.get_field(name)
    if isinstance(field, models.Field):
        value = field.to_python(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


def _edited_in_admin(existing: Lab, name: str, value: Any) -> bool:
    """Staff changed `name` since the last import, and the scenario still says what it said then."""
    if name not in existing.imported_values:
        return False
    last = existing.imported_values[name]
    return _comparable(name, getattr(existing, name)) != last and _comparable(name, value) == last


def _write(plan: _Plan) -> ImportOutcome:
    new_images: tuple[str, ...] = ()
    if plan.image.pk is None:
        plan.image.save()
        new_images = (plan.image.name,)
    lab = plan.lab
    lab.image = plan.image
    lab.save()
    lab.tags.set([Tag.objects.get_or_create(name=name)[0] for name in plan.spec.tags])
    # Steps are updated in place by position, not recreated, so their ids stay stable for
    # anything that refers to them (e.g. a learner's progress).
    current = {step.order: step for step in LabStep.objects.filter(lab=lab)}
    for step in plan.steps:
        existing = current.get(step.order)
        if existing is None:
            step.lab = lab
            step.save()
            continue
        changed = [name for name in STEP_FIELDS if getattr(existing, name) != getattr(step, name)]
        if changed:
            for name in changed:
                setattr(existing, name, getattr(step, name))
            existing.save(update_fields=changed)
    LabStep.objects.filter(lab=lab).exclude(order__in=[step.order for step in plan.steps]).delete()
    inactive = plan.image.name if not plan.image.active else ""
    return ImportOutcome(slug=lab.slug, created=plan.created, lab_id=lab.pk, directory=plan.spec.directory,
                         steps=len(plan.steps), new_images=new_images, inactive_image=inactive,
                         notes=tuple(plan.notes))


def _audit(outcomes: list[ImportOutcome], allow_privileged: bool) -> None:
    """One "lab.import" entry per lab, by the system (the command runs on the server's shell)."""
    labs = Lab.objects.in_bulk([outcome.lab_id for outcome in outcomes])
    for outcome in outcomes:
        record("lab.import", target=labs[outcome.lab_id], extra={
            "created": outcome.created, "source": str(outcome.directory), "allow_privileged": allow_privileged,
            "notes": list(outcome.notes)})


def import_labs(paths: Iterable[Path], *, dry_run: bool = False, allow_privileged: bool = False) -> list[ImportOutcome]:
    """Import (create or update by slug) every lab found under ``paths``.

    Every lab is read and checked first; if anything is wrong a LabImportError lists all
    problems and the database is left untouched. Otherwise all labs are written in one
    transaction. ``dry_run`` does everything, then rolls the transaction back. A lab that
    asks for a privilege (labs/privileges.py) is refused unless ``allow_privileged``.
    """
    # A wrong path does not stop the others from being checked: all problems come out at once.
    directories, problems = _discover(paths)
    specs: list[LabSpec] = []
    for directory in directories:
        try:
            spec = load_lab(directory)
        except LabImportError as exc:
            problems.extend(exc.problems)
            continue
        specs.append(spec)
        problems.extend(_storage_problems(spec))
        if not allow_privileged:
            problems.extend(_privilege_problems(spec))
    problems.extend(_check_batch(specs))

    # Checks that read the database run inside the transaction that writes, so what was
    # checked is what gets written.
    with transaction.atomic():
        images = _resolve_images(specs, problems)
        plans = [_plan(spec, images[spec.image_name], problems) for spec in specs if spec.image_name in images]
        if problems:
            raise LabImportError(problems)
        outcomes = [_write(plan) for plan in plans]
        _audit(outcomes, allow_privileged)
        if dry_run:
            transaction.set_rollback(True)
    return outcomes
