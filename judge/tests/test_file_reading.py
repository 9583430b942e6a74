"""How the judge reads workspace files on the Docker runner: through the engine, confined to /workspace.

labs/busybox has no USER, so its learner is root: they can make any symlink, replace any program
and even the workspace itself. The `file` and `dockerfile` checks must still see only what is in
the workspace. The last test covers the runners without an engine to ask (the base class's
defaults), on the local runner.
"""

from __future__ import annotations

import os
import uuid

import pytest

from judge.checks import CheckContext, get_kind
from judge.tests.judge_env import (
    environment,
    reset_workspace,
)
from runners.base import RunnerError, SessionSpec
from runners.local import LocalRunner

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def busybox_env():
    with environment("labs/busybox:latest") as env:
        yield env


@pytest.fixture
def ctx(busybox_env):
    runner, state = busybox_env
    reset_workspace(runner, state, {"app.py": b"print('hello')\n", "sub/keep": b""})
    return CheckContext(runner, state)


def learner(ctx: CheckContext, script: str) -> None:
    """Run ``script`` in the session as its learner (root here)."""
    result = ctx.runner.exec(ctx.state, ["sh", "-c", script])
    assert result.ok, result.stderr


def codes(ctx: CheckContext, spec: dict) -> list[str]:
    kind = get_kind(spec["kind"])
    assert kind is not None and kind.validate(spec) == []
    return [failure.code for failure in kind.finish(kind.run(ctx, spec), spec).failures]


def test_symlinks_are_followed_only_while_they_stay_inside_the_workspace(ctx):
    learner(ctx, "cd /workspace && ln -s app.py link && ln -s ../app.py sub/up && ln -s /workspace/sub dir && "
                 "ln -s /etc/passwd leak && ln -s /etc etc && ln -s sub/../../etc/passwd climb && "
                 "ln -s /tmp/hop hop && ln -s /workspace/app.py /tmp/hop && "
                 "ln -s loop2 loop1 && ln -s loop1 loop2 && ln -s /gone dangling")
    # Inside: followed, also through a directory link and a hop outside that lands back inside.
    for path in ("link", "sub/up", "dir/up", "hop"):
        assert codes(ctx, {"kind": "file", "path": path, "contains": "hello"}) == [], path
    found = ctx.runner.stat_file(ctx.state, "dir/up")
    assert found is not None and found.path == "app.py" and found.is_file
    # Outside, looping or dangling: there is no such file, and nothing outside is read.
    for path in ("leak", "etc/passwd", "climb", "loop1", "dangling"):
        assert codes(ctx, {"kind": "file", "path": path, "contains": "root"}) == ["file_missing"], path
        assert codes(ctx, {"kind": "file", "path": path, "exists": False}) == [], path
        assert ctx.read_file(path) is None
        with pytest.raises(RunnerError):
            ctx.runner.read_file_untrusted(ctx.state, path)
    assert codes(ctx, {"kind": "file", "path": "etc", "type": "directory"}) == ["file_missing"]
    assert codes(ctx, {"kind": "dockerfile", "path": "leak", "non_root": True}) == ["dockerfile_missing"]


def test_modes_come_from_the_engine_with_their_special_bits(ctx):
    learner(ctx, "chmod 4750 /workspace/app.py && chmod 1777 /workspace/sub")
    assert codes(ctx, {"kind": "file", "path": "app.py", "mode": "4750"}) == []
    assert codes(ctx, {"kind": "file", "path": "sub", "type": "directory", "mode": "1777"}) == []
    assert codes(ctx, {"kind": "file", "path": "app.py", "mode": "0750"}) == ["file_mode_mismatch"]


def test_the_workspace_cannot_be_replaced_where_it_is_the_session_disk(ctx):
    assert ctx.state.get("disk"), "the Docker runner gives this session a disk of its own here"
    attempt = ctx.runner.exec(ctx.state, ["sh", "-c", "mv /workspace /workspace-real"])
    assert not attempt.ok and b"busy" in attempt.stderr.lower()
    assert codes(ctx, {"kind": "file", "path": "app.py", "contains": "hello"}) == []


@pytest.fixture(scope="module")
def diskless_env():
    """A session without a disk of its own (disk_limit off), where root can replace /workspace itself."""
    with environment("labs/busybox:latest", runner_extra={"disk_limit": "off"}) as env:
        yield env


def test_a_replaced_workspace_has_nothing_in_it(diskless_env):
    runner, state = diskless_env
    ctx = CheckContext(runner, state)
    reset_workspace(runner, state, {"app.py": b"print('hello')\n"})
    learner(ctx, "mv /workspace /workspace-real && ln -s /etc /workspace")
    try:
        assert codes(ctx, {"kind": "file", "path": "passwd"}) == ["file_missing"]
        assert ctx.read_file("passwd") is None
    finally:
        learner(ctx, "rm /workspace && mv /workspace-real /workspace")


def test_big_files_and_fifos_are_not_read(ctx):
    learner(ctx, "mkfifo /workspace/pipe")
    with pytest.raises(RunnerError, match="larger than 4 bytes"):
        ctx.runner.read_file_untrusted(ctx.state, "app.py", max_bytes=4)
    assert ctx.runner.read_file_untrusted(ctx.state, "app.py") == b"print('hello')\n"
    # A FIFO exists, is no directory, and has no text to find (the engine never blocks on it).
    assert codes(ctx, {"kind": "file", "path": "pipe"}) == []
    assert codes(ctx, {"kind": "file", "path": "pipe", "contains": "x"}) == ["file_content_mismatch"]


