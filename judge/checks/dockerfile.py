"""`dockerfile`: static analysis of the learner's Dockerfile (and .dockerignore), on the platform.

    - kind: dockerfile
      path: Dockerfile                  # relative to the workspace (default)
      context: .                        # the build context (default: the Dockerfile's folder)
      min_stages: 2                     # stage count limits
      max_stages: 3
      base_images: ["labs/python:3.11*"]            # globs every external FROM must match
      final_base_images: ["labs/python:3.11-slim"]  # ... the image the final stage is built on
      dependencies_first: true          # the manifest is copied and installed before the source
      manifests: ["requirements*.txt"]  # what counts as a dependency manifest (this default)
      pip_no_cache_dir: true            # pip installs in the final image keep no download cache
      dockerignore: true                # a .dockerignore exists; or a mapping:
      #   {excludes: [local.env, .git/config], includes: [app.py]}  paths it must leave out / keep
      non_root: true                    # the final stage ends with a USER that is not root
      healthcheck: true                 # the final image has a HEALTHCHECK
      exec_form_cmd: true               # CMD/ENTRYPOINT use the JSON (exec) form

The files are read through the runner and judged here, so nothing the learner runs in the
session can change the verdict: this check is tamper-resistant.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from judge.checks.base import CheckContext, CheckKind, CheckOutcome, text_of
from judge.checks.dockerfile_parser import (
    Dockerfile,
    Instruction,
    copy_sources,
    env_pairs,
    parse,
    shell_commands,
)
from judge.checks.dockerignore import is_excluded, parse_dockerignore
from judge.checks.options import Option, Problem
from runners.base import clean_workspace_path

# Options that judge the Dockerfile itself (the rest is about files next to it).
DOCKERFILE_RULES = ("min_stages", "max_stages", "base_images", "final_base_images", "dependencies_first",
                    "pip_no_cache_dir", "non_root", "healthcheck", "exec_form_cmd")
DEFAULT_MANIFESTS = ("requirements*.txt", "constraints*.txt")
MAX_ERRORS_SHOWN = 5
_PIP_RE = re.compile(r"^pip[0-9.]*$")
_PYTHON_RE = re.compile(r"^python[0-9.]*$")
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_WRAPPERS = frozenset({"sudo", "env", "nice", "time", "exec", "command", "nohup"})
_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})


@dataclass
class PipInstall:
    instruction: Instruction
    requirements: list[str]
    no_cache_dir: bool


def pip_install_args(words: list[str]) -> tuple[list[str], bool] | None:
    """For one simple command: (pip's arguments after `install`, inline PIP_NO_CACHE_DIR), or None."""
    inline_no_cache = False
    index = 0
    while index < len(words):
        word = words[index]
        if _ASSIGNMENT_RE.match(word):
            key, _, value = word.partition("=")
            if key == "PIP_NO_CACHE_DIR" and value.lower() not in _FALSE_VALUES:
                inline_no_cache = True
        elif posixpath.basename(word) in _WRAPPERS or (word.startswith("-") and index > 0
                                                        and posixpath.basename(words[index - 1]) in _WRAPPERS):
            pass
        else:
            break
        index += 1
    words = words[index:]
    if not words:
        return None
    program = posixpath.basename(words[0])
    if _PIP_RE.match(program):
        rest = words[1:]
    elif program == "uv" and words[1:2] == ["pip"]:
        rest = words[2:]
    elif _PYTHON_RE.match(program):
        try:
            at = words.index("-m")
        except ValueError:
            at = -1
        if at >= 0 and words[at + 1: at + 2] == ["pip"]:
            rest = words[at + 2:]
        elif "-mpip" in words:
            rest = words[words.index("-mpip") + 1:]
        else:
            return None
    else:
        return None
    for position, word in enumerate(rest):
        if not word.startswith("-"):
            return (rest[position + 1:], inline_no_cache) if word == "install" else None
    return None


def requirement_files(args: list[str]) -> list[str]:
    found: list[str] = []
    for index, word in enumerate(args):
        if word in ("-r", "--requirement") and index + 1 < len(args):
            found.append(args[index + 1])
        elif word.startswith("--requirement="):
            found.append(word.split("=", 1)[1])
        elif word.startswith("-r") and len(word) > 2 and not word.startswith("--"):
            found.append(word[2:])
    return found


def pip_installs(instruction: Instruction) -> list[PipInstall]:
    if instruction.keyword != "RUN":
        return []
    installs = []
    for words in shell_commands(instruction.command_text()):
        parsed = pip_install_args(words)
        if parsed is None:
            continue
        args, inline_no_cache = parsed
        no_cache = inline_no_cache or any(a == "--no-cache-dir" or a.startswith("--no-cache-dir=") for a in args)
        installs.append(PipInstall(instruction=instruction, requirements=requirement_files(args),
                                   no_cache_dir=no_cache))
    return installs


def _cleans_pip_cache(instruction: Instruction) -> bool:
    """A RUN that removes pip's cache itself (or purges it) leaves nothing in its layer."""
    for words in shell_commands(instruction.command_text()):
        if len(words) >= 3 and words[1] == "cache" and _PIP_RE.match(posixpath.basename(words[0])) \
                and words[2] == "purge":
            return True
        if words and posixpath.basename(words[0]) == "rm" and any(".cache" in word for word in words[1:]):
            return True
    return False


def _cache_mounted(instruction: Instruction) -> bool:
    return any("type=cache" in value for value in instruction.flag_values("mount"))


def _is_manifest(source: str, manifests: list[str]) -> bool:
    name = posixpath.basename(source.rstrip("/"))
    return bool(name) and any(fnmatch.fnmatchcase(name, pattern) for pattern in manifests)


def _image_matches(reference: str, globs: list[str]) -> bool:
    candidates = {reference, reference.lower()}
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        candidates.add(f"{reference}:latest")
    for prefix in ("docker.io/", "docker.io/library/", "library/"):
        if reference.startswith(prefix):
            candidates.add(reference[len(prefix):])
    return any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates for pattern in globs)


