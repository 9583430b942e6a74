"""A Dockerfile parser for static checks: instructions with their lines, flags and forms; stages.

It follows the Dockerfile reference closely enough to judge learners' files:

- parser directives at the top (``# escape=`` changes the line-continuation character);
- comments are lines whose first non-blank character is ``#``, also inside a continued
  instruction; blank lines inside a continuation are skipped;
- a line ending in the escape character continues on the next line;
- heredocs (``RUN <<EOF`` ... ``EOF``) are collected with their instruction;
- leading ``--name=value`` flags (``COPY --from=build``, ``RUN --mount=...``);
- the JSON (exec) form of RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD, VOLUME and HEALTHCHECK CMD;
- ``FROM [--platform=P] IMAGE [AS NAME]`` starts a stage; ``ARG``s before the first FROM
  are substituted into FROM lines (``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:+alt}``).

Problems (no FROM, unknown instructions, a malformed FROM) are collected in ``errors``
rather than raised, so a check can report all of them with line numbers.

Why not the PyPI package ``dockerfile-parse`` (2.0.1, compared on the same Dockerfiles): it
gives each instruction's lines and raw value and follows ``# escape=``, but it reads a heredoc's
body as instructions of their own (``RUN <<EOF`` / ``pip install ...`` becomes RUN, PIP, ...,
EOF), ends a continuation at a blank line, keeps ``--from``/``--mount``/``--platform`` flags
inside the value, has no JSON (exec) form (the shell/exec-form CMD rule needs it), no stages
(``parent_images`` lists ``FROM builder`` as an image, with no link to the ``builder`` stage),
garbles ``${VAR:-default}`` in FROM (``python:3.11-:-slim}``), and reports no errors (an
unknown instruction or RUN before FROM passes silently). The judge needs all of these.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})  # fmt: skip
FLAG_INSTRUCTIONS = frozenset({"ADD", "COPY", "FROM", "HEALTHCHECK", "RUN"})
JSON_INSTRUCTIONS = frozenset({"ADD", "CMD", "COPY", "ENTRYPOINT", "RUN", "SHELL", "VOLUME"})
HEREDOC_INSTRUCTIONS = frozenset({"ADD", "COPY", "RUN"})

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_FLAG_RE = re.compile(r"^--([a-zA-Z][a-zA-Z0-9-]*)(?:=(\"[^\"]*\"|'[^']*'|\S*))?(?:\s+|$)")
_HEREDOC_RE = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class ParseError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the text after the keyword and its flags, continuation lines joined
    line: int  # 1-based line of the keyword
    end_line: int
    flags: list[tuple[str, str | None]] = field(default_factory=list)
    json_args: list[str] | None = None  # the exec form, when given
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (marker, body)

    def flag(self, name: str) -> str | None:
        """The last value given for ``--name`` ("" for a flag without value), or None."""
        found = None
        for key, value in self.flags:
            if key == name:
                found = "" if value is None else value
        return found

    def flag_values(self, name: str) -> list[str]:
        return ["" if value is None else value for key, value in self.flags if key == name]

    @property
    def exec_form(self) -> bool:
        return self.json_args is not None

    def words(self) -> list[str]:
        """The arguments split as a shell would (best effort), or the JSON form's items."""
        if self.json_args is not None:
            return list(self.json_args)
        return split_words(self.args)

    def command_text(self) -> str:
        """What a RUN executes: the shell text, or the exec form joined, plus heredoc bodies."""
        text = " ".join(shlex.quote(word) for word in self.json_args) if self.json_args is not None else self.args
        for _marker, body in self.heredocs:
            text += "\n" + body
        return text

    def __str__(self) -> str:
        return f"{self.keyword} {self.args}".strip()


