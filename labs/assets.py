"""A lab's files in a new session: its assets, and the Killercoda home.

Assets (``Lab.assets``, written by the Killercoda importer from ``details.assets``) are
``{"file": "assets/<name or glob>", "target": "<directory>", "chmod": "<mode>"}``. They are
copied while the session is provisioned, before it shows as running, through the runner's
``write_file`` (which confines every path to the workspace) and ``exec`` (for ``chmod``).

Killercoda runs everything as root with ``/root`` as the home and working directory. Here the
learner works in the workspace, so the home maps there: a target ``~``, ``~/x``, ``/root`` or
``/root/x`` lands in the workspace (``x`` relative to it). Any other target is refused
(``AssetPathError``): assets never leave the workspace. For labs imported from Killercoda the
session's ``/root`` also becomes a link to the workspace, so its scripts' ``/root/...`` paths
find what the learner sees in the terminal and the editor.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sessions_app.runners.base import Runner, RunnerError, WorkspacePathError, clean_workspace_path

KILLERCODA = "killercoda"
HOME_PREFIXES = ("~", "/root")
# chmod modes accepted: octal (644, 0755) or symbolic (+x, u+rwx,go-w, a=r).
_OCTAL_MODE = re.compile(r"^[0-7]{3,4}$")
_SYMBOLIC_MODE = re.compile(r"^[ugoa]*[-+=][rwxXst]*(?:,[ugoa]*[-+=][rwxXst]*)*$")
ASSET_MAX_BYTES = 10 * 1024 * 1024  # per file; assets are small helper files, not data sets


class AssetPathError(WorkspacePathError):
    """An asset target or file name that would place a file outside the workspace."""


class AssetUnsupported(AssetPathError):
    """A well-formed absolute target outside the home (e.g. /usr/local/bin): not copied here."""


def workspace_directory(target: str) -> str:
    """The workspace-relative directory for a Killercoda asset ``target`` ("" is the workspace itself).

    Only the home (``~``, ``/root`` and below) is accepted; ``..``, NUL bytes, relative
    targets and anything else outside the home raise AssetPathError.
    """
    if not isinstance(target, str) or "\x00" in target or "\\" in target:
        raise AssetPathError(f"asset target {target!r} is not a plain path")
    value = target.strip()
    rest: str | None = None
    for prefix in HOME_PREFIXES:
        if value == prefix:
            rest = ""
        elif value.startswith(prefix + "/"):
            rest = value[len(prefix) + 1:]
        if rest is not None:
            break
    if rest is None:
        if not value.startswith("/"):
            raise AssetPathError(f"asset target {target!r} must be an absolute directory such as /root")
        if ".." in value.split("/"):
            raise AssetPathError(f"asset target {target!r} must not contain '..'")
        raise AssetUnsupported(f"asset target {target!r} is outside the home (~ or /root); only the home "
                               f"is copied, into the workspace")
    # No normalising away of "..": a target that tries to climb is refused, not repaired.
    if ".." in rest.split("/"):
        raise AssetPathError(f"asset target {target!r} must not contain '..'")
    return clean_workspace_path(rest)


def asset_destination(target: str, filename: str) -> str:
    """The workspace-relative path of ``filename`` copied to ``target``."""
    if not filename or "/" in filename or "\\" in filename or filename in (".", "..") or "\x00" in filename:
        raise AssetPathError(f"asset file name {filename!r} is not a plain file name")
    directory = workspace_directory(target)
    return f"{directory}/{filename}" if directory else filename


def valid_chmod(mode: str) -> bool:
    """Whether ``mode`` is an octal or symbolic chmod mode ("" means: leave the mode)."""
    return mode == "" or bool(_OCTAL_MODE.match(mode) or _SYMBOLIC_MODE.match(mode))


def expand_assets(lab: Any) -> list[tuple[Path, str, str]]:
    """(source file, workspace path, chmod) for every file the lab's assets name, in order.

    ``file`` is a path or glob relative to the lab directory and must stay inside it.
    """
    assets = lab.assets or []
    if not assets:
        return []
    if not lab.source_path:
        raise AssetPathError("the lab has assets but no source directory to copy them from")
    root = Path(lab.source_path).resolve()
    copies: list[tuple[Path, str, str]] = []
    for asset in assets:
        if not isinstance(asset, dict):
            raise AssetPathError(f"asset {asset!r} is not a mapping")
        pattern = str(asset.get("file", ""))
        chmod = str(asset.get("chmod", "") or "")
        if not valid_chmod(chmod):
            raise AssetPathError(f"asset {pattern}: {chmod!r} is not a chmod mode")
        if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise AssetPathError(f"asset file {pattern!r} must be a path inside the lab directory")
        matches = sorted(path for path in root.glob(pattern) if path.is_file())
        if not matches:
            raise AssetPathError(f"asset file {pattern!r} is missing from the lab directory")
        for source in matches:
            resolved = source.resolve()
            if not resolved.is_relative_to(root):  # a symlink out of the lab directory
                raise AssetPathError(f"asset file {pattern!r} points outside the lab directory")
            copies.append((resolved, asset_destination(str(asset.get("target", "")), source.name), chmod))
    return copies


def install_assets(runner: Runner, state: dict[str, Any], lab: Any,
                   log: Callable[[str], None] = lambda message: None) -> int:
    """Copy the lab's assets into the session's workspace; returns how many files were copied."""
    copies = expand_assets(lab)
    for source, destination, chmod in copies:
        if source.stat().st_size > ASSET_MAX_BYTES:
            raise AssetPathError(f"asset {source.name} is larger than {ASSET_MAX_BYTES} bytes")
        runner.write_file(state, destination, source.read_bytes())
        if chmod:
            # An argument vector, never a shell line; the path is a clean workspace path.
            result = runner.exec(state, ["chmod", chmod, posixpath.join(runner.workspace, destination)], timeout=10)
            if not result.ok:
                raise RunnerError(f"chmod {chmod} {destination}: "
                                  f"{result.stderr.decode(errors='replace').strip() or 'failed'}", permanent=True)
    if copies:
        log(f"Copied {len(copies)} lab file{'s' if len(copies) != 1 else ''} into the workspace.")
    return len(copies)


# Run as root. $1: the workspace. /root becomes a link to it (an existing /root is removed:
# the session is disposable, and Killercoda scripts expect their files there).
LINK_HOME = r"""
ws="$1"
[ -L /root ] && [ "$(readlink /root)" = "$ws" ] && exit 0
rm -rf /root && ln -s "$ws" /root
"""


# Run as the learner. $1: the workspace. Its directories (the learner's) become group-writable,
# so the steps' scripts, run as root in the learner's group (judge/steps.py), can add files there.
SHARE_WORKSPACE = r"""find "$1" -xdev -type d -user "$(id -u)" -exec chmod g+w {} +"""


def link_killercoda_home(runner: Runner, state: dict[str, Any]) -> None:
    """Make /root the workspace, as Killercoda scenarios expect (see the module docstring)."""
    result = runner.exec(state, ["sh", "-c", LINK_HOME, "sh", runner.workspace], user="root", timeout=20)
    if not result.ok:
        raise RunnerError("cannot link /root to the workspace: "
                          f"{result.stderr.decode(errors='replace').strip() or 'failed'}", permanent=True)


def share_workspace(runner: Runner, state: dict[str, Any]) -> None:
    result = runner.exec(state, ["sh", "-c", SHARE_WORKSPACE, "sh", runner.workspace], timeout=30)
    if not result.ok:
        raise RunnerError("cannot open the workspace to the lab's scripts: "
                          f"{result.stderr.decode(errors='replace').strip() or 'failed'}", permanent=True)


def prepare_environment(session: Any, runner: Runner, state: dict[str, Any],
                        log: Callable[[str], None] = lambda message: None) -> None:
    """Everything a lab needs in a freshly started environment, before the learner gets it."""
    lab = session.lab
    if getattr(lab, "source_format", "") == KILLERCODA:
        link_killercoda_home(runner, state)
    install_assets(runner, state, lab, log)
    if any(step.background_script.strip() for step in lab.steps.all()):
        share_workspace(runner, state)
