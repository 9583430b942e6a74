"""The `dockerfile` check judges the file's content on the platform: each rule and its failure code."""

from __future__ import annotations

import uuid

import pytest
import yaml

from judge.checks import CheckContext
from judge.checks.dockerfile import DockerfileCheck
from judge.tests.judge_env import DEMO
from runners import get_runner
from runners.base import SessionSpec

GOOD = """\
FROM labs/python:3.11-slim
ENV PYTHONUNBUFFERED=1
WORKDIR /app
RUN useradd --system app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
USER app
HEALTHCHECK CMD ["python", "-c", "print(1)"]
CMD ["python", "app.py"]
"""
ALL_RULES = {"kind": "dockerfile", "base_images": ["labs/python:3.11*"], "dependencies_first": True,
             "pip_no_cache_dir": True, "non_root": True, "healthcheck": True, "exec_form_cmd": True,
             "dockerignore": {"excludes": ["local.env", ".git/HEAD"], "includes": ["app.py"]}}


@pytest.fixture
def workspace():
    runner = get_runner("fake")
    state = runner.start(SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="l",
                                     image="x")).state

    def make(files: dict[str, str]) -> CheckContext:
        for path, text in files.items():
            runner.write_file(state, path, text.encode())
        return CheckContext(runner, state)

    return make


def codes(ctx: CheckContext, spec: dict) -> list[str]:
    check = DockerfileCheck()
    assert check.validate(spec) == []
    return [failure.code for failure in check.finish(check.run(ctx, spec), spec).failures]


def with_ignore(dockerfile: str, ignore: str = ".git\n*.env\n") -> dict[str, str]:
    return {"Dockerfile": dockerfile, ".dockerignore": ignore}


def test_a_good_dockerfile_passes_every_rule(workspace):
    assert codes(workspace(with_ignore(GOOD)), ALL_RULES) == []


@pytest.mark.parametrize("slug", ["dockerfile-1-health", "dockerfile-2-layers", "dockerfile-3-multistage"])
def test_each_demo_solution_passes_its_labs_final_review(workspace, slug):
    lab = yaml.safe_load((DEMO / slug / "lab.yaml").read_text())
    spec = next(check for check in lab["judge"] if check["kind"] == "dockerfile")
    solution = DEMO / slug / "solution"
    ctx = workspace({p.name: p.read_text() for p in solution.iterdir() if p.is_file()})
    assert codes(ctx, spec) == []


def test_copying_the_source_before_installing_defeats_the_cache(workspace):
    text = GOOD.replace("COPY requirements.txt .\n", "COPY . .\n")
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "dependencies_first": True}) == [
        "copy_before_install"]


def test_copying_one_code_file_before_installing_is_also_too_early(workspace):
    text = GOOD.replace("COPY requirements.txt .\n", "COPY requirements.txt app.py ./\n")
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "dependencies_first": True}) == [
        "copy_before_install"]


def test_installing_from_a_manifest_that_was_never_copied_is_reported(workspace):
    text = GOOD.replace("COPY requirements.txt .\n", "")
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "dependencies_first": True}) == [
        "manifest_not_copied"]


def test_a_dockerfile_that_never_installs_the_manifest_is_reported(workspace):
    text = GOOD.replace("-r requirements.txt", "humanize")
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "dependencies_first": True}) == [
        "dependencies_not_installed"]


def test_pip_without_no_cache_dir_is_reported_with_its_line(workspace):
    ctx = workspace(with_ignore(GOOD.replace(" --no-cache-dir", "")))
    check = DockerfileCheck()
    outcome = check.run(ctx, {"kind": "dockerfile", "pip_no_cache_dir": True})
    assert [f.code for f in outcome.failures] == ["pip_cache_not_disabled"]
    assert outcome.failures[0].message.startswith("Line 6:")


@pytest.mark.parametrize("variant", [
    "ENV PIP_NO_CACHE_DIR=1\nRUN pip install -r requirements.txt",
    "RUN --mount=type=cache,target=/root/.cache/pip pip install -r requirements.txt",
    "RUN pip install -r requirements.txt && rm -rf /root/.cache/pip",
    "RUN PIP_NO_CACHE_DIR=1 python3 -m pip install -r requirements.txt",
])
def test_other_ways_of_keeping_the_cache_out_are_accepted(workspace, variant):
    text = GOOD.replace("RUN pip install --no-cache-dir -r requirements.txt", variant)
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "pip_no_cache_dir": True}) == []


