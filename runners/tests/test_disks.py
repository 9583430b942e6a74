"""A session's writes stop at its disk limit: everything it can write is on a disk of its own.

On the Docker runner the workspace, the home, /tmp, /var/tmp and every other directory the learner
may write (and a Docker-in-Docker engine's data) live on one size-limited filesystem per session;
on the local runner, the workspace does. Writing past the limit answers "No space left on
device" in the session, and the host loses no more than the limit.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from runners.base import RunnerError, SessionSpec
from runners.disks import SessionDisks
from runners.docker import DockerRunner
from runners.local import LocalRunner

pytestmark = pytest.mark.docker

MB = 1024 * 1024


def host_free_bytes() -> int:
    stats = os.statvfs(settings.DATA_DIR)
    return stats.f_bavail * stats.f_frsize


@pytest.fixture(scope="module")
def runner():
    return DockerRunner("docker", {"instance": f"labst{uuid.uuid4().hex[:6]}",
                                   "preload_cache": str(Path(settings.DATA_DIR) / "preload")})


@pytest.fixture(scope="module")
def small_session(runner):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="disk",
                       image="labs/base:bookworm", memory_mb=256, disk_mb=64, network_mode="none")
    state = runner.start(spec).state
    yield spec, state
    runner.stop(state, timeout=1)


def sh(runner, state, script: str, timeout: float = 60):
    return runner.exec(state, ["sh", "-c", script], timeout=timeout)


def test_writing_past_the_limit_fails_with_no_space_and_costs_the_host_at_most_the_limit(runner, small_session):
    _, state = small_session
    assert state["disk"], "this machine can make session disks (root, loop devices)"
    before = host_free_bytes()
    filled = sh(runner, state, "dd if=/dev/urandom of=/workspace/big bs=1M count=200")
    assert not filled.ok
    assert b"No space left on device" in filled.stderr
    written = int(sh(runner, state, "stat -c %s /workspace/big").stdout)
    assert 40 * MB < written <= 64 * MB
    assert before - host_free_bytes() <= 64 * MB + 4 * MB  # the limit, and a little ext4 metadata
    usage = runner.disk_usage(state)
    assert usage is not None and usage.fraction > 0.97
    sh(runner, state, "rm -f /workspace/big")


def test_tmp_the_home_and_the_workspace_share_the_one_limit(runner, small_session):
    _, state = small_session
    first = sh(runner, state, "dd if=/dev/zero of=/tmp/a bs=1M count=40 && "
                              "dd if=/dev/zero of=/var/tmp/b bs=1M count=10")
    assert first.ok, first.stderr
    second = sh(runner, state, "dd if=/dev/zero of=$HOME/c bs=1M count=40")
    assert not second.ok and b"No space left on device" in second.stderr
    third = sh(runner, state, "dd if=/dev/zero of=/run/lock/d bs=1M count=40")
    assert not third.ok and b"No space left on device" in third.stderr
    # The image's own home files were carried onto the disk.
    assert sh(runner, state, "test -f $HOME/.bashrc").ok
    sh(runner, state, "rm -f /tmp/a /var/tmp/b $HOME/c /run/lock/d")


def test_the_learner_can_write_nowhere_else(runner, small_session):
    _, state = small_session
    for path in ("/etc/x", "/usr/x", "/x", "/var/x", "/opt/x"):
        assert not sh(runner, state, f"touch {path}").ok, path


def test_a_save_on_a_full_disk_fails_clearly_and_keeps_the_old_file(runner, small_session):
    _, state = small_session
    runner.write_file(state, "notes.txt", b"my notes\n")
    sh(runner, state, "dd if=/dev/zero of=/workspace/filler bs=1M count=100")
    try:
        with pytest.raises(RunnerError, match="No space left on device"):
            runner.write_file(state, "notes.txt", b"x" * (2 * MB))
        assert runner.read_file(state, "notes.txt") == b"my notes\n"
        leftovers = sh(runner, state, "ls -A /workspace").stdout.split()
        assert sorted(leftovers) == [b"filler", b"notes.txt"], "no temporary file is left behind"
    finally:
        sh(runner, state, "rm -f /workspace/filler")


def test_stopping_removes_the_disk(runner):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="disk",
                       image="labs/busybox:latest", memory_mb=64, disk_mb=32, network_mode="none")
    state = runner.start(spec).state
    name = state["disk"]
    assert runner.disks.image(name).exists() and os.path.ismount(runner.disks.mountpoint(name))
    runner.stop(state, timeout=1)
    assert not runner.disks.image(name).exists()
    assert not runner.disks.mountpoint(name).exists()


def test_the_inner_docker_engines_storage_is_on_the_session_disk(runner):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="disk",
                       image="labs/dind:bookworm", memory_mb=768, pids_limit=1024, disk_mb=256,
                       network_mode="none", docker_access=True, dind_images=("labs/busybox:latest",))
    state = runner.start(spec, timeout=120).state
    try:
        inner = sh(runner, state, "docker run --rm labs/busybox:latest dd if=/dev/zero of=/big bs=1M count=400",
                   timeout=120)
        assert not inner.ok
        assert b"No space left on device" in inner.stderr
        usage = runner.disk_usage(state)
        assert usage is not None and usage.total_bytes <= 256 * MB
    finally:
        runner.stop(state, timeout=1)


def test_an_orphaned_disk_is_found_and_removed_by_reconciliation(runner):
    session_id = str(uuid.uuid4())
    runner.disks.ensure(f"{runner.instance}-{session_id}", 16)
    found = [env for env in runner.list_managed() if env.session_id == session_id]
    assert [env.ref.split(":")[0] for env in found] == ["disk"]
    runner.remove_managed(found[0])
    assert not runner.disks.exists(f"{runner.instance}-{session_id}")


def test_without_a_disk_the_limit_is_reported_or_required(tmp_path):
    remote = DockerRunner("docker", {"instance": "labsunused", "base_url": "tcp://127.0.0.1:1",
                                     "disk_limit": "required", "disk_root": str(tmp_path)})
    notes: list[str] = []
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="disk", image="x")
    with pytest.raises(RunnerError, match="another machine"):
        remote._session_disk(spec, notes.append)
    remote.options["disk_limit"] = "auto"
    assert remote._session_disk(spec, notes.append) is None
    assert notes == ["Note: the disk limit of 2048 MB is not enforced here (the Docker engine is on another machine)"]


def test_the_local_runners_workspace_is_limited_too(tmp_path):
    local = LocalRunner("local", {"root": str(tmp_path / "sessions"), "disk_root": str(tmp_path / "disks")})
    spec = SessionSpec(session_id=uuid.uuid4().hex, user_id=1, username="u", lab_slug="disk", image="local",
                       disk_mb=32, network_mode="none")
    state = local.start(spec).state
    try:
        filled = local.exec(state, ["sh", "-c", "dd if=/dev/zero of=/workspace/big bs=1M count=100"], timeout=30)
        assert not filled.ok and b"No space left on device" in filled.stderr
        assert local.list_files(state) and all(entry.path != "lost+found" for entry in local.list_files(state))
        usage = local.disk_usage(state)
        assert usage is not None and usage.fraction > 0.9
    finally:
        local.stop(state)
    assert not SessionDisks(tmp_path / "disks").names()
