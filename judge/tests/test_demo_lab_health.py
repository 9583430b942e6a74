"""The judge of "Dockerfile 1: a Python web app with a health check", on real builds in a DinD session."""

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
SLUG = "dockerfile-1-health"
INSTANCE = f"labst{uuid.uuid4().hex[:6]}"
SOLUTION = tree(DEMO / SLUG / "solution")
STARTER_APP = (DEMO / SLUG / "files" / "app.py").read_bytes()
WORKSPACE = {**tree(DEMO / SLUG / "files"), **SOLUTION}  # the learner's files, done


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
    attempt = check_files(session, WORKSPACE, None, django_capture_on_commit_callbacks)
    assert attempt.passed, attempt.result["failures"]
    assert attempt.result["metrics"]["container.health"] == "healthy"
    assert attempt.result["metrics"]["image_size_mb"] < 250


def test_an_app_without_a_health_route_fails_with_health_route_missing(session, django_capture_on_commit_callbacks):
    attempt = check_files(session, {**WORKSPACE, "app.py": STARTER_APP}, None, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["health_route_missing"]
    assert "answered 404" in attempt.result["failures"][0]["message"]


def test_the_health_step_starts_the_app_itself(session, django_capture_on_commit_callbacks):
    starter = tree(DEMO / SLUG / "files")
    assert codes(check_files(session, starter, 2, django_capture_on_commit_callbacks)) == ["health_route_missing"]
    done = {**starter, "app.py": SOLUTION["app.py"]}
    assert check_files(session, done, 2, django_capture_on_commit_callbacks).passed


def test_the_dockerignore_step_finds_a_missing_or_leaky_file(session, django_capture_on_commit_callbacks):
    files = {path: data for path, data in WORKSPACE.items() if path != ".dockerignore"}
    assert codes(check_files(session, files, 3, django_capture_on_commit_callbacks)) == ["dockerignore_missing"]
    leaky = {**WORKSPACE, ".dockerignore": b".git\n"}
    attempt = check_files(session, leaky, 3, django_capture_on_commit_callbacks)
    assert codes(attempt) == ["dockerignore_incomplete"] * 3
    assert "does not leave out local.env" in attempt.result["failures"][0]["message"]


def test_an_image_that_runs_as_root_fails_the_dockerfile_step(session, django_capture_on_commit_callbacks):
    files = with_dockerfile(WORKSPACE, "USER quotes\n", "")
    assert codes(check_files(session, files, 4, django_capture_on_commit_callbacks)) == ["runs_as_root"]


def test_a_healthcheck_that_cannot_work_in_the_slim_image_is_reported_unhealthy(session,
                                                                               django_capture_on_commit_callbacks):
    text = SOLUTION["Dockerfile"].decode()
    start = text.index("HEALTHCHECK")
    end = text.index("\n\n", start)
    # The slim image has no curl: Docker reports every probe as failed.
    broken = text[:start] + "HEALTHCHECK --interval=1s --timeout=2s --retries=1 \\\n" \
        "    CMD curl -f http://127.0.0.1:8080/health" + text[end:]
    attempt = check_files(session, {**WORKSPACE, "Dockerfile": broken.encode()}, 5,
                          django_capture_on_commit_callbacks)
    assert codes(attempt) == ["container_unhealthy"]


def test_a_missing_healthcheck_fails_the_healthcheck_step(session, django_capture_on_commit_callbacks):
    text = SOLUTION["Dockerfile"].decode()
    start = text.index("# The slim image has no curl")
    end = text.index("\n\n", text.index("HEALTHCHECK"))
    files = {**WORKSPACE, "Dockerfile": (text[:start] + text[end + 2:]).encode()}
    assert codes(check_files(session, files, 5, django_capture_on_commit_callbacks)) == [
        "healthcheck_missing", "healthcheck_missing"]
