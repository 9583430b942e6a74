"""The editor's workspace service on the real runners: the local bubblewrap sandbox and Docker.

Every test runs on both backends through a real session (started with start_session), and
checks what happened inside the environment with the runner's own exec.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import docker
import pytest

from labs.models import Image, Lab
from runners import get_runner, reset_cache
from sessions_app import actions
from sessions_app.models import Session, State
from sessions_app.workspace import (
    ABSENT,
    AlreadyExists,
    BinaryFile,
    NotFound,
    PathRefused,
    SaveConflict,
    SessionNotRunning,
    TooLarge,
    Workspace,
    WorkspaceError,
    version_of,
)

BWRAP = "/usr/bin/bwrap"
BUSYBOX = "labs/busybox:latest"


@pytest.fixture(params=["local", "docker"])
def backend(request, settings, tmp_path) -> Iterator[str]:
    """A real runner under a test alias: the local sandbox in tmp_path, or Docker with its own label."""
    settings.DATA_DIR = tmp_path
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    if request.param == "local":
        if not os.access(BWRAP, os.X_OK):
            pytest.fail("bubblewrap is required for these tests: apt-get install bubblewrap")
        config = {"BACKEND": "runners.local.LocalRunner", "OPTIONS": {"root": str(tmp_path / "ls")}}
    else:
        client = docker.from_env()
        try:
            client.ping()
            client.images.get(BUSYBOX)
        except Exception as exc:  # a missing engine or image must fail the run, not skip it
            pytest.fail(f"the Docker engine and {BUSYBOX} are required for these tests: {exc}")
        config = {"BACKEND": "runners.docker.DockerRunner",
                  "OPTIONS": {"instance": f"labsws{uuid.uuid4().hex[:6]}"}}
    alias = f"ws-{request.param}"
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, alias: config}
    reset_cache()
    yield alias
    runner = get_runner(alias)
    for env in runner.list_managed():
        runner.remove_managed(env)
    reset_cache()


@pytest.fixture
def session(backend, owner, django_capture_on_commit_callbacks) -> Session:
    image, _ = Image.objects.get_or_create(name="busybox", defaults={"reference": BUSYBOX})
    lab = Lab.objects.create(slug=f"edit-{uuid.uuid4().hex[:6]}", title="Edit", image=image, runner=backend,
                             memory_mb=128, network_mode="none", published=True, consoles=["editor"])
    with django_capture_on_commit_callbacks(execute=True):
        started = actions.start_session(owner, lab)
    started.refresh_from_db()
    assert started.state == State.RUNNING, started.error
    return started


@pytest.fixture
def workspace(session) -> Workspace:
    return Workspace(session)


def sh(workspace: Workspace, script: str) -> str:
    """Run a shell command in the session's workspace and return its output."""
    result = workspace.runner.exec(workspace.session.runner_state, ["sh", "-c", script])
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def test_open_returns_the_text_and_its_version(workspace):
    sh(workspace, "mkdir -p app && printf 'print(1)\\n' > app/main.py")
    opened = workspace.open("app/main.py")
    assert opened.text == "print(1)\n"
    assert opened.version == version_of(b"print(1)\n")
    assert [(e.path, e.is_dir) for e in workspace.list_dir("app")] == [("app/main.py", False)]
    assert ("app", True) in [(e.path, e.is_dir) for e in workspace.list_dir("")]


def test_save_writes_the_file_when_nothing_changed_on_disk(workspace):
    sh(workspace, "printf 'old\\n' > notes.txt")
    opened = workspace.open("notes.txt")
    new_version = workspace.save("notes.txt", "new\n", opened.version)
    assert sh(workspace, "cat notes.txt") == "new\n"
    assert new_version == version_of(b"new\n")
    # The new version is the base of the next save.
    workspace.save("notes.txt", "newer\n", new_version)
    assert sh(workspace, "cat notes.txt") == "newer\n"