def test_on_the_local_runner_files_are_read_on_the_host_and_the_mode_in_the_sandbox(tmp_path, settings):
    if not os.access("/usr/bin/bwrap", os.X_OK):
        pytest.fail("bubblewrap is required for this test: apt-get install bubblewrap")
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    runner = LocalRunner("local", {"root": str(tmp_path)})
    state = runner.start(SessionSpec(session_id=uuid.uuid4().hex, user_id=7, username="olivia", lab_slug="tiny",
                                     image="local", memory_mb=256, network_mode="none")).state
    try:
        ctx = CheckContext(runner, state)
        runner.write_file(state, "bin/run.sh", b"#!/bin/sh\necho hi\n")
        assert runner.exec(state, ["sh", "-c", "chmod 0750 bin/run.sh && ln -s /etc/passwd leak"]).ok
        found = runner.stat_file(state, "bin/run.sh")  # the base class's default, from list_files
        assert found is not None and found.is_file and found.mode is None
        assert codes(ctx, {"kind": "file", "path": "bin/run.sh", "contains": "^echo hi$", "mode": "0750"}) == []
        assert codes(ctx, {"kind": "file", "path": "bin/run.sh", "mode": "0755"}) == ["file_mode_mismatch"]
        assert codes(ctx, {"kind": "file", "path": "bin", "type": "directory"}) == []
        # A link out of the workspace exists here, but what it points at is never read.
        assert codes(ctx, {"kind": "file", "path": "leak", "contains": "root"}) == ["file_content_mismatch"]
    finally:
        runner.stop(state, timeout=2)


# a learner who replaces the session's programs ------------------------------------------------------------

DOCKERFILE = 'FROM labs/busybox:latest\nCMD ["sh"]\n'
FAKE_CAT = "#!/bin/sh\nprintf 'FROM scratch\\nUSER app\\nHEALTHCHECK CMD true\\n'\n"
# Answers what the old in-session file reading asked: `stat -c %a`, `-c %s` and `-c '%F|%s|%Y|%n'`.
FAKE_STAT = ('#!/bin/sh\nfor a; do last=$a; done\n'
             'case "$*" in *%F*) echo "regular file|20|0|$last" ;; *%s*) echo 20 ;; *) echo 755 ;; esac\n')


@pytest.fixture(scope="module")
def debian_env():
    with environment("labs/base:bookworm") as env:
        yield env


@pytest.fixture
def liar_ctx(debian_env):
    """A learner who is root (as in a Killercoda-style lab) writes their files, then puts a lying
    `cat` and `stat` into /usr/local/bin, the first directory of every PATH there (the judge's
    too). In that order: the runner's own file writing uses `cat` too. (labs/base has coreutils;
    busybox's shell would run its own applets and never look at PATH.)"""
    runner, state = debian_env
    reset_workspace(runner, state, {"Dockerfile": DOCKERFILE.encode(), "app.py": b"print('hello')\n",
                                    ".fakes/cat": FAKE_CAT.encode(), ".fakes/stat": FAKE_STAT.encode()})
    runner.exec(state, ["chmod", "0644", "/workspace/app.py"])
    planted = runner.exec(state, ["sh", "-c", "cp /workspace/.fakes/cat /workspace/.fakes/stat /usr/local/bin/ && "
                                              "chmod 0755 /usr/local/bin/cat /usr/local/bin/stat"], user="root")
    assert planted.ok, planted.stderr
    yield CheckContext(runner, state)
    runner.exec(state, ["rm", "-f", "/usr/local/bin/cat", "/usr/local/bin/stat"], user="root")


def test_the_file_and_dockerfile_checks_see_the_truth_when_cat_and_stat_lie(liar_ctx):
    ctx = liar_ctx
    # Armed: programs run in the session, the judge's own commands included, now lie.
    assert ctx.exec(["cat", "/workspace/Dockerfile"]).stdout.startswith(b"FROM scratch\nUSER app")
    assert ctx.exec(["stat", "-c", "%a", "/workspace/app.py"]).stdout.strip() == b"755"
    assert ctx.runner.read_file(ctx.state, "Dockerfile").startswith(b"FROM scratch")  # the editor's reading
    # The judge reads through the engine.
    assert ctx.read_file("Dockerfile") == DOCKERFILE.encode()
    assert codes_of(run_check(ctx, {"kind": "file", "path": "Dockerfile", "contains": "^USER app$"})) == [
        "file_content_mismatch"]
    assert codes_of(run_check(ctx, {"kind": "file", "path": "Dockerfile", "contains": "^FROM labs/busybox"})) == []
    mode = run_check(ctx, {"kind": "file", "path": "app.py", "mode": "0755"})
    assert codes_of(mode) == ["file_mode_mismatch"] and "has mode 0644" in mode.failures[0].message
    assert codes_of(run_check(ctx, {"kind": "file", "path": "ghost.txt"})) == ["file_missing"]
    verdict = run_check(ctx, {"kind": "dockerfile", "non_root": True, "healthcheck": True})
    assert sorted(codes_of(verdict)) == ["healthcheck_missing", "runs_as_root"]


def run_check(ctx: CheckContext, spec: dict):
    kind = get_kind(spec["kind"])
    assert kind is not None and kind.validate(spec) == []
    return kind.finish(kind.run(ctx, spec), spec)


def codes_of(outcome) -> list[str]:
    return [failure.code for failure in outcome.failures]
