"""The judge of "Dockerfile 2: layer order and pip caching", on real builds in a DinD session."""

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
SLUG = "dockerfile-2-layers"
INSTANCE = f"labst{uuid.uuid4().hex[:6]}"
SOLUTION = tree(DEMO / SLUG / "solution")
STARTER = tree(DEMO / SLUG / "files")


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


def with_dockerfile(files: dict[str, bytes], old: str, new: str) -> dict[str, bytes]:
    text = files["Dockerfile"].decode()
    assert old in text
    return {**files, "Dockerfile": text.replace(old, new).encode()}


def test_the_reference_solution_passes_the_final_check(session, django_capture_on_commit_callbacks):
    attempt = check_files(session, SOLUTION, None, django_capture_on_commit_callbacks)
    assert attempt.passed, attempt.result["failures"]
    metrics = attempt.result["metrics"]
    assert metrics["image_size_mb"] < 250
    assert metrics["build.elapsed_seconds"] > 0
    assert metrics["http.status"] == 200
    # The build log was streamed into the attempt, and kept as a note.
    assert "Step 1/" in attempt.log and "Successfully tagged labs-judge/build:latest" in attempt.log
    assert "Successfully built" in attempt.result["notes"]["build log"]


def test_the_starter_copies_the_code_before_installing_and_keeps_pips_cache(session,
                                                                             django_capture_on_commit_callbacks):
    attempt = check_files(session, STARTER, None, django_capture_on_commit_callbacks)
    assert not attempt.passed
    assert codes(attempt) == ["copy_before_install", "pip_cache_not_disabled"]
    [build] = [c for c in attempt.result["checks"] if c["kind"] == "docker_build"]
    assert build["passed"]  # it builds: the problems are about how


def test_pip_without_no_cache_dir_fails_the_cache_step(session, django_capture_on_commit_callbacks):
    files = with_dockerfile(SOLUTION, "pip install --no-cache-dir -r", "pip install -r")
    attempt = check_files(session, files, 3, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["pip_cache_not_disabled"]


def test_the_layer_order_step_passes_with_the_solution(session, django_capture_on_commit_callbacks):
    assert check_files(session, SOLUTION, 2, django_capture_on_commit_callbacks).passed


def test_a_missing_dockerignore_fails_the_final_check(session, django_capture_on_commit_callbacks):
    files = {path: data for path, data in SOLUTION.items() if path != ".dockerignore"}
    attempt = check_files(session, files, None, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["dockerignore_missing"]


def test_a_build_that_fails_reports_it_with_the_log(session, django_capture_on_commit_callbacks):
    files = {**SOLUTION, "requirements.txt": b"humanize==9.9.9\n"}
    attempt = check_files(session, files, 2, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["build_failed"]
    assert "humanize==9.9.9" in attempt.log
    assert "humanize==9.9.9" in attempt.result["failures"][0]["message"]