def test_a_change_on_disk_since_opening_is_a_conflict_and_nothing_is_written(workspace):
    sh(workspace, "printf 'original\\n' > app.py")
    opened = workspace.open("app.py")
    sh(workspace, "printf 'changed in the terminal\\n' > app.py")
    with pytest.raises(SaveConflict) as caught:
        workspace.save("app.py", "my edit\n", opened.version)
    conflict = caught.value
    assert conflict.status == 409
    assert conflict.disk is not None and conflict.disk.text == "changed in the terminal\n"
    assert conflict.disk_version == version_of(b"changed in the terminal\n")
    assert sh(workspace, "cat app.py") == "changed in the terminal\n"
    # Overwrite: save again on top of the version now on disk.
    workspace.save("app.py", "my edit\n", conflict.disk_version)
    assert sh(workspace, "cat app.py") == "my edit\n"


def test_a_file_deleted_since_opening_is_a_conflict_too(workspace):
    sh(workspace, "echo x > gone.txt")
    opened = workspace.open("gone.txt")
    sh(workspace, "rm gone.txt")
    with pytest.raises(SaveConflict, match="deleted") as caught:
        workspace.save("gone.txt", "y\n", opened.version)
    assert caught.value.disk_version == ABSENT and caught.value.disk is None
    assert sh(workspace, "ls") == ""


def test_saving_a_new_file_over_one_that_appeared_meanwhile_is_a_conflict(workspace):
    sh(workspace, "echo theirs > new.txt")
    with pytest.raises(SaveConflict, match="already exists"):
        workspace.save("new.txt", "mine\n", ABSENT)
    assert sh(workspace, "cat new.txt") == "theirs\n"


class Outside:
    """A directory outside the workspace that a learner's symlink can name, seen from outside."""

    def __init__(self, workspace: Workspace, tmp_path) -> None:
        self.workspace = workspace
        self.local = "local" in workspace.session.runner_name
        if self.local:
            # The platform writes on the host for the local runner: the danger is a host path.
            host = tmp_path / "outside"
            host.mkdir()
            (host / "secret.txt").write_text("secret\n")
            self.path = str(host)
        else:
            self.path = "/tmp/outside"
            sh(workspace, "mkdir -p /tmp/outside && echo secret > /tmp/outside/secret.txt")

    def listing(self) -> str:
        if self.local:
            root = self.workspace.session.runner_state["root"]
            names = [*sorted(os.listdir(self.path)), "--", *sorted(os.listdir(root))]
            return " ".join(names) + " " + open(os.path.join(self.path, "secret.txt")).read()
        return sh(self.workspace, "ls -a /tmp /tmp/outside; cat /tmp/outside/secret.txt")


@pytest.fixture
def outside(workspace, tmp_path) -> Outside:
    return Outside(workspace, tmp_path)


@pytest.mark.parametrize("hostile", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "/workspace/x.txt"])
def test_hostile_paths_are_refused_with_a_clear_message_and_nothing_is_written(workspace, outside, hostile):
    before = (outside.listing(), sh(workspace, "ls -a ."))
    for attempt in (
        lambda: workspace.open(hostile),
        lambda: workspace.save(hostile, "pwned\n", ABSENT),
        lambda: workspace.create(hostile, "file"),
        lambda: workspace.create(hostile, "folder"),
        lambda: workspace.rename("x", hostile),
        lambda: workspace.delete(hostile),
        lambda: workspace.list_dir(hostile),
    ):
        with pytest.raises(PathRefused, match=r"absolute path|above the workspace"):
            attempt()
    assert (outside.listing(), sh(workspace, "ls -a .")) == before


