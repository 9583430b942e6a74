"""Import Killercoda scenarios: a loader for labs.labformat's registry (marker ``index.json``).

A Killercoda scenario directory::

    index.json            {"title", "description", "details": {...}, "backend": {"imageid": ...}}
    intro.md, step1/text.md, step1/verify.sh, finish.md, ...
    assets/               files copied into the environment (details.assets)

is read into a format-neutral LabSpec, then imported like any lab (``manage.py import_lab``):

=====================================  =========================================================
Killercoda                             here
=====================================  =========================================================
title / description                    Lab.title / Lab.summary (cut to 300 characters)
details.intro.text                     Lab.description
details.intro.background / foreground  Lab.intro_background_script (runs as root when the session
                                       starts) / Lab.intro_foreground_script (runs in the learner's
                                       first terminal): judge/steps.py
details.steps[].title / text           LabStep.title / body
details.steps[].verify (script)        LabStep.verify = [{"kind": "script", "script": <text>,
                                       "user": "root"}]: passes on exit status 0, shows the output
details.steps[].background             LabStep.background_script (runs as root when the step starts)
details.steps[].foreground             LabStep.foreground_script (runs in the learner's first
                                       terminal when the step starts)
details.finish.text                    Lab.finish_text (shown once every step passed)
details.assets.hostNN[]                Lab.assets [{"file": "assets/<file>", "target", "chmod",
                                       "host": "hostNN"}]: copied at start to any absolute target
                                       (~ is root's home), owned by root (labs/assets.py); a
                                       file the scenario lists but lacks is a warning
(always)                               Lab.source_format = "killercoda", Lab.shell_user = "root":
                                       the learner is root, /root is the workspace
backend.imageid                        LAB_KILLERCODA_IMAGES: the local Image, and for each id
                                       whether it has a Docker engine (docker_access) and its
                                       hosts (kubernetes-kubeadm-2nodes: controlplane, node01)
interface.layout "ide"/"editor…"       consoles terminal + editor (otherwise terminal only)
=====================================  =========================================================

Re-importing a scenario keeps what staff changed in the admin since the last import (runner,
resources, network, times...) unless the scenario changed that value too.

Markdown actions are converted for labs/markdown.py (see ``mark_lab_actions`` there):
```` `cmd`{{exec}} ````, ```` `cmd`{{exec interrupt}} ````, ```` `text`{{copy}} ```` and fenced
blocks closed by ``{{exec}}`` / ``{{copy}}`` become fenced blocks with the info string
``exec``, ``exec-interrupt`` or ``copy``; ``{{TRAFFIC_HOST1_8080}}`` becomes a ``preview:8080``
link (inside code: ``http://localhost:8080``) and 8080 joins the lab's exposed ports.

Problems (missing files, wrong types, an image id with no local image) refuse the import with
``index.json: details.steps[1].text: ...`` messages. Every file is read as untrusted input
(labs/source_files.py: size limits, no symbolic links out, UTF-8, nesting), and the assets
are held to ``ASSET_MAX_BYTES`` each and ``LAB_IMPORT_MAX_ASSETS_BYTES`` together.
Features with no equivalent here (finish scripts, ``courseData``, unknown keys, other
placeholders, assets for a host the session does not have) are not dropped silently: each is
logged as a warning (``labs.killercoda``), which ``import_lab`` prints.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils.text import slugify

from labs.assets import ASSET_MAX_BYTES, KILLERCODA, AssetPathError, asset_directory, valid_chmod
from labs.labformat import (
    LOADERS,
    ImageDefinition,
    LabImportError,
    LabProblem,
    LabSpec,
    Location,
    StepSpec,
)
from labs.models import Lab, LabStep
from labs.source_files import MAX_DEPTH, SourceFileError, inside, read_text
from webserver import bounded_json

log = logging.getLogger(__name__)

MARKER = "index.json"
TOP_KEYS = frozenset({"title", "description", "details", "backend", "interface", "difficulty", "time"})
DETAILS_KEYS = frozenset({"intro", "steps", "finish", "assets"})
STEP_KEYS = frozenset({"title", "text", "verify", "background", "foreground"})
PAGE_KEYS = frozenset({"text", "background", "foreground"})
ASSET_KEYS = frozenset({"file", "target", "chmod"})
HOST_ID = re.compile(r"^host(\d\d)$")
VERIFY_USER = "root"
SHELL_USER = "root"
DIFFICULTIES = {
    "beginner": "beginner", "easy": "beginner",
    "intermediate": "intermediate", "medium": "intermediate",
    "advanced": "advanced", "hard": "advanced",
}
# The Lab fields a scenario sets; the rest (network, runner, resources, times) are defaults, and
# a privilege staff granted one of them in the admin is kept on re-import (labs/privileges.py).
GIVEN_FIELDS = frozenset({"title", "summary", "description", "difficulty", "exposed_ports", "consoles",
                          "finish_text", "assets", "docker_access", "hosts", "shell_user",
                          "intro_background_script", "intro_foreground_script"})
DEFAULT_CONSOLES = ["terminal"]
EDITOR_CONSOLES = ["terminal", "editor"]


class _Missing:
    pass


MISSING: Any = _Missing()


# ---- markdown actions ------------------------------------------------------------------------

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_ACTION = r"\{\{\s*(?P<verb>exec|execute|copy)(?P<options>(?:\s+[A-Za-z0-9]+)*)\s*\}\}"
_INLINE_ACTION = re.compile(r"(?P<ticks>`+)(?P<code>.+?)(?P=ticks)" + _ACTION)
_TRAFFIC = re.compile(r"\{\{\s*TRAFFIC_HOST(?P<host>\d+)_(?P<port>\d+)\s*\}\}(?P<path>/[^\s)\]\"'<>]*)?")
_TRAFFIC_LINK = re.compile(
    r"(?P<head>\]\(\s*<?)\{\{\s*TRAFFIC_HOST(?P<host>\d+)_(?P<port>\d+)\s*\}\}(?P<path>/[^\s)>]*)?"
)
_LEFTOVER = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_ ]*\s*\}\}")


class Converted:
    """Markdown ready for labs/markdown.py, the preview ports it links to, and what it could not map."""

    def __init__(self) -> None:
        self.text = ""
        self.ports: set[int] = set()
        self.warnings: list[str] = []

    def action(self, verb: str, options: str) -> str:
        words = options.split()
        if verb == "copy":
            for word in words:
                self.warnings.append(f"{{{{copy {word}}}}}: the option {word!r} is not supported; a copy block is used")
            return "copy"
        interrupt = "interrupt" in words
        for word in words:
            if word != "interrupt":
                # Katacoda's "T2" (second terminal) and the like: there is one target here.
                self.warnings.append(f"{{{{exec {word}}}}}: the option {word!r} is not supported; it runs "
                                     f"in the terminal the learner has open")
        return "exec-interrupt" if interrupt else "exec"

    def port(self, host: str, port: str) -> int | None:
        number = int(port)
        if not 1 <= number <= 65535:
            self.warnings.append(f"TRAFFIC_HOST{host}_{port}: not a port number; left as text")
            return None
        if host != "1":
            self.warnings.append(f"TRAFFIC_HOST{host}_{port}: only one host is supported; the link opens "
                                 f"port {number} of the learner's session")
        self.ports.add(number)
        return number


def _fence_for(code: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _block(action: str, code: str) -> list[str]:
    fence = _fence_for(code)
    return ["", f"{fence}{action}", *code.split("\n"), fence, ""]


def _code_traffic(line: str, out: Converted) -> str:
    """Inside code the learner's own environment is meant: the app answers on localhost."""

    def replace(match: re.Match[str]) -> str:
        port = out.port(match.group("host"), match.group("port"))
        if port is None:
            return match.group(0)
        return f"http://localhost:{port}{match.group('path') or ''}"

    return _TRAFFIC.sub(replace, line)