@dataclass
class Stage:
    index: int
    from_instruction: Instruction
    base: str  # after ARG substitution
    name: str | None
    parent: int | None  # index of an earlier stage this one is built FROM, if any
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def line(self) -> int:
        return self.from_instruction.line

    def label(self) -> str:
        return f"stage {self.name!r}" if self.name else f"stage {self.index + 1}"


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    stages: list[Stage]
    global_args: dict[str, str | None]
    escape: str = "\\"
    errors: list[ParseError] = field(default_factory=list)

    @property
    def final_stage(self) -> Stage | None:
        return self.stages[-1] if self.stages else None

    def stage_named(self, ref: str) -> Stage | None:
        """The stage a ``FROM`` or ``COPY --from`` refers to, by name or number."""
        for stage in self.stages:
            if stage.name is not None and stage.name.lower() == ref.lower():
                return stage
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None

    def chain(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it is built FROM, root first (not COPY --from sources)."""
        found = [stage]
        while found[0].parent is not None:
            found.insert(0, self.stages[found[0].parent])
        return found

    def final_chain(self) -> list[Stage]:
        final = self.final_stage
        return self.chain(final) if final else []

    def root_base(self, stage: Stage) -> str:
        """The external image at the bottom of ``stage``'s chain."""
        return self.chain(stage)[0].base


def split_words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:  # an unbalanced quote: still judge what is there
        return text.split()


def substitute(text: str, variables: dict[str, str | None]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = variables.get(name)
        operator = match.group(2)
        if operator == ":-":
            return value if value else match.group(3)
        if operator == ":+":
            return match.group(3) if value else ""
        return value or ""

    return _VAR_RE.sub(replace, text)


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    """Parser directives at the very top; returns them and the index of the first other line."""
    found: dict[str, str] = {}
    for index, line in enumerate(lines):
        match = _DIRECTIVE_RE.match(line.strip()) if line.strip().startswith("#") else None
        if match is None or match.group(1).lower() in found:
            return found, index
        found[match.group(1).lower()] = match.group(2)
    return found, len(lines)


def _take_flags(keyword: str, text: str) -> tuple[list[tuple[str, str | None]], str]:
    flags: list[tuple[str, str | None]] = []
    if keyword not in FLAG_INSTRUCTIONS:
        return flags, text
    while True:
        match = _FLAG_RE.match(text)
        if match is None:
            return flags, text
        value = match.group(2)
        if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        flags.append((match.group(1).lower(), value))
        text = text[match.end():]


def _json_form(text: str) -> list[str] | None:
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None  # Docker runs it through the shell instead, as written
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def parse(text: str) -> Dockerfile:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    directives, index = _directives(lines)
    escape = directives.get("escape", "\\")
    errors: list[ParseError] = []
    if escape not in ("\\", "`"):
        errors.append(ParseError(1, f"invalid escape directive {escape!r} (use \\ or `)"))
        escape = "\\"
    instructions: list[Instruction] = []
    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start = index + 1
        parts: list[str] = []
        current = raw.rstrip()
        # Join continuation lines; comment and blank lines inside a continuation are skipped.
        while current.endswith(escape):
            parts.append(current[: -len(escape)])
            index += 1
            while index < len(lines) and (not lines[index].strip() or lines[index].strip().startswith("#")):
                index += 1
            if index >= len(lines):
                current = ""
                break
            current = lines[index].rstrip()
        parts.append(current)
        end = index + 1
        index += 1
        joined = "".join(parts).strip()
        pieces = re.split(r"\s+", joined, maxsplit=1)
        keyword = pieces[0].upper()
        rest = pieces[1].strip() if len(pieces) > 1 else ""
        if keyword not in INSTRUCTIONS:
            errors.append(ParseError(start, f"unknown instruction {keyword!r}"))
            continue
        flags, rest = _take_flags(keyword, rest)
        instruction = Instruction(keyword=keyword, args=rest.strip(), line=start, end_line=end, flags=flags)
        if keyword in JSON_INSTRUCTIONS:
            instruction.json_args = _json_form(rest)
        elif keyword == "HEALTHCHECK":
            head, _, cmd = rest.partition(" ")
            if head.upper() == "CMD":
                instruction.json_args = _json_form(cmd)
        if keyword in HEREDOC_INSTRUCTIONS and instruction.json_args is None:
            for match in _HEREDOC_RE.finditer(rest):
                strip_tabs, marker = match.group(1) == "-", match.group(3)
                body: list[str] = []
                while index < len(lines):
                    line = lines[index].lstrip("\t") if strip_tabs else lines[index]
                    index += 1
                    if line == marker:
                        break
                    body.append(line)
                else:
                    errors.append(ParseError(start, f"heredoc {marker} is never closed"))
                instruction.heredocs.append((marker, "\n".join(body)))
                instruction.end_line = index
        instructions.append(instruction)
    return _stages(instructions, escape, errors)


def _stages(instructions: list[Instruction], escape: str, errors: list[ParseError]) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = split_words(instruction.args)
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                errors.append(ParseError(instruction.line, "FROM takes an image and optionally `AS name`"))
                words = words[:1] if words else ["scratch"]
            base = substitute(words[0], global_args)
            name = words[2] if len(words) == 3 else None
            parent = None
            for earlier in stages:
                if earlier.name is not None and earlier.name.lower() == base.lower():
                    parent = earlier.index
            stages.append(Stage(index=len(stages), from_instruction=instruction, base=base, name=name,
                                parent=parent))
        elif not stages:
            if instruction.keyword == "ARG":
                for word in split_words(instruction.args):
                    key, sep, value = word.partition("=")
                    global_args[key] = value if sep else global_args.get(key)
            else:
                errors.append(ParseError(instruction.line, f"{instruction.keyword} before the first FROM "
                                                           "(only ARG may come before it)"))
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        errors.append(ParseError(1, "no FROM instruction: a Dockerfile must start from an image"))
    return Dockerfile(instructions=instructions, stages=stages, global_args=global_args, escape=escape,
                      errors=errors)


# --------------------------------------------------------------------------------------
# Reading what instructions mean


def env_pairs(instruction: Instruction) -> dict[str, str]:
    """The variables an ENV (or ARG with defaults) sets: ``K=V K2="V 2"`` or legacy ``K V``."""
    words = split_words(instruction.args)
    if not words:
        return {}
    if instruction.keyword == "ENV" and "=" not in words[0]:
        key, _, value = instruction.args.partition(" ")
        return {key: value.strip()}
    pairs: dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        pairs[key] = value
    return pairs


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """(sources, destination) of a COPY or ADD, heredoc sources left out."""
    words = instruction.words()
    if len(words) < 2:
        return [], words[0] if words else ""
    heredoc_markers = {f"<<{marker}" for marker, _ in instruction.heredocs} | {
        f"<<-{marker}" for marker, _ in instruction.heredocs
    }
    sources = [word for word in words[:-1] if word not in heredoc_markers]
    return sources, words[-1]


SHELL_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", ";;", "(", ")", "|&"})


def shell_commands(text: str) -> list[list[str]]:
    """Split shell text into simple commands (words), at ;, &&, ||, | and newlines."""
    commands: list[list[str]] = []
    for line in text.split("\n"):
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
        except ValueError:
            tokens = line.split()
        current: list[str] = []
        for token in tokens:
            if token in SHELL_SEPARATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands
