"""docker_build and http (image) failure codes and long build logs, in one DinD session.

The session's engine has only labs/busybox (2 MB): every image here is built from it, so
builds take about a second. The checks run as the judge lent the engine socket's group.
"""

from __future__ import annotations

import time

import pytest

from judge.checks import CheckContext, get_kind
from judge.engine import run_checks
from judge.results import NOTE_LIMIT
from judge.tests.judge_env import (
    environment,
    reset_workspace,
)

pytestmark = pytest.mark.docker

BUSYBOX = "labs/busybox:latest"


@pytest.fixture(scope="module")
def dind_env():
    with environment("labs/dind:bookworm", preload=(BUSYBOX,), docker_access=True, memory_mb=768) as env:
        yield env


class Log:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def ctx(dind_env, log):
    runner, state = dind_env
    reset_workspace(runner, state, {})
    context = CheckContext(runner, state, log=log, label="t")
    yield context
    context.run_cleanups()


def dockerfile(ctx: CheckContext, text: str) -> None:
    ctx.runner.write_file(ctx.state, "Dockerfile", text.encode())


def run(ctx: CheckContext, spec: dict):
    kind = get_kind(spec["kind"])
    assert kind is not None and kind.validate(spec) == []
    return kind.finish(kind.run(ctx, spec), spec)


def codes_of(outcome) -> list[str]:
    return [failure.code for failure in outcome.failures]


def in_engine(ctx: CheckContext, *command: str) -> str:
    """A docker command in the session, as the judge runs them."""
    result = ctx.exec(["docker", *command], user=ctx.docker_user(), resolved=True, timeout=30)
    assert result.ok, result.stderr
    return result.stdout.decode().strip()


# docker_build -------------------------------------------------------------------------------

def test_a_build_slower_than_the_lab_allows_is_too_slow(ctx):
    dockerfile(ctx, f"FROM {BUSYBOX}\nRUN sleep 1\n")
    outcome = run(ctx, {"kind": "docker_build", "no_cache": True, "max_seconds": 0.5})
    assert codes_of(outcome) == ["build_too_slow"]
    assert outcome.metrics["build.elapsed_seconds"] >= 1
    assert "this lab allows 0.5 s" in outcome.failures[0].message
    assert outcome.failures[0].hint  # the kind's default hint


def test_an_image_below_the_minimum_size_is_too_small(ctx):
    dockerfile(ctx, f"FROM {BUSYBOX}\n")
    outcome = run(ctx, {"kind": "docker_build", "min_size_mb": 50, "max_size_mb": 100})
    assert codes_of(outcome) == ["image_too_small"]
    assert 0 < outcome.metrics["image_size_mb"] < 50
    assert "(at least 50 MB expected)" in outcome.failures[0].message
    # Within both limits it passes, and later checks can run the image.
    assert codes_of(run(ctx, {"kind": "docker_build", "min_size_mb": 1, "max_size_mb": 100})) == []
    assert ctx.shared["image"] == "labs-judge/build:latest"


def test_a_build_past_its_timeout_is_stopped(ctx):
    dockerfile(ctx, f"FROM {BUSYBOX}\nRUN echo started && sleep 120\n")
    started = time.monotonic()
    outcome = run(ctx, {"kind": "docker_build", "no_cache": True, "timeout": 5})
    assert codes_of(outcome) == ["build_timed_out"]
    assert time.monotonic() - started < 30
    assert "still running after 5 s" in outcome.failures[0].message
    assert "started" in outcome.notes["build log"]
    assert "image_size_mb" not in outcome.metrics
    # The client is gone, and the engine cancels the build's container with it.
    deadline = time.monotonic() + 20
    while in_engine(ctx, "ps", "-q") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert in_engine(ctx, "ps", "-q") == ""
    assert ctx.exec(["sh", "-c", "ps -eo args | grep -c '[d]ocker build'"]).stdout.strip() == b"0"


def test_a_long_build_log_keeps_its_end_in_the_result_and_all_of_it_in_the_stream(ctx, log):
    # About 55,000 characters of log: more than a note keeps.
    dockerfile(ctx, f"FROM {BUSYBOX}\nRUN seq 1 4000 | sed 's/^/build output line /'\n")
    result = run_checks(ctx, [{"kind": "docker_build", "no_cache": True}])
    assert result.passed
    note = result.notes["build log"]
    header, _, kept = note.partition("\n")
    assert len(kept) == NOTE_LIMIT
    dropped = int(header.removeprefix("[… ").split()[0])
    assert header == f"[… {dropped} earlier characters not shown …]" and dropped > 30_000
    assert kept.rstrip().endswith("Successfully tagged labs-judge/build:latest")
    assert "build output line 4000\n" in kept and "build output line 2\n" not in kept
    streamed = log.text()
    assert "build output line 2\n" in streamed and kept in streamed  # the attempt's log has it all


# http with an image ----------------------------------------------------------------------------

def judge_containers(ctx: CheckContext) -> str:
    return in_engine(ctx, "ps", "-a", "-q", "--filter", "label=labs.judge=1")


def test_a_container_that_cannot_start_fails_and_is_removed(ctx):
    outcome = run(ctx, {"kind": "http", "image": BUSYBOX, "command": ["/no/such/program"], "port": 8080})
    assert codes_of(outcome) == ["container_start_failed"]
    assert "docker run labs/busybox:latest failed" in outcome.failures[0].message
    assert "/no/such/program" in outcome.failures[0].message
    assert judge_containers(ctx) == ""


def test_a_container_that_exits_before_answering_is_reported_with_its_log(ctx):
    spec = {"kind": "http", "image": BUSYBOX, "command": "echo cannot bind; exit 3", "port": 8080,
            "wait_seconds": 3}
    outcome = run(ctx, spec)
    assert codes_of(outcome) == ["container_exited"]
    assert "stopped" in outcome.failures[0].message
    assert outcome.notes["container log"] == "cannot bind"
    assert judge_containers(ctx) == ""
