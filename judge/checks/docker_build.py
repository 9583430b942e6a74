"""`docker_build`: build the learner's image in the session's own Docker engine.

    - kind: docker_build
      context: .                  # the build context, relative to the workspace (default)
      dockerfile: Dockerfile      # relative to the context (default)
      target: runtime             # build up to this stage
      build_args: {NAME: value}
      no_cache: false
      timeout: 600                # seconds before the build is stopped
      max_seconds: 120            # slower builds fail (build_too_slow)
      max_size_mb: 250            # bigger images fail (image_too_large); 1 MB = 1,000,000 bytes
      min_size_mb: 1

The build runs as the judge user lent the engine socket's group (``judge:<gid>``), detached
inside the session; its log streams into the attempt while it runs. It records
``build.elapsed_seconds`` and ``image_size_mb``. Later ``http`` checks with ``image: built``
run the image it made.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from judge.checks.background import run_streaming
from judge.checks.base import CheckContext, CheckKind, CheckOutcome, JudgeError, text_of
from judge.checks.options import Option, Problem
from runners.base import clean_workspace_path

BUILT_TAG = "labs-judge/build:latest"
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}  # the classic builder: plain logs, no registry lookups
_NOISE_RE = re.compile(r"^(\s*---> |Removing intermediate container|Step \d+/\d+ : )")


def docker_exec_user(ctx: CheckContext) -> str | None:
    """Who runs docker commands: the judge with the socket's group, else the session's user."""
    return ctx.docker_user()


def require_engine(ctx: CheckContext, user: str | None) -> None:
    result = ctx.exec(["docker", "version", "--format", "{{.Server.Version}}"], timeout=20, user=user,
                      resolved=True)
    if not result.ok:
        detail = text_of(result.stderr).strip().splitlines()[-1:] or ["no answer"]
        raise JudgeError(f"the session's Docker engine does not answer the judge ({detail[0]})")


def last_lines(output: str, count: int = 4) -> str:
    """The end of a build log, without the builder's step banners."""
    lines = [line for line in output.strip().splitlines() if line.strip() and not _NOISE_RE.match(line)]
    return "\n".join(lines[-count:])


class DockerBuildCheck(CheckKind):
    kind = "docker_build"
    options = {
        "context": Option("str"),
        "dockerfile": Option("str"),
        "target": Option("str"),
        "build_args": Option("str_map"),
        "no_cache": Option("bool"),
        "timeout": Option("number", min=5, max=3600),
        "max_seconds": Option("number", min=0.1, max=3600),
        "max_size_mb": Option("number", min=0.1),
        "min_size_mb": Option("number", min=0),
    }
    hints = {
        "dockerfile_missing": "Create the Dockerfile first; the build reads it from the workspace.",
        "build_failed": "Run `docker build .` in your terminal: the first error above the last line is the cause.",
        "build_timed_out": "A step may be waiting for input or downloading from a network this lab does not have.",
        "build_too_slow": "Order the Dockerfile so slow steps stay cached, and keep the build context small.",
        "image_too_large": "Ship only what runs: a slim base in the final stage, build tools left in a build stage.",
        "image_too_small": "The image seems to be missing the application; check what the final stage copies.",
    }

    def check_spec(self, spec: dict[str, Any], lab_dir: Any) -> list[Problem]:
        problems: list[Problem] = []
        for key in ("context", "dockerfile"):
            if key in spec:
                try:
                    clean_workspace_path(spec[key])
                except Exception as exc:
                    problems.append(((key,), str(exc)))
        return problems

    def default_title(self, spec: dict[str, Any]) -> str:
        return "docker build"

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        outcome = CheckOutcome()
        context = clean_workspace_path(spec.get("context", "."))
        dockerfile = posixpath.join(context, clean_workspace_path(spec.get("dockerfile", "Dockerfile"))) \
            if context else clean_workspace_path(spec.get("dockerfile", "Dockerfile"))
        exists, is_dir = ctx.file_exists(dockerfile)
        if not exists or is_dir:
            outcome.fail("dockerfile_missing", f"There is no {dockerfile} to build.")
            return outcome
        user = docker_exec_user(ctx)
        require_engine(ctx, user)
        workspace = ctx.runner.workspace
        command = ["docker", "build", "--force-rm", "-f", posixpath.join(workspace, dockerfile), "-t", BUILT_TAG]
        if spec.get("target"):
            command += ["--target", spec["target"]]
        for name, value in (spec.get("build_args") or {}).items():
            command += ["--build-arg", f"{name}={value}"]
        if spec.get("no_cache"):
            command.append("--no-cache")
        command.append(posixpath.join(workspace, context) if context else workspace)
        timeout = float(spec.get("timeout", 600))
        ctx.log(f"$ {' '.join(command)}\n")
        result = run_streaming(ctx, command, user=user, workdir=workspace, timeout=timeout, on_output=ctx.log,
                               environment=BUILD_ENV)
        elapsed = round(result.elapsed, 1)
        outcome.metrics["build.elapsed_seconds"] = elapsed
        outcome.notes["build log"] = result.output
        if result.timed_out:
            outcome.fail("build_timed_out", f"The build was still running after {timeout:g} s and was stopped.")
            return outcome
        if result.exit_code != 0:
            tail = last_lines(result.output)
            outcome.fail("build_failed", f"docker build failed (exit status {result.exit_code})"
                                         f"{': ' + tail if tail else '.'}")
            return outcome
        ctx.log(f"\nBuilt in {elapsed:g} s.\n")
        inspect = ctx.exec(["docker", "image", "inspect", "--format", "{{.Size}} {{.Id}}", BUILT_TAG], timeout=20,
                           user=user, resolved=True)
        fields = text_of(inspect.stdout).split()
        if not inspect.ok or not fields or not fields[0].isdigit():
            raise JudgeError(f"cannot inspect the image just built: {text_of(inspect.stderr).strip()}")
        size_mb = round(int(fields[0]) / 1_000_000, 1)
        outcome.metrics["image_size_mb"] = size_mb
        ctx.shared["image"] = BUILT_TAG
        ctx.log(f"Image size: {size_mb:g} MB.\n")
        if "max_size_mb" in spec and size_mb > float(spec["max_size_mb"]):
            outcome.fail("image_too_large", f"The image is {size_mb:g} MB; this lab's limit is "
                                            f"{float(spec['max_size_mb']):g} MB.")
        if "min_size_mb" in spec and size_mb < float(spec["min_size_mb"]):
            outcome.fail("image_too_small", f"The image is only {size_mb:g} MB (at least "
                                            f"{float(spec['min_size_mb']):g} MB expected).")
        if "max_seconds" in spec and result.elapsed > float(spec["max_seconds"]):
            outcome.fail("build_too_slow", f"The build took {elapsed:g} s; this lab allows "
                                           f"{float(spec['max_seconds']):g} s.")
        return outcome