def test_a_pip_cache_in_a_discarded_build_stage_does_not_count(workspace):
    text = ("FROM labs/python:3.11 AS build\nRUN pip install -r requirements.txt\n"
            "FROM labs/python:3.11-slim\nCOPY --from=build /usr/local /usr/local\n")
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "pip_no_cache_dir": True}) == []


def test_stage_counts_are_held_to_the_limits(workspace):
    ctx = workspace(with_ignore(GOOD))
    assert codes(ctx, {"kind": "dockerfile", "min_stages": 2}) == ["single_stage"]
    three = "FROM a AS one\nFROM b AS two\nFROM c\n"
    ctx = workspace(with_ignore(three))
    assert codes(ctx, {"kind": "dockerfile", "min_stages": 4}) == ["too_few_stages"]
    assert codes(ctx, {"kind": "dockerfile", "max_stages": 2}) == ["too_many_stages"]


def test_base_images_must_be_on_the_allowed_list(workspace):
    text = "FROM python:3.12 AS build\nFROM labs/python:3.11 AS test\nFROM build\n"
    ctx = workspace(with_ignore(text))
    assert codes(ctx, {"kind": "dockerfile", "base_images": ["labs/python:*"]}) == ["base_image_not_allowed"]
    assert codes(ctx, {"kind": "dockerfile", "final_base_images": ["labs/python:3.11-slim"]}) == [
        "final_base_not_allowed"]


def test_a_missing_or_leaky_dockerignore_is_reported(workspace):
    ctx = workspace({"Dockerfile": GOOD})
    assert codes(ctx, {"kind": "dockerfile", "dockerignore": True}) == ["dockerignore_missing"]
    ctx = workspace(with_ignore(GOOD, ignore="*\n"))
    spec = {"kind": "dockerfile", "dockerignore": {"excludes": ["local.env"], "includes": ["app.py"]}}
    assert codes(ctx, spec) == ["dockerignore_excludes_needed"]
    ctx = workspace(with_ignore(GOOD, ignore=".git\n"))
    assert codes(ctx, spec) == ["dockerignore_incomplete"]


def test_a_dockerignore_review_needs_no_dockerfile(workspace):
    ctx = workspace({".dockerignore": "*.env\n"})
    assert codes(ctx, {"kind": "dockerfile", "dockerignore": {"excludes": ["local.env"]}}) == []


@pytest.mark.parametrize("user_lines", ["", "USER root\n", "USER 0:0\n"])
def test_an_image_that_runs_as_root_is_reported(workspace, user_lines):
    text = GOOD.replace("USER app\n", user_lines)
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "non_root": True}) == ["runs_as_root"]


def test_a_user_set_in_a_parent_stage_carries_over(workspace):
    text = "FROM labs/python:3.11-slim AS base\nUSER app\nFROM base\nCMD [\"python\"]\n"
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "non_root": True}) == []


@pytest.mark.parametrize("line", ["", "HEALTHCHECK NONE\n"])
def test_a_missing_or_disabled_healthcheck_is_reported(workspace, line):
    text = GOOD.replace('HEALTHCHECK CMD ["python", "-c", "print(1)"]\n', line)
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "healthcheck": True}) == [
        "healthcheck_missing"]


def test_a_shell_form_cmd_is_reported(workspace):
    text = GOOD.replace('CMD ["python", "app.py"]', "CMD python app.py")
    assert codes(workspace(with_ignore(text)), {"kind": "dockerfile", "exec_form_cmd": True}) == ["cmd_shell_form"]


def test_a_missing_dockerfile_and_syntax_errors_are_reported(workspace):
    assert codes(workspace({}), {"kind": "dockerfile", "non_root": True}) == ["dockerfile_missing"]
    ctx = workspace({"Dockerfile": "FORM labs/python:3.11-slim\n"})
    check = DockerfileCheck()
    outcome = check.run(ctx, {"kind": "dockerfile", "non_root": True})
    assert [f.code for f in outcome.failures] == ["dockerfile_invalid"]
    assert "line 1: unknown instruction 'FORM'" in outcome.failures[0].message


def test_a_lab_may_rename_codes_and_replace_hints(workspace):
    ctx = workspace(with_ignore(GOOD.replace("USER app\n", "")))
    spec = {"kind": "dockerfile", "non_root": True, "codes": {"runs_as_root": "needs_app_user"},
            "hint": "Add USER quotes."}
    check = DockerfileCheck()
    failure = check.finish(check.run(ctx, spec), spec).failures[0]
    assert (failure.code, failure.hint) == ("needs_app_user", "Add USER quotes.")
