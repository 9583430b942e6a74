"""A lab's files in a new session: its assets, and the Killercoda home.

Assets (``Lab.assets``, written by the Killercoda importer from ``details.assets``) are
``{"file": "assets/<name or glob>", "target": "<directory>", "chmod": "<mode>", "host": "<host>"}``.
They are copied while the session is provisioned, before it shows as running, as Killercoda
does: to any absolute directory (``/ks``, ``/var/run/kc-internal``, ``/opt/tool``), ``~`` meaning
the learner's home, owned by root, with their ``chmod`` applied (octal, or symbolic on top of
0644). ``host`` is Killercoda's host id (``host01`` the learner's machine, ``host02`` the second
of a multi-host session). The runner's ``place_files`` writes them without running anything in
the session; a runner that cannot write outside the workspace gets the home's assets through
its ``write_file`` and reports the others as skipped in the session log.

Assets aimed at system paths stay out of the learner's editor (it shows the workspace only);
those aimed at the home land in the workspace, which is the learner's home in Killercoda labs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runners.base import PlacedFile, Runner, RunnerError, WorkspacePathError, clean_workspace_path

KILLERCODA = "killercoda"
HOME_PREFIXES = ("~", "/root")
# chmod modes accepted: octal (644, 0755) or symbolic (+x, u+rwx,go-w, a=r).
_OCTAL_MODE = re.compile(r"^[0-7]{3,4}$")
_SYMBOLIC_MODE = re.compile(r"^[ugoa]*[-+=][rwxXst]*(?:,[ugoa]*[-+=][rwxXst]*)*$")
ASSET_MAX_BYTES = 10 * 1024 * 1024  # per file; assets are small helper files, not data sets
DEFAULT_MODE = 0o644
FIRST_HOST = "host01"


class AssetPathError(WorkspacePathError):
    """An asset target or file name that is not a plain absolute (or home) path."""


def asset_directory(target: str) -> str:
    """The absolute directory for a Killercoda asset ``target``; ``~`` stays as the home's marker.

    ``..``, NUL bytes, backslashes and relative targets raise AssetPathError: a target that
    tries to climb is refused, not repaired.
    """
    if not isinstance(target, str) or "\x00" in target or "\\" in target:
        raise AssetPathError(f"asset target {target!r} is not a plain path")
    value = target.strip()
    if value != "~" and not value.startswith(("/", "~/")):
        raise AssetPathError(f"asset target {target!r} must be an absolute directory such as /root or /opt/tool")
    if ".." in value.split("/"):
        raise AssetPathError(f"asset target {target!r} must not contain '..'")
    head, rest = ("~", value[1:]) if value.startswith("~") else ("", value)
    normal = posixpath.normpath("/" + rest.lstrip("/"))
    return head + ("" if normal == "/" and head else normal)


def home_relative(directory: str) -> str | None:
    """The workspace-relative form of a target in the home (``~``, ``/root``), else None."""
    for prefix in HOME_PREFIXES:
        if directory == prefix:
            return ""
        if directory.startswith(prefix + "/"):
            return clean_workspace_path(directory[len(prefix) + 1:])
    return None


def asset_destination(target: str, filename: str) -> str:
    """Where ``filename`` copied to ``target`` lands (absolute, or ``~/...`` in the home)."""
    if not filename or "/" in filename or "\\" in filename or filename in (".", "..") or "\x00" in filename:
        raise AssetPathError(f"asset file name {filename!r} is not a plain file name")
    directory = asset_directory(target)
    return f"{directory.rstrip('/')}/{filename}" if directory not in ("~", "") else f"~/{filename}"


def valid_chmod(mode: str) -> bool:
    """Whether ``mode`` is an octal or symbolic chmod mode ("" means: leave the mode)."""
    return mode == "" or bool(_OCTAL_MODE.match(mode) or _SYMBOLIC_MODE.match(mode))


def apply_chmod(mode: str, base: int = DEFAULT_MODE) -> int:
    """The file mode ``chmod MODE`` gives a file that has ``base`` (a regular file: X is x only
    where someone already may execute it, as chmod does)."""
    if not valid_chmod(mode):
        raise AssetPathError(f"{mode!r} is not a chmod mode")
    if mode == "":
        return base
    if _OCTAL_MODE.match(mode):
        return int(mode, 8)
    result = base
    for clause in mode.split(","):
        match = re.match(r"^([ugoa]*)([-+=])([rwxXst]*)$", clause)
        assert match is not None  # valid_chmod checked the shape
        who, op, perms = match.groups()
        who = who.replace("a", "ugo") or "ugo"
        bits = 0
        for person in set(who):
            shift = {"u": 6, "g": 3, "o": 0}[person]
            for perm in perms:
                if perm in "rwx":
                    bits |= {"r": 4, "w": 2, "x": 1}[perm] << shift
                elif perm == "X" and result & 0o111:
                    bits |= 1 << shift
                elif perm == "s" and person in "ug":
                    bits |= 0o4000 if person == "u" else 0o2000
                elif perm == "t" and person == "o":
                    bits |= 0o1000
        if op == "+":
            result |= bits
        elif op == "-":
            result &= ~bits
        else:
            mask = sum({"u": 0o4700, "g": 0o2070, "o": 0o1007}[person] for person in set(who))
            result = (result & ~mask) | bits
    return result & 0o7777


def expand_assets(lab: Any) -> list[tuple[Path, str, int, str]]:
    """(source file, destination, mode, host) for every file the lab's assets name, in order.

    ``file`` is a path or glob relative to the lab directory and must stay inside it; a file
    the lab names but no longer has is an error here (the importer warned about it already).
    """
    assets = lab.assets or []
    if not assets:
        return []
    if not lab.source_path:
        raise AssetPathError("the lab has assets but no source directory to copy them from")
    root = Path(lab.source_path).resolve()
    copies: list[tuple[Path, str, int, str]] = []
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
            destination = asset_destination(str(asset.get("target", "")), source.name)
            copies.append((resolved, destination, apply_chmod(chmod), str(asset.get("host") or FIRST_HOST)))
    return copies


def session_host(lab: Any, killercoda_host: str) -> str | None:
    """The runner's host name for Killercoda's ``hostNN`` ("" the learner's machine), or None when
    the session has no such host."""
    match = re.fullmatch(r"host(\d+)", killercoda_host)
    if match is None:
        return None
    index = int(match.group(1)) - 1
    hosts = list(lab.hosts or [])
    if index == 0:
        return ""
    return hosts[index] if 0 < index < len(hosts) else None


def install_assets(runner: Runner, state: dict[str, Any], lab: Any, home: str,
                   log: Callable[[str], None] = lambda message: None) -> int:
    """Copy the lab's assets into the session (see the module docstring); returns how many were copied.

    ``home`` is the learner's home in the session (``/root`` for Killercoda labs).
    """
    copies = expand_assets(lab)
    placed: dict[str, list[PlacedFile]] = {}
    fallback: list[tuple[Path, str, int]] = []
    skipped: list[str] = []
    for source, destination, mode, kc_host in copies:
        if source.stat().st_size > ASSET_MAX_BYTES:
            raise AssetPathError(f"asset {source.name} is larger than {ASSET_MAX_BYTES} bytes")
        host = session_host(lab, kc_host)
        if host is None:
            skipped.append(f"{source.name} ({kc_host}: the session has no such host)")
            continue
        absolute = home.rstrip("/") + destination[1:] if destination.startswith("~") else destination
        placed.setdefault(host, []).append(PlacedFile(absolute, source.read_bytes(), mode))
        if not host:
            fallback.append((source, destination, mode))
    count = 0
    for host, files in placed.items():
        try:
            runner.place_files(state, files, host=host)
            count += len(files)
        except RunnerError as exc:
            if not exc.permanent or host:
                raise
            count += _into_workspace(runner, state, home, fallback, skipped)
    if skipped:
        log(f"Not copied: {', '.join(skipped)}.")
    if count:
        log(f"Copied {count} lab file{'s' if count != 1 else ''}.")
    return count


def _into_workspace(runner: Runner, state: dict[str, Any], home: str, files: list[tuple[Path, str, int]],
                    skipped: list[str]) -> int:
    """Runners that write only the workspace: the home's assets go there (it is the learner's home)."""
    count = 0
    for source, destination, mode in files:
        relative = home_relative(destination)
        if relative is None and destination.startswith(home.rstrip("/") + "/"):
            relative = clean_workspace_path(destination[len(home.rstrip("/")) + 1:])
        if relative is None:
            skipped.append(f"{source.name} (to {posixpath.dirname(destination)}: this runner writes only the "
                           "workspace)")
            continue
        runner.write_file(state, relative, source.read_bytes())
        result = runner.exec(state, ["chmod", f"{mode:o}", posixpath.join(runner.workspace, relative)], timeout=10)
        if not result.ok:
            raise RunnerError(f"chmod {mode:o} {relative}: "
                              f"{result.stderr.decode(errors='replace').strip() or 'failed'}", permanent=True)
        count += 1
    return count


# Run as root. $1: the workspace. /root becomes the workspace: nothing to do where the runner mounted
# the workspace there already (the same directory), else a link replaces it (the session is
# disposable, and Killercoda scripts expect their files there).
LINK_HOME = r"""
ws="$1"
[ "$(stat -L -c %d:%i /root 2>/dev/null)" = "$(stat -L -c %d:%i "$ws")" ] && exit 0
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
    killercoda = getattr(lab, "source_format", "") == KILLERCODA
    learner_is_root = (getattr(lab, "shell_user", "") or "") == "root" or not state.get("user")
    if killercoda:
        link_killercoda_home(runner, state)
    home = "/root" if learner_is_root else runner.workspace
    install_assets(runner, state, lab, home, log)
    scripts = any(step.background_script.strip() for step in lab.steps.all()) or lab.intro_background_script.strip()
    if scripts and not learner_is_root:
        share_workspace(runner, state)