def _text_traffic(line: str, out: Converted) -> str:
    def in_link(match: re.Match[str]) -> str:
        port = out.port(match.group("host"), match.group("port"))
        if port is None:
            return match.group(0)
        return f"{match.group('head')}preview:{port}{match.group('path') or '/'}"

    def bare(match: re.Match[str]) -> str:
        port = out.port(match.group("host"), match.group("port"))
        if port is None:
            return match.group(0)
        path = match.group("path") or "/"
        return f"[port {port}{path if path != '/' else ''}](preview:{port}{path})"

    line = _TRAFFIC_LINK.sub(in_link, line)
    if "TRAFFIC_SELECTOR" in line:
        out.warnings.append("{{TRAFFIC_SELECTOR}}: the port chooser is not supported; use the session's preview tab")
        line = re.sub(r"\{\{\s*TRAFFIC_SELECTOR\s*\}\}", "the web preview", line)
    return _TRAFFIC.sub(bare, line)


def _inline_actions(line: str, out: Converted) -> list[str]:
    """Split a line around `code`{{exec}} spans: each becomes a fenced action block of its own."""
    pieces: list[str] = []
    position = 0
    for match in _INLINE_ACTION.finditer(line):
        before = line[position:match.start()]
        if before.strip() and not re.fullmatch(r"\s*(?:[-*+]|\d+[.)])\s*", before):
            pieces.append(before.rstrip() if position == 0 else before.strip())
        pieces.extend(_block(out.action(match.group("verb"), match.group("options")), match.group("code").strip()))
        position = match.end()
    if not pieces:
        return [line]
    after = line[position:]
    if after.strip():
        pieces.append(after.strip())
    return pieces


