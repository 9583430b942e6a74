"""The editor's saves and listings cannot be steered by what a learner puts in their workspace.

A save writes through a temporary name nobody can guess or make beforehand, so a symlink planted
where a predictable temporary file would go never carries the save outside the workspace. A file
named with a newline or a "|" is listed as what it is and never breaks the listing or invents
another entry. Both on the Docker runner (a learner who is root: labs/busybox) and the local one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from runners.base import RunnerError, SessionSpec
from runners.docker import DockerRunner
from runners.local import LocalRunner


@pytest.fixture(scope="module")
def docker_session():
    runner = DockerRunner("docker", {"instance": f"labst{uuid.uuid4().hex[:6]}",
                                     "preload_cache": str(Path(settings.DATA_DIR) / "preload")})
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="editor",
                       image="labs/busybox:latest", memory_mb=64, disk_mb=64, network_mode="none")
    state = runner.start(spec).state
    yield runner, state
    runner.stop(state, timeout=1)


@pytest.fixture
def local_session(tmp_path):
    if not os.access("/usr/bin/bwrap", os.X_OK):
        pytest.fail("bubblewrap is required for this test: apt-get install bubblewrap")
    runner = LocalRunner("local", {"root": str(tmp_path / "sessions"), "disk_root": str(tmp_path / "disks")})
    state = runner.start(SessionSpec(session_id=uuid.uuid4().hex, user_id=1, username="u", lab_slug="editor",
                                     image="local", network_mode="none")).state
    yield runner, state
    runner.stop(state)



@pytest.mark.docker
def test_a_planted_symlink_at_a_temporary_name_never_takes_a_save_outside(docker_session):
    runner, state = docker_session
    # Every name an old-style save could have used, pointing outside the workspace.
    setup = runner.exec(state, ["sh", "-c", "cd /workspace && for n in f.txt.labs-tmp .labs-save.XXXXXX "
                                            ".f.txt.tmp; do ln -sf /tmp/outside-$n $n; done"])
    assert setup.ok, setup.stderr
    runner.write_file(state, "f.txt", b"saved\n")
    assert runner.read_file(state, "f.txt") == b"saved\n"
    outside = runner.exec(state, ["sh", "-c", "ls /tmp | grep -c outside- || true"])
    assert outside.stdout.strip() == b"0", "nothing was written through a planted link"
    runner.exec(state, ["sh", "-c", "cd /workspace && rm -f f.txt f.txt.labs-tmp .labs-save.XXXXXX .f.txt.tmp"])
    # A symlink at the file's own name that leads outside: the save is refused, nothing is written.
    runner.exec(state, ["sh", "-c", "ln -sf /tmp/target /workspace/g.txt"])
    try:
        with pytest.raises(RunnerError, match="outside the workspace"):
            runner.write_file(state, "g.txt", b"mine\n")
        assert not runner.exec(state, ["test", "-e", "/tmp/target"]).ok
    finally:
        runner.exec(state, ["rm", "-f", "/workspace/g.txt"])


@pytest.mark.parametrize("fixture", [pytest.param("docker_session", marks=pytest.mark.docker), "local_session"])
def test_names_with_newlines_and_bars_are_listed_as_they_are(request, fixture):
    runner, state = request.getfixturevalue(fixture)
    # (A trailing newline would be lost to $(...): it is kept by a character appended, then removed.)
    made = runner.exec(state, ["sh", "-c", "cd /workspace && printf x > \"$(printf 'a\\nregular file|1|2|forged')\" "
                                           "&& printf y > 'b|c' && n=$(printf 'ends\\n_') && printf z > \"${n%_}\" "
                                           "&& mkdir d"])
    assert made.ok, made.stderr
    try:
        entries = {entry.path: entry for entry in runner.list_files(state)}
        assert set(entries) == {"a\nregular file|1|2|forged", "b|c", "ends\n", "d"}
        assert entries["a\nregular file|1|2|forged"].size == 1 and not entries["b|c"].is_dir
        assert entries["d"].is_dir
    finally:
        runner.exec(state, ["sh", "-c", "cd /workspace && rm -rf ./a* 'b|c' ./ends* d"])
