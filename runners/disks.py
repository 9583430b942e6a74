"""Session disks: one size-limited filesystem per session, so a session's writes stop at its limit.

Docker's `--storage-opt size=` needs overlay2 on XFS with project quotas; ordinary hosts run ext4,
where nothing bounds a container's writes. Here each session gets a sparse file of its disk size,
formatted ext4 (no journal: a session is disposable) and loop-mounted `nosuid,nodev` on the host.
The runner binds directories of it into the session for everything a learner can write (the
workspace, the home, /tmp, the inner Docker engine's data), so a full disk answers "No space left
on device" inside the session and the host loses at most the limit.

    <root>/<name>.img   the sparse image (grows as the session writes, up to its size)
    <root>/<name>/      where it is mounted while the session exists (or a directory the runner
                        names with `at=`, e.g. the local runner's workspace)

Needs root, mkfs.ext4 and loop devices on the machine whose filesystem the engine sees (a local
engine). `SessionDisks.unavailable()` says why not, and the runners fall back to no limit with a
note in the session log (or refuse, when an operator asked for limits to be required).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from runners.base import DiskUsage, RunnerError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
MIN_SIZE_MB = 16  # ext4 needs a few MiB of its own; labs cannot ask for less (labformat's minimum)
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"


class SessionDisks:
    """The session disks under one directory (a runner's `DATA_DIR/session-disks`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # availability ---------------------------------------------------------------------
    def unavailable(self) -> str | None:
        """Why session disks cannot be made here, or None when they can."""
        if os.geteuid() != 0:
            return "the platform does not run as root (mounting a disk per session needs root)"
        for tool in ("mkfs.ext4", "mount", "umount"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (Debian package e2fsprogs / mount)"
        if not Path("/dev/loop-control").exists():
            return "this machine has no loop devices (/dev/loop-control)"
        return None

    # paths ----------------------------------------------------------------------------
    def _check_name(self, name: str) -> str:
        if not _NAME.match(name):
            raise RunnerError(f"invalid session disk name {name!r}", permanent=True)
        return name

    def image(self, name: str) -> Path:
        return self.root / f"{self._check_name(name)}.img"

    def mountpoint(self, name: str, at: Path | None = None) -> Path:
        return Path(at) if at is not None else self.root / self._check_name(name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One creator or remover at a time, across processes (a retried start, a reaper). Each
        holds it for milliseconds (mkfs of a sparse file, a mount), so one lock for all is enough."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # lifecycle --------------------------------------------------------------------------
    def ensure(self, name: str, size_mb: int, at: Path | None = None) -> Path:
        """Create, format and mount the disk `name` of `size_mb` MiB (idempotent) on its own mountpoint
        or on the directory `at`; return where it is mounted."""
        reason = self.unavailable()
        if reason:
            raise RunnerError(f"cannot make a session disk: {reason}", permanent=True)
        size_mb = max(int(size_mb), MIN_SIZE_MB)
        image, mountpoint = self.image(name), self.mountpoint(name, at)
        with self._locked():
            if os.path.ismount(mountpoint):
                return mountpoint
            mountpoint.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not image.exists():
                partial = image.with_suffix(".img.part")
                with open(partial, "wb") as handle:
                    handle.truncate(size_mb * 1024 * 1024)  # sparse: costs nothing until written
                os.chmod(partial, 0o600)
                # No journal (the disk lives as long as its session), no blocks reserved for root.
                self._run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E",
                           "lazy_itable_init=1", str(partial)], "formatting the session disk")
                os.replace(partial, image)
            self._run(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, str(image), str(mountpoint)],
                      "mounting the session disk")
            # mkfs's lost+found would show in a workspace; a disposable disk is never repaired.
            with contextlib.suppress(FileNotFoundError):
                (mountpoint / "lost+found").rmdir()
        return mountpoint

    def remove(self, name: str, at: Path | None = None) -> None:
        """Unmount and delete the disk `name` (idempotent). A mount still held by a container that
        is being removed is detached lazily; its space returns once the last user lets go. A disk
        mounted `at` a runner's directory leaves that (now empty) directory to the runner."""
        image, mountpoint = self.image(name), self.mountpoint(name, at)
        with self._locked():
            if os.path.ismount(mountpoint):
                result = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True, timeout=60)
                if result.returncode != 0:
                    self._run(["umount", "-l", str(mountpoint)], "detaching the session disk")
            if at is None and mountpoint.exists():
                try:
                    mountpoint.rmdir()
                except OSError as exc:
                    raise RunnerError(f"cannot remove the session disk's mountpoint {mountpoint}: {exc}") from exc
            image.unlink(missing_ok=True)
            image.with_suffix(".img.part").unlink(missing_ok=True)

    def exists(self, name: str, at: Path | None = None) -> bool:
        """Whether there is anything of the disk `name` to remove (its image or its mount)."""
        if not _NAME.match(name):
            return False
        return self.image(name).exists() or os.path.ismount(self.mountpoint(name, at))

    def names(self) -> list[str]:
        """Every disk under this root (mounted or only an image left)."""
        if not self.root.is_dir():
            return []
        found = {path.name[: -len(".img")] for path in self.root.glob("*.img")}
        found |= {path.name for path in self.root.iterdir() if path.is_dir() and _NAME.match(path.name)}
        return sorted(found)

    def usage(self, name: str, at: Path | None = None) -> DiskUsage | None:
        """How full a mounted disk is (None when it is not mounted)."""
        mountpoint = self.mountpoint(name, at)
        if not os.path.ismount(mountpoint):
            return None
        stats = os.statvfs(mountpoint)
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        # As df counts it: what the session has used and what it may still write (ext4 keeps a few
        # blocks of its own back, which a learner never gets).
        return DiskUsage(used_bytes=used, total_bytes=used + stats.f_bavail * stats.f_frsize)

    @staticmethod
    def _run(argv: list[str], what: str) -> None:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RunnerError(f"{what}: {exc}") from exc
        if result.returncode != 0:
            raise RunnerError(f"{what}: {(result.stderr or result.stdout).strip() or 'failed'}")
