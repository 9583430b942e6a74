"""The learner's workspace as the in-browser editor sees it: list, open, save, create, rename, delete.

Everything goes through the session's runner, so the same code serves Docker, the local
sandbox and later backends:

* listing, reading and writing use the runner's file calls (`list_files`, `read_file`,
  `write_file`), which refuse `..`, absolute paths and symbolic links that lead outside;
* creating folders, renaming and deleting run a short shell script with `runner.exec`, i.e.
  inside the environment with the learner's own rights, and the script refuses any path
  whose directory resolves outside the workspace.

Only text is edited: files with NUL bytes or invalid UTF-8 are refused, and nothing larger
than ``LAB_EDITOR_MAX_BYTES`` is opened or saved.

Saving detects conflicts. Opening returns the file's *version* (the SHA-256 of its bytes;
"" for a file that does not exist); saving sends the version the editor started from, and
if the file changed on disk since, nothing is written and :class:`SaveConflict` carries
what is on disk now, so the learner chooses to overwrite (save again with the new version)
or to reload. Runners have no compare-and-swap, so a write landing between the check and
the save can still be lost; the window is one runner call long.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from runners.base import FileEntry, Runner, RunnerError, WorkspacePathError, clean_workspace_path
from sessions_app.models import Session, State

ABSENT = ""  # the version of a file that does not exist


class WorkspaceError(Exception):
    """Something the editor cannot do, with a message for the learner and an HTTP status."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SessionNotRunning(WorkspaceError):
    status = 409


class PathRefused(WorkspaceError):
    status = 400


class NotFound(WorkspaceError):
    status = 404


class AlreadyExists(WorkspaceError):
    status = 409


class TooLarge(WorkspaceError):
    status = 413


class BinaryFile(WorkspaceError):
    status = 415


class RunnerUnavailable(WorkspaceError):
    """The environment did not answer (engine down, timeout): worth trying again."""

    status = 502


@dataclass(frozen=True)
class OpenedFile:
    path: str
    text: str
    version: str
    size: int


class SaveConflict(WorkspaceError):
    """The file changed on disk since the editor opened it; nothing was written."""

    status = 409

    def __init__(self, path: str, disk: OpenedFile | None, disk_version: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.disk = disk  # None when the file is gone, or can no longer be shown as text
        self.disk_version = disk_version


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def max_bytes() -> int:
    return int(settings.LAB_EDITOR_MAX_BYTES)


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size} bytes"


def decode_text(path: str, data: bytes) -> str:
    """The file as text, or BinaryFile: the editor would corrupt anything else on save."""
    if b"\x00" in data:
        raise BinaryFile(f"{path} looks like a binary file (it contains NUL bytes); the editor opens text only.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BinaryFile(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start}); the editor opens text only."
        ) from None


# Run with the workspace as the working directory; paths arrive as arguments ("./a/b"), never
# inside the script text. `confine` walks up to the deepest existing ancestor of a path's
# directory and refuses it unless it resolves (symbolic links followed) inside the workspace.
# The last component itself is never followed: deleting or renaming a link acts on the link.
_SCRIPT_PRELUDE = r"""
ws=$(pwd -P) || exit 3
confine() {
  d=$(dirname "$1")
  while [ ! -e "$d" ] && [ ! -L "$d" ]; do d=$(dirname "$d"); done
  r=$(cd "$d" 2>/dev/null && pwd -P) || { echo "$2 is outside the workspace" >&2; exit 3; }
  case "$r" in "$ws"|"$ws"/*) ;; *) echo "$2 is outside the workspace" >&2; exit 3;; esac
}
exists() { [ -e "$1" ] || [ -L "$1" ]; }
"""
_SCRIPTS = {
    "mkdir": 'confine "$1" "$3"; exists "$1" && { echo "$3 already exists" >&2; exit 5; }; mkdir -p "$1"',
    "rename": (
        'confine "$1" "$3"; confine "$2" "$4"; '
        'exists "$1" || { echo "$3: no such file or folder" >&2; exit 4; }; '
        'exists "$2" && { echo "$4 already exists" >&2; exit 5; }; '
        'mkdir -p "$(dirname "$2")" && mv "$1" "$2"'
    ),
    "delete": 'confine "$1" "$3"; exists "$1" || { echo "$3: no such file or folder" >&2; exit 4; }; rm -rf "$1"',
}
_EXIT_ERRORS: dict[int, type[WorkspaceError]] = {3: PathRefused, 4: NotFound, 5: AlreadyExists}