def convert_markdown(text: str) -> Converted:
    """Killercoda markdown → markdown for labs/markdown.py; the result's ``text`` holds it."""
    out = Converted()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    result: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _FENCE_OPEN.match(line)
        if opening:
            fence = opening.group("fence")
            closing = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*(?:" + _ACTION
                                 + r")?\s*$")
            end = next((j for j in range(index + 1, len(lines)) if closing.match(lines[j])), None)
            if end is not None:
                body = [_code_traffic(inner, out) for inner in lines[index + 1:end]]
                action_match = closing.match(lines[end])
                assert action_match is not None
                indent = opening.group("indent")
                if action_match.group("verb"):
                    action = out.action(action_match.group("verb"), action_match.group("options") or "")
                    # Fences must start at column 0 for the renderer: indented ones (in lists) move out.
                    code = "\n".join(inner[len(indent):] if inner.startswith(indent) else inner.lstrip()
                                     for inner in body)
                    result.extend(_block(action, code))
                else:
                    result.extend([line, *body, lines[end]])
                index = end + 1
                continue
        for piece in _inline_actions(line, out):
            piece = _text_traffic(piece, out)
            for leftover in _LEFTOVER.findall(piece):
                out.warnings.append(f"{leftover}: not a Killercoda feature this platform supports; left as text")
            result.append(piece)
        index += 1
    out.text = re.sub(r"\n{3,}", "\n\n", "\n".join(result)).strip("\n")
    return out


# ---- index.json --------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