def _shown(instruction: Instruction, limit: int = 60) -> str:
    text = str(instruction)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DockerfileCheck(CheckKind):
    kind = "dockerfile"
    tamper_resistant = True
    options = {
        "path": Option("str"),
        "context": Option("str"),
        "min_stages": Option("int", min=1, max=50),
        "max_stages": Option("int", min=1, max=50),
        "base_images": Option("str_list"),
        "final_base_images": Option("str_list"),
        "dependencies_first": Option("bool"),
        "manifests": Option("str_list"),
        "pip_no_cache_dir": Option("bool"),
        "dockerignore": Option("bool_or_mapping", fields={
            "excludes": Option("str_list"),
            "includes": Option("str_list"),
        }),
        "non_root": Option("bool"),
        "healthcheck": Option("bool"),
        "exec_form_cmd": Option("bool"),
    }
    hints = {
        "dockerfile_missing": "Create a file named exactly `Dockerfile` (capital D, no extension) in the workspace.",
        "dockerfile_invalid": "Fix the lines named in the message; `docker build` stops at the same places.",
        "single_stage": "Start a second stage with another FROM line and copy only what runs into it with "
                        "`COPY --from=<stage>`.",
        "too_few_stages": "Split the build into more stages, each starting with its own FROM line.",
        "too_many_stages": "Merge stages that do not make the final image smaller.",
        "base_image_not_allowed": "Use one of the base images this lab provides (they are already in your engine).",
        "final_base_not_allowed": "The last FROM decides what ships: start the final stage from the small image.",
        "dependencies_not_installed": "Install the dependencies from the manifest: "
                                      "`RUN pip install --no-cache-dir -r requirements.txt`.",
        "manifest_not_copied": "Copy the manifest in before installing from it: `COPY requirements.txt .`.",
        "copy_before_install": "Copy only requirements.txt, run pip install, and copy the rest of the code after: "
                               "then a code change keeps the install step cached.",
        "pip_cache_not_disabled": "Add `--no-cache-dir` to `pip install` so its download cache stays out of the layer.",
        "dockerignore_missing": "Create a `.dockerignore` next to the Dockerfile listing what the build must not see.",
        "dockerignore_incomplete": "Add a pattern for it to `.dockerignore` (e.g. `*.env`, `.git`, `**/__pycache__`).",
        "dockerignore_excludes_needed": "A pattern (or a missing `!` exception) leaves out a file the image needs.",
        "runs_as_root": "Create an unprivileged user (`RUN useradd --system app`) and switch to it with `USER app`.",
        "healthcheck_missing": "Add a `HEALTHCHECK CMD ...` that probes the app, e.g. its /health route.",
        "cmd_shell_form": 'Use the JSON form, e.g. `CMD ["python", "app.py"]`, so the app is PID 1 and gets signals.',
    }

    def check_spec(self, spec: dict[str, Any], lab_dir: Any) -> list[Problem]:
        problems: list[Problem] = []
        for key in ("path", "context"):
            if key in spec:
                try:
                    clean_workspace_path(spec[key])
                except Exception as exc:
                    problems.append(((key,), str(exc)))
        if spec.get("min_stages", 1) > spec.get("max_stages", 50):
            problems.append((("max_stages",), "must not be less than min_stages"))
        return problems

    def default_title(self, spec: dict[str, Any]) -> str:
        if not any(spec.get(rule) for rule in DOCKERFILE_RULES):
            return ".dockerignore review"
        return f"{spec.get('path', 'Dockerfile')} review"

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        outcome = CheckOutcome()
        path = clean_workspace_path(spec.get("path", "Dockerfile"))
        if spec.get("dockerignore") and not any(spec.get(rule) for rule in DOCKERFILE_RULES):
            # Only the .dockerignore is asked about (e.g. a step before the Dockerfile exists).
            context = clean_workspace_path(spec["context"]) if "context" in spec else posixpath.dirname(path)
            self._dockerignore(ctx, outcome, context, spec["dockerignore"])
            return outcome
        data = ctx.read_file(path)
        if data is None:
            outcome.fail("dockerfile_missing", f"There is no {path} in the workspace.")
            return outcome
        dockerfile = parse(text_of(data))
        outcome.metrics["dockerfile.stages"] = len(dockerfile.stages)
        if dockerfile.errors:
            shown = "; ".join(str(error) for error in dockerfile.errors[:MAX_ERRORS_SHOWN])
            more = len(dockerfile.errors) - MAX_ERRORS_SHOWN
            outcome.fail("dockerfile_invalid", f"{path}: {shown}{f' (and {more} more)' if more > 0 else ''}.")
            if not dockerfile.stages:
                return outcome
        self._stages(outcome, dockerfile, spec)
        self._base_images(outcome, dockerfile, spec)
        if spec.get("dependencies_first"):
            self._dependencies_first(outcome, dockerfile, list(spec.get("manifests") or DEFAULT_MANIFESTS))
        if spec.get("pip_no_cache_dir"):
            self._pip_no_cache(outcome, dockerfile)
        if spec.get("dockerignore"):
            context = clean_workspace_path(spec["context"]) if "context" in spec else posixpath.dirname(path)
            self._dockerignore(ctx, outcome, context, spec["dockerignore"])
        if spec.get("non_root"):
            self._non_root(outcome, dockerfile)
        if spec.get("healthcheck"):
            self._healthcheck(outcome, dockerfile)
        if spec.get("exec_form_cmd"):
            self._exec_form(outcome, dockerfile)
        return outcome

    # -- the rules ---------------------------------------------------------------------

    @staticmethod
    def _stages(outcome: CheckOutcome, dockerfile: Dockerfile, spec: dict[str, Any]) -> None:
        count = len(dockerfile.stages)
        low, high = spec.get("min_stages"), spec.get("max_stages")
        if low is not None and count < low:
            if count == 1:
                outcome.fail("single_stage", f"The Dockerfile has a single stage; this lab asks for at least {low}: "
                                             "one to build, one that ships.")
            else:
                outcome.fail("too_few_stages", f"The Dockerfile has {count} stages; this lab asks for at least {low}.")
        if high is not None and count > high:
            outcome.fail("too_many_stages", f"The Dockerfile has {count} stages; this lab allows at most {high}.")

    @staticmethod
    def _base_images(outcome: CheckOutcome, dockerfile: Dockerfile, spec: dict[str, Any]) -> None:
        allowed = spec.get("base_images")
        if allowed:
            for stage in dockerfile.stages:
                if stage.parent is None and stage.base != "scratch" and not _image_matches(stage.base, allowed):
                    outcome.fail("base_image_not_allowed",
                                 f"Line {stage.line}: FROM {stage.base} is not available here; "
                                 f"use {' or '.join(allowed)}.")
        final_allowed = spec.get("final_base_images")
        final = dockerfile.final_stage
        if final_allowed and final is not None:
            root = dockerfile.root_base(final)
            if not _image_matches(root, final_allowed):
                outcome.fail("final_base_not_allowed",
                             f"The final image is built on {root}; it should be built on {' or '.join(final_allowed)}.")

    @staticmethod
    def _dependencies_first(outcome: CheckOutcome, dockerfile: Dockerfile, manifests: list[str]) -> None:
        installing_stages = 0
        for stage in dockerfile.stages:
            install = next(
                (p for i in stage.instructions for p in pip_installs(i)
                 if any(_is_manifest(r, manifests) for r in p.requirements)),
                None,
            )
            if install is None:
                continue
            installing_stages += 1
            # What the stage inherits from the stages it is built FROM counts too.
            instructions = [i for s in dockerfile.chain(stage) for i in s.instructions]
            before = instructions[: instructions.index(install.instruction)]
            context_copies = [i for i in before if i.keyword in ("COPY", "ADD") and i.flag("from") is None]
            broad = [i for i in context_copies
                     if any(not _is_manifest(source, manifests) for source in copy_sources(i)[0])]
            if broad:
                first = broad[0]
                outcome.fail("copy_before_install",
                             f"Line {first.line} ({_shown(first)}) copies more than the dependency manifest "
                             f"before line {install.instruction.line} installs the dependencies, so every code "
                             "change re-runs the install.")
            elif not context_copies:
                outcome.fail("manifest_not_copied",
                             f"Line {install.instruction.line} installs from {', '.join(install.requirements)}, "
                             "but no COPY brings it into the image before.")
        if installing_stages == 0:
            outcome.fail("dependencies_not_installed",
                         "No RUN installs the dependencies from the manifest (e.g. `pip install -r requirements.txt`).")

    @staticmethod
    def _pip_no_cache(outcome: CheckOutcome, dockerfile: Dockerfile) -> None:
        # Only the stages the final image is built from matter: a build stage's cache is thrown away.
        env: dict[str, str] = {}
        for stage in dockerfile.final_chain():
            for instruction in stage.instructions:
                if instruction.keyword in ("ENV", "ARG"):
                    env.update(env_pairs(instruction))
                    continue
                for install in pip_installs(instruction):
                    disabled = env.get("PIP_NO_CACHE_DIR", "").lower() not in _FALSE_VALUES
                    if install.no_cache_dir or disabled or _cache_mounted(instruction) \
                            or _cleans_pip_cache(instruction):
                        continue
                    outcome.fail("pip_cache_not_disabled",
                                 f"Line {instruction.line}: pip install keeps its download cache in the image "
                                 "(no --no-cache-dir).")

    @staticmethod
    def _dockerignore(ctx: CheckContext, outcome: CheckOutcome, context: str, wanted: bool | dict[str, Any]) -> None:
        path = posixpath.join(context, ".dockerignore") if context else ".dockerignore"
        data = ctx.read_file(path)
        if data is None:
            outcome.fail("dockerignore_missing", f"There is no {path}: everything in the folder, local.env and "
                                                 "notes included, is sent to the build.")
            return
        if not isinstance(wanted, dict):
            return
        patterns = parse_dockerignore(text_of(data))
        for item in wanted.get("excludes") or []:
            if not is_excluded(item, patterns):
                outcome.fail("dockerignore_incomplete", f"{path} does not leave out {item}.")
        for item in wanted.get("includes") or []:
            if is_excluded(item, patterns):
                outcome.fail("dockerignore_excludes_needed", f"{path} leaves out {item}, which the image needs.")

    @staticmethod
    def _final_instruction(dockerfile: Dockerfile, *keywords: str) -> Instruction | None:
        found = None
        for stage in dockerfile.final_chain():
            for instruction in stage.instructions:
                if instruction.keyword in keywords:
                    found = instruction
        return found

    def _non_root(self, outcome: CheckOutcome, dockerfile: Dockerfile) -> None:
        user = self._final_instruction(dockerfile, "USER")
        name = user.args.split(":", 1)[0].strip() if user else ""
        if user is None:
            outcome.fail("runs_as_root", "The final image has no USER instruction, so the app runs as root.")
        elif name in ("root", "0", ""):
            outcome.fail("runs_as_root", f"Line {user.line}: USER {user.args} runs the app as root.")

    def _healthcheck(self, outcome: CheckOutcome, dockerfile: Dockerfile) -> None:
        check = self._final_instruction(dockerfile, "HEALTHCHECK")
        if check is None:
            outcome.fail("healthcheck_missing", "The final image has no HEALTHCHECK instruction.")
        elif check.args.split(None, 1)[0].upper() == "NONE":
            outcome.fail("healthcheck_missing", f"Line {check.line}: HEALTHCHECK NONE turns the health check off.")

    def _exec_form(self, outcome: CheckOutcome, dockerfile: Dockerfile) -> None:
        for keyword in ("CMD", "ENTRYPOINT"):
            instruction = self._final_instruction(dockerfile, keyword)
            if instruction is not None and not instruction.exec_form:
                outcome.fail("cmd_shell_form", f"Line {instruction.line}: {keyword} uses the shell form, so the app "
                                               "is not PID 1 and does not get the SIGTERM of `docker stop`.")
