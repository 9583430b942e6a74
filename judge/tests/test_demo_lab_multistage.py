"""The judge of "Dockerfile 3: a multi-stage build under 250 MB", on real builds in a DinD session."""

from __future__ import annotations

import uuid

import pytest

from judge.tests.judge_env import (
    DEMO,
    check_files,
    codes,
    import_demo,
    running_session,
    start_lab_environment,
    stop_environment,
    tree,
    use_runner,
)

pytestmark = pytest.mark.docker
SLUG = "dockerfile-3-multistage"
INSTANCE = f"labst{uuid.uuid4().hex[:6]}"
SOLUTION = tree(DEMO / SLUG / "solution")
STARTER = tree(DEMO / SLUG / "files")
BUILD_STAGE = b"""\
FROM labs/python:3.11 AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
"""


@pytest.fixture(scope="module")
def environment():
    runner, state = start_lab_environment(INSTANCE, SLUG)
    yield state
    stop_environment(runner, state)


@pytest.fixture
def session(environment, settings, owner):
    use_runner(settings, INSTANCE)
    lab = import_demo(SLUG)
    lab.unlock_steps_in_order = False  # each test checks the step it is about
    lab.save()
    return running_session(owner, lab, environment)


def test_the_reference_solution_passes_under_250_mb(session, django_capture_on_commit_callbacks):
    attempt = check_files(session, SOLUTION, None, django_capture_on_commit_callbacks)
    assert attempt.passed, attempt.result["failures"]
    assert attempt.result["metrics"]["image_size_mb"] < 250
    assert attempt.result["metrics"]["dockerfile.stages"] == 2


def test_the_single_stage_starter_is_too_big_and_ships_the_toolchain(session, django_capture_on_commit_callbacks):
    attempt = check_files(session, STARTER, None, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["single_stage", "final_base_not_allowed", "image_too_large"]
    assert attempt.result["metrics"]["image_size_mb"] > 250
    assert "this lab's limit is 250 MB" in attempt.result["failures"][2]["message"]


def test_the_build_stage_step_looks_inside_the_built_stage(session, django_capture_on_commit_callbacks):
    files = {**SOLUTION, "Dockerfile": BUILD_STAGE}
    assert check_files(session, files, 2, django_capture_on_commit_callbacks).passed
    no_venv = BUILD_STAGE.replace(b'RUN python -m venv /opt/venv\nENV PATH="/opt/venv/bin:$PATH"\n', b"")
    attempt = check_files(session, {**SOLUTION, "Dockerfile": no_venv}, 2, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["venv_missing"]
