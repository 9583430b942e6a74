"""Helpers for the judge tests: real environments started with the Docker runner, shared by a module.

Starting a Docker-in-Docker session (its engine, the preloaded images) takes seconds, so
each test module starts one environment with the runner directly and every test gets a
Session row pointing at it, with a workspace reset to the files the test needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest
from django.conf import settings

from judge.models import Attempt
from labs.labformat import import_labs
from labs.models import Lab
from runners import get_runner, reset_cache
from runners.base import Runner, SessionSpec
from runners.docker import DockerRunner
from sessions_app.models import Session, State

DEMO = Path(settings.BASE_DIR) / "labs" / "demo_catalog"
RUNNER_ALIAS = "docker-judge"


def require_engine() -> None:
    try:
        docker.from_env().ping()
    except Exception as exc:
        pytest.fail(f"the Docker engine is required for these tests: {exc}")


def require_images(*references: str) -> None:
    client = docker.from_env()
    for reference in references:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {reference} is missing: run deploy/scripts/build-images.sh")


def runner_options(instance: str) -> dict[str, object]:
    return {"instance": instance, "preload_cache": str(Path(settings.DATA_DIR) / "preload")}


def start_environment(instance: str, image: str, *, docker_access: bool = False, dind_images: tuple[str, ...] = (),
                      starter_dir: Path | None = None, memory_mb: int = 256,
                      runner_extra: dict[str, object] | None = None) -> tuple[DockerRunner, dict]:
    runner = DockerRunner(RUNNER_ALIAS, {**runner_options(instance), **(runner_extra or {})})
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="judge-tests", lab_slug="judge-tests",
                       image=image, docker_access=docker_access, dind_images=dind_images,
                       starter_dir=str(starter_dir) if starter_dir else None, memory_mb=memory_mb,
                       pids_limit=2048 if docker_access else 256, cpu=2.0 if docker_access else 1.0)
    started = runner.start(spec, timeout=240)
    return runner, started.state


@contextmanager
def environment(image: str, *, preload: tuple[str, ...] = (), **options) -> Iterator[tuple[DockerRunner, dict]]:
    """A running environment of `image` on a label of its own (the engine and images are required,
    with `preload` copied into a DinD engine); removed on exit."""
    require_engine()
    require_images(image, *preload)
    runner, state = start_environment(f"labst{uuid.uuid4().hex[:6]}", image, dind_images=preload, **options)
    try:
        yield runner, state
    finally:
        stop_environment(runner, state)


def stop_environment(runner: Runner, state: dict) -> None:
    runner.stop(state, timeout=2)
    for env in runner.list_managed():
        runner.remove_managed(env)


def use_runner(settings_fixture, instance: str) -> None:
    """Point the alias the labs use at the module's environment (the attempt job looks it up)."""
    settings_fixture.LAB_RUNNERS = {
        **settings_fixture.LAB_RUNNERS,
        RUNNER_ALIAS: {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": runner_options(instance)},
    }
    reset_cache()


def reset_workspace(runner: Runner, state: dict, files: dict[str, bytes]) -> None:
    """Empty the workspace and write ``files`` (relative path -> bytes) as the session's user."""
    result = runner.exec(state, ["sh", "-c", "find /workspace -mindepth 1 -maxdepth 1 -exec rm -rf {} +"], timeout=30)
    assert result.ok, result.stderr
    for path, data in files.items():
        runner.write_file(state, path, data)


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def import_demo(slug: str) -> Lab:
    import_labs([DEMO / slug])
    lab = Lab.objects.get(slug=slug)
    lab.runner = RUNNER_ALIAS
    lab.save(update_fields=["runner"])
    return lab


def running_session(user, lab: Lab, state: dict) -> Session:
    return Session.objects.create(user=user, lab=lab, state=State.RUNNING, runner_name=RUNNER_ALIAS,
                                  runner_state=state)


def lab_images(slug: str) -> tuple[str, ...]:
    import yaml

    return tuple(yaml.safe_load((DEMO / slug / "lab.yaml").read_text())["dind_images"])


def start_lab_environment(instance: str, slug: str) -> tuple[DockerRunner, dict]:
    """A DinD environment as the demo lab gets it: its images preloaded, its starter files copied."""
    require_engine()
    images = lab_images(slug)
    require_images("labs/dind:bookworm", *images)
    return start_environment(instance, "labs/dind:bookworm", docker_access=True, dind_images=images,
                             starter_dir=DEMO / slug / "files", memory_mb=2048)


def check_files(session: Session, files: dict[str, bytes], step_order: int | None, capture) -> Attempt:
    """Put ``files`` in the workspace, press Check (step or final) and wait for the result."""
    from judge import actions

    runner = get_runner(session.runner_name)
    reset_workspace(runner, session.runner_state, files)
    step = session.lab.steps.get(order=step_order) if step_order is not None else None
    with capture(execute=True):
        attempt = actions.request_check(session, step, session.user)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.DONE, attempt.result
    return attempt


def codes(attempt: Attempt) -> list[str]:
    return [failure["code"] for failure in attempt.result["failures"]]