class Workspace:
    """The workspace of one running session."""

    def __init__(self, session: Session, runner: Runner | None = None) -> None:
        self.session = session
        self._runner = runner

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            try:
                self._runner = self.session.runner()
            except RunnerError as exc:
                raise RunnerUnavailable(str(exc)) from exc
        return self._runner

    @property
    def state(self) -> dict[str, Any]:
        if self.session.state != State.RUNNING or not self.session.runner_state:
            raise SessionNotRunning("The session is not running, so its files cannot be reached.")
        return self.session.runner_state

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def clean(path: Any, *, allow_root: bool = False) -> str:
        if not isinstance(path, str):
            raise PathRefused("Give the path as text.")
        try:
            path.encode("utf-8")  # JSON may carry lone surrogates ("\ud800"), which no file name holds
        except UnicodeEncodeError:
            raise PathRefused("The path holds characters that are not valid in a file name.") from None
        try:
            cleaned = clean_workspace_path(path)
        except WorkspacePathError as exc:
            raise PathRefused(str(exc)) from None
        if not cleaned and not allow_root:
            raise PathRefused("Give a file or folder name inside the workspace.")
        if any(len(part.encode()) > 255 for part in cleaned.split("/")) or len(cleaned.encode()) > 4000:
            raise PathRefused("That name is too long.")
        return cleaned

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        state = self.state
        try:
            return func(state, *args, **kwargs)
        except WorkspacePathError as exc:
            raise PathRefused(str(exc)) from None
        except RunnerError as exc:
            if exc.permanent:
                raise WorkspaceError(str(exc)) from None
            raise RunnerUnavailable(f"The environment did not answer: {exc}") from None

    def lookup(self, path: str) -> FileEntry | None:
        """The entry for `path` from its parent's listing, or None when it (or a parent) is absent."""
        if not path:
            return FileEntry("", True, 0, 0.0)
        parent = posixpath.dirname(path)
        try:
            entries = self._call(self.runner.list_files, parent)
        except (PathRefused, RunnerUnavailable, SessionNotRunning):
            raise
        except WorkspaceError:
            # Listing the parent failed: absent when some ancestor is missing, else a real error.
            if parent and self.lookup(parent) is None:
                return None
            raise
        for entry in entries:
            if entry.path == path:
                return entry
        return None

    def _exec_script(self, name: str, *paths: str) -> None:
        # Arguments: the paths as "./relative" (never starting with "-"), then as shown to the learner.
        arguments = [f"./{path}" for path in paths] + list(paths)
        result = self._call(
            self.runner.exec, ["sh", "-c", _SCRIPT_PRELUDE + _SCRIPTS[name], "sh", *arguments], timeout=30
        )
        if result.ok:
            return
        message = result.stderr.decode(errors="replace").strip().splitlines()
        text = message[-1] if message else f"exit status {result.exit_code}"
        if result.timed_out:
            raise RunnerUnavailable(f"{paths[0]}: the operation did not finish in time")
        raise _EXIT_ERRORS.get(result.exit_code, WorkspaceError)(text)

    # -- what the editor does -------------------------------------------------------------------

    def list_dir(self, path: str = "") -> list[FileEntry]:
        path = self.clean(path, allow_root=True)
        try:
            entries: list[FileEntry] = self._call(self.runner.list_files, path)
        except (PathRefused, RunnerUnavailable, SessionNotRunning):
            raise
        except WorkspaceError:
            if path and self.lookup(path) is None:
                raise NotFound(f"{path}: no such folder") from None
            raise
        return entries

    def open(self, path: str) -> OpenedFile:
        path = self.clean(path)
        entry = self.lookup(path)
        if entry is None:
            raise NotFound(f"{path}: no such file")
        if entry.is_dir:
            raise PathRefused(f"{path} is a folder")
        limit = max_bytes()
        if entry.size > limit:
            raise TooLarge(f"{path} is {_size_text(entry.size)}; the editor opens files up to {_size_text(limit)}.")
        data = self._read(path, limit)
        return OpenedFile(path=path, text=decode_text(path, data), version=version_of(data), size=len(data))

    def _read(self, path: str, limit: int) -> bytes:
        try:
            data: bytes = self._call(self.runner.read_file, path, max_bytes=limit)
        except WorkspaceError as exc:
            if "larger than" in exc.message:
                raise TooLarge(f"{path} is larger than the editor's limit of {_size_text(limit)}.") from None
            raise
        return data

    def save(self, path: str, text: Any, base_version: Any) -> str:
        """Write `text` if the file is still at `base_version`; return the new version."""
        path = self.clean(path)
        if not isinstance(text, str):
            raise WorkspaceError("The file content must be text.")
        if not isinstance(base_version, str):
            raise WorkspaceError("Say which version of the file the edit started from.")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise WorkspaceError("The text holds characters that cannot be saved as UTF-8.") from None
        limit = max_bytes()
        if len(data) > limit:
            raise TooLarge(
                f"{path} would be {_size_text(len(data))}; the editor saves files up to {_size_text(limit)}."
            )
        if b"\x00" in data:
            raise BinaryFile("The text contains NUL characters, which the editor does not save.")
        entry = self.lookup(path)
        if entry is not None and entry.is_dir:
            raise PathRefused(f"{path} is a folder")
        disk_version = ABSENT
        disk: OpenedFile | None = None
        if entry is not None:
            try:
                current = self._read(path, limit)
            except TooLarge:
                raise SaveConflict(path, None, "", f"{path} changed on disk and is now too large to edit.") from None
            disk_version = version_of(current)
            try:
                disk = OpenedFile(path, decode_text(path, current), disk_version, len(current))
            except BinaryFile:
                disk = None
        if disk_version != base_version:
            if entry is None:
                message = f"{path} was deleted since you opened it."
            elif base_version == ABSENT:
                message = f"{path} already exists."
            else:
                message = f"{path} changed on disk since you opened it."
            raise SaveConflict(path, disk, disk_version, message)
        self._call(self.runner.write_file, path, data)
        return version_of(data)

    def create(self, path: Any, kind: Any) -> FileEntry:
        path = self.clean(path)
        if kind not in ("file", "folder"):
            raise WorkspaceError('Say whether to create a "file" or a "folder".')
        if self.lookup(path) is not None:
            raise AlreadyExists(f"{path} already exists")
        if kind == "folder":
            self._exec_script("mkdir", path)
            return FileEntry(path, True, 0, 0.0)
        self._call(self.runner.write_file, path, b"")
        return FileEntry(path, False, 0, 0.0)

    def rename(self, path: str, new_path: str) -> None:
        path, new_path = self.clean(path), self.clean(new_path)
        if path == new_path:
            return
        if new_path.startswith(path + "/"):
            raise PathRefused(f"{path} cannot be moved into itself")
        if self.lookup(path) is None:
            raise NotFound(f"{path}: no such file or folder")
        if self.lookup(new_path) is not None:
            raise AlreadyExists(f"{new_path} already exists")
        self._exec_script("rename", path, new_path)

    def delete(self, path: str) -> None:
        path = self.clean(path)
        if self.lookup(path) is None:
            raise NotFound(f"{path}: no such file or folder")
        self._exec_script("delete", path)
