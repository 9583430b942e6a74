"""Whole sessions on the real Docker engine: start, DinD, restarts, engine failures, reconcile."""

from __future__ import annotations

import uuid

import docker
import pytest

from labs.models import Image, Lab
from runners import get_runner, reset_cache
from runners.base import SessionSpec
from runners.docker import LABEL_SESSION
from sessions_app import actions
from sessions_app.models import EndReason, Session, State
from sessions_app.reconcile import reconcile

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_runners(settings, tmp_path):
    instance = f"labst{uuid.uuid4().hex[:6]}"
    settings.DATA_DIR = tmp_path
    settings.LAB_RUNNERS = {
        **settings.LAB_RUNNERS,
        "docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"instance": instance}},
        "docker-down": {
            "BACKEND": "runners.docker.DockerRunner",
            "OPTIONS": {"instance": instance, "base_url": "unix:///nonexistent/docker.sock", "api_timeout": 2},
        },
    }
    reset_cache()
    yield instance
    runner = get_runner("docker")
    for env in runner.list_managed():
        runner.remove_managed(env)
    reset_cache()


def make_lab(reference: str, **fields) -> Lab:
    image, _ = Image.objects.get_or_create(name=reference.replace("/", "-").replace(":", "-"),
                                           defaults={"reference": reference})
    defaults = {"slug": f"lab-{uuid.uuid4().hex[:8]}", "title": "A lab", "image": image, "runner": "docker",
                "memory_mb": 128, "published": True, "consoles": ["terminal"]}
    defaults.update(fields)
    return Lab.objects.create(**defaults)


@pytest.fixture
def start(owner, django_capture_on_commit_callbacks):
    def _start(lab: Lab) -> Session:
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        session.refresh_from_db()
        return session

    return _start


def labelled(engine, session) -> list:
    return engine.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={session.pk}"})


def test_start_then_stop_leaves_nothing_behind(engine, docker_runners, start, django_capture_on_commit_callbacks):
    session = start(make_lab("labs/busybox:latest"))
    assert session.state == State.RUNNING, session.error
    assert [c.id for c in labelled(engine, session)] == [session.runner_state["container_id"]]
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    session.refresh_from_db()
    assert session.state == State.STOPPED
    assert labelled(engine, session) == []
    assert engine.networks.list(filters={"label": f"{LABEL_SESSION}={session.pk}"}) == []


def test_a_restarted_platform_finds_the_running_container_again(engine, docker_runners, start,
                                                                  django_capture_on_commit_callbacks):
    session = start(make_lab("labs/busybox:latest"))
    reset_cache()  # as after a web or worker restart: fresh runner objects, only the row's state
    runner = get_runner(session.runner_name)
    assert runner.exec(session.runner_state, ["echo", "still here"]).stdout == b"still here\n"
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    assert labelled(engine, session) == []


def test_a_missing_image_fails_the_session_with_the_reason(engine, docker_runners, start):
    session = start(make_lab("labs/not-built:1"))
    assert session.state == State.FAILED
    assert "image not found" in session.error
    assert labelled(engine, session) == []


def test_an_unreachable_engine_fails_the_session_clearly_and_leaves_nothing(engine, docker_runners, start):
    session = start(make_lab("labs/busybox:latest", runner="docker-down"))
    assert session.state == State.FAILED
    assert "Docker engine unreachable" in session.error
    assert session.events.filter(level="error", message__contains="unreachable").exists()
    assert labelled(engine, session) == []


def test_reconcile_removes_an_orphan_container(engine, docker_runners, owner):
    runner = get_runner("docker")
    orphan = runner.start(SessionSpec(session_id=str(uuid.uuid4()), user_id=owner.pk, username="o",
                                      lab_slug="x", image="labs/busybox:latest", memory_mb=64))
    report = reconcile()
    assert report.orphans_removed >= 1
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(orphan.state["container_id"])


def test_reconcile_fails_a_session_whose_container_vanished(engine, docker_runners, start):
    session = start(make_lab("labs/busybox:latest"))
    engine.containers.get(session.runner_state["container_id"]).remove(force=True)
    report = reconcile()
    session.refresh_from_db()
    assert report.sessions_failed == 1
    assert (session.state, session.end_reason) == (State.FAILED, EndReason.VANISHED)


def test_docker_in_docker_runs_containers_inside_the_session(engine, docker_runners, start, settings,
                                                              django_capture_on_commit_callbacks):
    settings.LAB_START_TIMEOUT_SECONDS = 180
    session = start(make_lab("labs/dind:bookworm", docker_access=True, memory_mb=1024, pids_limit=2048))
    assert session.state == State.RUNNING, session.error
    messages = list(session.events.values_list("message", flat=True))
    assert "Starting Docker engine" in messages
    runner = get_runner("docker")
    # The learner (not root) runs a container from a preloaded image; no registry involved.
    result = runner.exec(session.runner_state, ["docker", "run", "--rm", "labs/busybox:latest", "echo", "inner"],
                         timeout=60)
    assert result.stdout == b"inner\n", result.stderr
    whoami = runner.exec(session.runner_state, ["id", "-un"])
    assert whoami.stdout.strip() != b"root"
    # Each inner engine is private: an image made in one session does not exist in another's engine.
    assert runner.exec(session.runner_state, ["docker", "tag", "labs/busybox:latest", "only-here:1"]).ok
    other = runner.start(SessionSpec(session_id=str(uuid.uuid4()), user_id=999, username="other", lab_slug="x",
                                     image="labs/dind:bookworm", docker_access=True, memory_mb=1024,
                                     pids_limit=2048), timeout=180)
    try:
        assert runner.exec(other.state, ["docker", "image", "inspect", "labs/busybox:latest"]).ok  # preloaded
        assert not runner.exec(other.state, ["docker", "image", "inspect", "only-here:1"]).ok
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get("only-here:1")  # nor in the host's engine
    finally:
        runner.stop(other.state, timeout=2)
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)
    assert labelled(engine, session) == []
    assert engine.volumes.list(filters={"label": f"{LABEL_SESSION}={session.pk}"}) == []