class _Reader:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / MARKER
        self.display = str(self.path)
        self.problems: list[LabProblem] = []
        self.warnings: list[str] = []

    def where(self, field: str = "") -> Location:
        return Location(self.display, None, field)

    def error(self, field: str, message: str) -> None:
        self.problems.append(LabProblem(self.where(field), message))

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(f"{self.display}: {field}: {message}" if field else f"{self.display}: {message}")

    def parse(self) -> Any:
        try:
            raw = read_text(self.path, self.directory).removeprefix("\ufeff")
        except SourceFileError as exc:
            self.problems.append(LabProblem(Location(self.display, exc.line), f"the file {exc.message}"))
            return MISSING

        def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            data: dict[str, Any] = {}
            for key, value in pairs:
                if key in data:
                    self.error(key, "duplicate key")
                data[key] = value
            return data

        try:
            return bounded_json.loads(raw, max_depth=MAX_DEPTH, object_pairs_hook=no_duplicates)
        except bounded_json.JSONInputError as exc:
            self.problems.append(LabProblem(Location(self.display, exc.line), f"invalid JSON: {exc.message}"))
            return MISSING

    def mapping(self, value: Any, field: str, *, required: bool = False) -> dict[str, Any] | Any:
        if value is MISSING:
            if required:
                self.error(field, "is required")
            return MISSING
        if not isinstance(value, dict):
            self.error(field, f"must be an object (got {_describe(value)})")
            return MISSING
        return value

    def unknown(self, data: dict[str, Any], allowed: frozenset[str], field: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{field}.{key}" if field else key
                self.warn(where, "not supported here; ignored")

    def string(self, data: dict[str, Any], key: str, field: str, *, required: bool = False,
               max_length: int | None = None) -> str | Any:
        value = data.get(key, MISSING)
        where = f"{field}.{key}" if field else key
        if value is MISSING:
            if required:
                self.error(where, "is required")
                return MISSING
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            self.error(where, f"must be a non-empty string (got {_describe(value)})")
            return MISSING
        if max_length is not None and len(value) > max_length:
            self.error(where, f"must be at most {max_length} characters (it has {len(value)})")
            return MISSING
        return value

    def text_file(self, data: dict[str, Any], key: str, field: str, *, required: bool = False,
                  keep_blank: bool = False) -> str | Any:
        """The contents of a file named relative to the scenario directory, which it must stay inside."""
        relative = self.string(data, key, field, required=required)
        if relative is MISSING or relative == "":
            return relative
        where = f"{field}.{key}"
        target = self.directory / relative
        if Path(relative).is_absolute() or not inside(target, self.directory):
            self.error(where, f"must be a path inside the scenario directory (got {relative!r})")
            return MISSING
        if not target.is_file():
            self.error(where, f"file not found: {target}")
            return MISSING
        try:
            text = read_text(target, self.directory).removeprefix("\ufeff")
        except SourceFileError as exc:
            self.error(where, f"{target} {exc.message}")
            return MISSING
        if not keep_blank and not text.strip():
            self.error(where, f"{target} is empty")
            return MISSING
        return text

    def markdown(self, data: dict[str, Any], key: str, field: str, ports: set[int], *,
                 required: bool = False) -> str | Any:
        text = self.text_file(data, key, field, required=required)
        if text is MISSING or text == "":
            return text
        converted = convert_markdown(text)
        ports.update(converted.ports)
        for warning in dict.fromkeys(converted.warnings):
            self.warn(f"{field}.{key}", warning)
        return converted.text


def _assets_size(reader: _Reader, field: str, matches: list[Path]) -> int | None:
    """The bytes of an asset's files, or None after reporting one that leads outside or is too large."""
    size = 0
    for path in matches:
        if not inside(path, reader.directory):
            reader.error(field, f"{path} leads outside the scenario directory (through a symbolic link)")
            return None
        try:
            file_size = path.stat().st_size
        except OSError as exc:
            reader.error(field, f"cannot read {path}: {exc.strerror}")
            return None
        if file_size > ASSET_MAX_BYTES:
            reader.error(field, f"{path} is {file_size} bytes; an asset may be at most {ASSET_MAX_BYTES} bytes")
            return None
        size += file_size
    return size


def _model_default(name: str) -> Any:
    return Lab._meta.get_field(name).get_default()  # type: ignore[union-attr]


class KillercodaLoader:
    """Killercoda scenarios (index.json); see the module docstring for the mapping."""

    name = "killercoda"
    marker = MARKER

    def detect(self, directory: Path) -> bool:
        """An index.json that mentions "details" or "backend": other tools' index.json files are not labs."""
        index = directory / self.marker
        if not index.is_file():
            return False
        try:
            with index.open("rb") as handle:
                head = handle.read(1 << 20)
        except OSError:
            return False
        return b'"details"' in head or b'"backend"' in head

    def load(self, directory: Path) -> LabSpec:
        reader = _Reader(directory)
        data = reader.parse()
        if data is not MISSING:
            data = reader.mapping(data, "", required=True)
        if data is MISSING:
            raise LabImportError(reader.problems)
        reader.unknown(data, TOP_KEYS | {"courseData"}, "")
        ports: set[int] = set()

        slug = slugify(directory.resolve().name)[: Lab._meta.get_field("slug").max_length]
        if not slug:
            reader.error("", f"cannot make a lab slug from the directory name {directory.resolve().name!r}")
        title = reader.string(data, "title", "", required=True, max_length=Lab._meta.get_field("title").max_length)
        summary = reader.string(data, "description", "")
        summary_limit = Lab._meta.get_field("summary").max_length or 300
        if isinstance(summary, str) and len(summary) > summary_limit:
            reader.warn("description", f"longer than {summary_limit} characters; cut for the lab's summary")
            summary = summary[: summary_limit - 1].rstrip() + "…"

        backend = self._backend(reader, data)
        details = reader.mapping(data.get("details", MISSING), "details", required=True)
        description = finish_text = ""
        intro_scripts = {"background": "", "foreground": ""}
        steps: list[StepSpec] = []
        assets: list[dict[str, str]] = []
        if details is not MISSING:
            reader.unknown(details, DETAILS_KEYS | {"courseData"}, "details")
            if "courseData" in details or "courseData" in data:
                reader.warn("details.courseData", "Katacoda's courseData script is not supported; it does not run")
            description, intro_scripts = self._page(reader, details, "intro", ports)
            finish_text, _ = self._page(reader, details, "finish", ports)
            steps = self._steps(reader, details, ports)
            assets = self._assets(reader, details, len(backend.get("hosts") or []) or 1)
        image_name = str(backend.get("image", ""))
        consoles = self._consoles(reader, data)
        difficulty = self._difficulty(reader, data)
        if "time" in data:
            reader.warn("time", "the estimated time is not imported; the session length is ttl_minutes "
                                f"({_model_default('ttl_minutes')} minutes) unless staff change it")

        for warning in reader.warnings:
            log.warning("%s", warning)
        if reader.problems:
            raise LabImportError(reader.problems)

        fields: dict[str, Any] = {
            "title": title,
            "summary": summary,
            "description": description,
            "difficulty": difficulty,
            "runner": _model_default("runner"),
            "network_mode": _model_default("network_mode"),
            "exposed_ports": sorted(ports),
            "consoles": consoles,
            "dind_images": [],
            "judge": [],
            "finish_text": finish_text,
            "assets": assets,
            "source_format": KILLERCODA,
            "published": True,
            "docker_access": bool(backend.get("docker_access", False)),
            "record_terminal": False,
            "shell_user": SHELL_USER,
            "hosts": list(backend.get("hosts") or []),
            "intro_background_script": intro_scripts["background"],
            "intro_foreground_script": intro_scripts["foreground"],
        }
        for name in ("cpu", "memory_mb", "pids_limit", "disk_mb", "ttl_minutes", "max_extensions",
                     "extension_minutes", "idle_timeout_minutes", "auto_delete_minutes"):
            fields[name] = _model_default(name)
        display = reader.display
        return LabSpec(
            directory=directory,
            slug=slug,
            fields=fields,
            image_name=image_name,
            image_definition=(ImageDefinition(name=image_name, kind="container", reference=backend["reference"],
                                              description="The host Killercoda scenarios run on.")
                              if backend.get("reference") else None),
            tags=[],
            steps=steps,
            locate=lambda key: _locate(display, key),
            given=GIVEN_FIELDS,
            keep_admin_edits=True,
        )

    # -- parts of index.json ------------------------------------------------------------------

    @staticmethod
    def _page(reader: _Reader, details: dict[str, Any], key: str, ports: set[int]) -> tuple[str, dict[str, str]]:
        """intro or finish: its text file as markdown, and (the intro's) background and foreground scripts."""
        scripts = {"background": "", "foreground": ""}
        page = reader.mapping(details.get(key, MISSING), f"details.{key}")
        if page is MISSING:
            return "", scripts
        field = f"details.{key}"
        reader.unknown(page, PAGE_KEYS, field)
        for script in ("background", "foreground"):
            if script not in page:
                continue
            if key != "intro":
                reader.warn(f"{field}.{script}", f"scripts of the {key} page are not supported; it does not run")
                continue
            text = reader.text_file(page, script, field)
            if isinstance(text, str):
                scripts[script] = text
        text = reader.markdown(page, "text", field, ports)
        return (text if isinstance(text, str) else ""), scripts

    @staticmethod
    def _steps(reader: _Reader, details: dict[str, Any], ports: set[int]) -> list[StepSpec]:
        raw = details.get("steps", MISSING)
        if raw is MISSING:
            reader.error("details.steps", "is required: a list of steps, each with a title and a text file")
            return []
        if not isinstance(raw, list) or not raw:
            reader.error("details.steps", f"must be a non-empty list of steps (got {_describe(raw)})")
            return []
        title_limit = LabStep._meta.get_field("title").max_length
        steps = []
        for index, item in enumerate(raw):
            field = f"details.steps[{index}]"
            step = reader.mapping(item, field)
            if step is MISSING:
                continue
            reader.unknown(step, STEP_KEYS, field)
            title = reader.string(step, "title", field, max_length=title_limit) or f"Step {index + 1}"
            body = reader.markdown(step, "text", field, ports, required=True)
            verify = reader.text_file(step, "verify", field)
            background = reader.text_file(step, "background", field)
            foreground = reader.text_file(step, "foreground", field)
            values = (title, body, verify, background, foreground)
            if any(value is MISSING for value in values):
                continue
            steps.append(StepSpec(
                title=title,
                body=body,
                # Killercoda's verify scripts run as root (and read /root): so do they here.
                verify=[{"kind": "script", "script": verify, "user": VERIFY_USER}] if verify else [],
                background_script=background,
                foreground_script=foreground,
            ))
        return steps

    @staticmethod
    def _assets(reader: _Reader, details: dict[str, Any], host_count: int) -> list[dict[str, str]]:
        raw = reader.mapping(details.get("assets", MISSING), "details.assets")
        if raw is MISSING:
            return []
        assets: list[dict[str, str]] = []
        total = 0
        for host, items in raw.items():
            field = f"details.assets.{host}"
            number = HOST_ID.match(host)
            if number is None:
                reader.error(field, "hosts are named host01, host02, …")
                continue
            if int(number.group(1)) > host_count:
                reader.warn(field, f"the session has {host_count} host{'s' if host_count != 1 else ''} "
                                   f"(backend.imageid); these assets are not copied")
                continue
            if not isinstance(items, list):
                reader.error(field, f"must be a list of assets (got {_describe(items)})")
                continue
            for index, item in enumerate(items):
                here = f"{field}[{index}]"
                asset = reader.mapping(item, here)
                if asset is MISSING:
                    continue
                reader.unknown(asset, ASSET_KEYS, here)
                file = reader.string(asset, "file", here, required=True)
                target = reader.string(asset, "target", here, required=True)
                chmod = reader.string(asset, "chmod", here)
                if MISSING in (file, target, chmod):
                    continue
                relative = f"assets/{file}"
                if Path(file).is_absolute() or not inside(reader.directory / relative, reader.directory):
                    reader.error(f"{here}.file", f"must name a file inside the assets directory (got {file!r})")
                    continue
                matches = [path for path in reader.directory.glob(relative) if path.is_file()]
                if not matches:
                    reader.warn(f"{here}.file", f"file not found: {reader.directory / relative}; this asset is "
                                                "not copied")
                    continue
                size = _assets_size(reader, f"{here}.file", matches)
                if size is None:
                    continue
                total += size
                try:
                    asset_directory(target)
                except AssetPathError as exc:
                    reader.error(f"{here}.target", str(exc))
                    continue
                if not valid_chmod(chmod):
                    reader.error(f"{here}.chmod", f"must be a chmod mode such as +x or 0644 (got {chmod!r})")
                    continue
                assets.append({"file": relative, "target": target, "chmod": chmod, "host": host})
        limit = settings.LAB_IMPORT_MAX_ASSETS_BYTES
        if total > limit:
            reader.error("details.assets", f"the assets add up to {total} bytes; a scenario's may add up to at most "
                                           f"{limit} bytes (LAB_IMPORT_MAX_ASSETS_BYTES)")
        return assets

    @staticmethod
    def _backend(reader: _Reader, data: dict[str, Any]) -> dict[str, Any]:
        """What LAB_KILLERCODA_IMAGES says about the scenario's backend.imageid, as a mapping."""
        backend = reader.mapping(data.get("backend", MISSING), "backend", required=True)
        if backend is MISSING:
            return {}
        reader.unknown(backend, frozenset({"imageid"}), "backend")
        image_id = reader.string(backend, "imageid", "backend", required=True)
        if image_id is MISSING:
            return {}
        images: dict[str, Any] = settings.LAB_KILLERCODA_IMAGES
        if image_id not in images:
            known = ", ".join(sorted(images)) or "none"
            reader.error("backend.imageid", f"no local image for the Killercoda image {image_id!r}; map it in "
                                            f"LAB_KILLERCODA_IMAGES (mapped now: {known})")
            return {}
        mapped = images[image_id]
        found = {"image": mapped} if isinstance(mapped, str) else dict(mapped)
        if found.get("note"):
            reader.warn("backend.imageid", f"{image_id!r}: {found['note']}")
        return found

    @staticmethod
    def _consoles(reader: _Reader, data: dict[str, Any]) -> list[str]:
        interface = reader.mapping(data.get("interface", MISSING), "interface")
        if interface is MISSING:
            return list(DEFAULT_CONSOLES)
        reader.unknown(interface, frozenset({"layout"}), "interface")
        layout = interface.get("layout", "")
        if not isinstance(layout, str):
            reader.warn("interface.layout", f"must be a string (got {_describe(layout)}); the terminal is used")
            return list(DEFAULT_CONSOLES)
        if "ide" in layout or "editor" in layout:
            return list(EDITOR_CONSOLES)
        if layout and layout != "terminal":
            reader.warn("interface.layout", f"layout {layout!r} is not supported; the terminal is used")
        return list(DEFAULT_CONSOLES)

    @staticmethod
    def _difficulty(reader: _Reader, data: dict[str, Any]) -> str:
        value = data.get("difficulty", MISSING)
        if value is MISSING:
            return str(_model_default("difficulty"))
        if isinstance(value, str) and value.strip().lower() in DIFFICULTIES:
            return DIFFICULTIES[value.strip().lower()]
        reader.warn("difficulty", f"{_describe(value)} is not a known difficulty; beginner is used")
        return str(_model_default("difficulty"))


def _locate(display: str, key: str) -> Location:
    """Database-side errors ("lab.title", "step.2.body", "lab.image") pointed back into index.json."""
    scope, _, rest = key.partition(".")
    if scope == "lab":
        fields = {"title": "title", "summary": "description", "description": "details.intro.text",
                  "image": "backend.imageid", "finish_text": "details.finish.text", "assets": "details.assets",
                  "intro_background_script": "details.intro.background",
                  "intro_foreground_script": "details.intro.foreground", "hosts": "backend.imageid",
                  "docker_access": "backend.imageid"}
        return Location(display, None, fields.get(rest, rest))
    if scope == "image":
        return Location(display, None, "backend.imageid")
    if scope == "step":
        index, _, name = rest.partition(".")
        names = {"body": "text", "verify": "verify", "background_script": "background",
                 "foreground_script": "foreground", "title": "title"}
        suffix = f".{names.get(name, name)}" if name else ""
        return Location(display, None, f"details.steps[{index}]{suffix}")
    return Location(display)


LOADERS.append(KillercodaLoader())