def test_a_symlink_leading_outside_is_refused_and_nothing_is_written_through_it(workspace, outside):
    sh(workspace, f"ln -s {outside.path} out && echo kept > kept.txt")
    before = outside.listing()
    for attempt in (
        lambda: workspace.open("out/secret.txt"),
        lambda: workspace.save("out/secret.txt", "pwned\n", version_of(b"secret\n")),
        lambda: workspace.save("out/new.txt", "pwned\n", ABSENT),
        lambda: workspace.create("out/made.txt", "file"),
        lambda: workspace.create("out/made", "folder"),
        lambda: workspace.delete("out/secret.txt"),
        lambda: workspace.rename("kept.txt", "out/moved.txt"),
        lambda: workspace.list_dir("out"),
    ):
        with pytest.raises(WorkspaceError, match=r"outside the workspace|symbolic link"):
            attempt()
    assert outside.listing() == before
    assert "secret.txt" in before and before.endswith("secret\n")
    assert sh(workspace, "cat kept.txt") == "kept\n"


def test_a_symlink_to_an_outside_file_is_not_opened_and_deleting_it_removes_only_the_link(workspace, outside):
    sh(workspace, f"ln -s {outside.path}/secret.txt link.txt")
    before = outside.listing()
    with pytest.raises(WorkspaceError, match=r"outside the workspace|symbolic link"):
        workspace.open("link.txt")
    with pytest.raises(WorkspaceError, match=r"outside the workspace|symbolic link"):
        workspace.save("link.txt", "pwned\n", version_of(b"secret\n"))
    workspace.delete("link.txt")
    assert sh(workspace, "ls -a .").split() == [".", ".."]
    assert outside.listing() == before


def test_files_over_the_size_limit_are_neither_opened_nor_saved(workspace, settings):
    settings.LAB_EDITOR_MAX_BYTES = 1000
    sh(workspace, "head -c 1001 /dev/zero | tr '\\0' a > big.txt && echo small > small.txt")
    with pytest.raises(TooLarge, match="up to 1000 bytes"):
        workspace.open("big.txt")
    opened = workspace.open("small.txt")
    with pytest.raises(TooLarge, match="would be 1001 bytes"):
        workspace.save("small.txt", "b" * 1001, opened.version)
    assert sh(workspace, "cat small.txt") == "small\n"
    workspace.save("small.txt", "b" * 1000, opened.version)  # exactly the limit is fine


def test_binary_files_are_refused_with_a_clear_message(workspace):
    sh(workspace, "printf 'a\\000b' > nul.bin && printf '\\377\\376abc' > latin.txt && printf 'caf\\303\\251' > ok.txt")
    with pytest.raises(BinaryFile, match="binary file"):
        workspace.open("nul.bin")
    with pytest.raises(BinaryFile, match="not UTF-8 text"):
        workspace.open("latin.txt")
    assert workspace.open("ok.txt").text == "café"


def test_create_rename_and_delete_work(workspace):
    created = workspace.create("src/app.py", "file")
    assert not created.is_dir
    assert workspace.open("src/app.py").text == ""
    workspace.create("docs", "folder")
    with pytest.raises(AlreadyExists):
        workspace.create("docs", "file")
    workspace.rename("src/app.py", "docs/main.py")
    assert sh(workspace, "ls src docs") == "docs:\nmain.py\n\nsrc:\n"
    workspace.rename("docs", "documentation")
    assert [e.path for e in workspace.list_dir("documentation")] == ["documentation/main.py"]
    workspace.create("other.txt", "file")
    with pytest.raises(AlreadyExists, match="already exists"):
        workspace.rename("other.txt", "documentation")
    with pytest.raises(PathRefused, match="into itself"):
        workspace.rename("documentation", "documentation/inner")
    workspace.delete("documentation")
    workspace.delete("other.txt")
    assert sh(workspace, "ls") == "src\n"
    with pytest.raises(NotFound):
        workspace.delete("documentation")
    with pytest.raises(NotFound):
        workspace.open("nothing/here.txt")


def test_nothing_is_reachable_once_the_session_stops(workspace, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(workspace.session)
    workspace.session.refresh_from_db()
    with pytest.raises(SessionNotRunning):
        workspace.list_dir("")
