"""The figures the watchdog judges, each a percentage: of the host and of every running session.

Host: CPU and memory from /proc (Linux), how full the data directory's filesystem is, and the Docker
engine's storage (its DockerRootDir, from `docker info`) where a Docker runner is in use and its
engine is on this machine. Sessions: each running session's runner `stats()` and `disk_usage()`, a
few sessions at a time on threads (an engine's stats call takes a second), recorded as SessionSample
rows. A figure that cannot be read is skipped with a log line, once until the reason changes: never
an error that stops the watchdog.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

import runners
from runners.base import DiskUsage, RunnerError, RunnerStats
from runners.docker import DockerRunner
from runners.docker_vm import DockerVmRunner
from sessions_app.models import Session, State
from watchdog.models import SessionSample

log = logging.getLogger(__name__)

SESSION_THREADS = 8  # runner calls at once: a pass over 100 Docker sessions takes some 15 s, not 100
CPU_FIRST_INTERVAL = 0.5  # seconds between two reads of /proc/stat when there is no earlier one


@dataclass(frozen=True)
class Reading:
    kind: str
    subject: str  # what the alert is about, unique per kind: a host, a disk, a session's id
    value: float  # percent
    detail: str  # the figures behind it, for people: "7.1 of 8.0 GiB"
    label: str  # what it is of, for people: "host web-1", "session 3f2a… (hello-shell, olivia)"
    session_id: UUID | None = None


class Skips:
    """Why figures were not read: logged once per reason, and again when they are back."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}

    def skip(self, what: str, reason: str) -> None:
        if self._reasons.get(what) != reason:
            log.info("watchdog: not sampling %s: %s", what, reason)
            self._reasons[what] = reason

    def ok(self, what: str) -> None:
        if self._reasons.pop(what, None) is not None:
            log.info("watchdog: sampling %s again", what)

    def retain(self, keep: Iterable[str]) -> None:
        """Forget the reasons of what is no longer sampled (sessions that ended)."""
        kept = set(keep)
        for what in [w for w in self._reasons if w.startswith("session ") and w not in kept]:
            del self._reasons[what]


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# ---- the host -------------------------------------------------------------------------------------

def parse_cpu(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat; idle and iowait are not busy."""
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        raise ValueError("no cpu line in /proc/stat")
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    total = sum(ticks)
    return total - ticks[3] - (ticks[4] if len(ticks) > 4 else 0), total


def parse_meminfo(text: str) -> tuple[int, int]:
    """(total, available) bytes from /proc/meminfo."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[name] = int(parts[0]) * 1024
    try:
        return values["MemTotal"], values["MemAvailable"]
    except KeyError as exc:
        raise ValueError(f"/proc/meminfo has no {exc.args[0]}") from None


def filesystem_use(path: Path) -> tuple[int, int]:
    """(used, total) bytes of the filesystem holding `path`, as df counts them (blocks only root
    may use are in neither)."""
    stats = os.statvfs(path)
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return used, used + stats.f_bavail * stats.f_frsize


class HostSampler:
    """The host's figures; keeps the last /proc/stat read, so CPU is the use since the last pass."""

    def __init__(self, skips: Skips, proc: Path = Path("/proc")) -> None:
        self.skips = skips
        self.proc = proc
        self.name = socket.gethostname()
        self._cpu: tuple[int, int] | None = None

    def sample(self, session_runner_names: Iterable[str] = ()) -> list[Reading]:
        found = [self.cpu(), self.memory(), self.data_disk()]
        return [r for r in found if r is not None] + self.engine_storage(session_runner_names)

    def cpu(self) -> Reading | None:
        try:
            if self._cpu is None:
                self._cpu = parse_cpu((self.proc / "stat").read_text())
                time.sleep(CPU_FIRST_INTERVAL)
            now = parse_cpu((self.proc / "stat").read_text())
        except (OSError, ValueError) as exc:
            self.skips.skip("host CPU", f"cannot read {self.proc}/stat: {exc}")
            return None
        self.skips.ok("host CPU")
        before, self._cpu = self._cpu, now
        busy, total = now[0] - before[0], now[1] - before[1]
        if total <= 0:
            return None  # no tick went by (two passes within 10 ms)
        cpus = os.cpu_count() or 1
        percent = 100.0 * busy / total
        return Reading("host_cpu", f"host {self.name}", percent,
                       f"{percent * cpus / 100:.1f} of {cpus} CPUs busy", f"host {self.name}")

    def memory(self) -> Reading | None:
        try:
            total, available = parse_meminfo((self.proc / "meminfo").read_text())
        except (OSError, ValueError) as exc:
            self.skips.skip("host memory", f"cannot read {self.proc}/meminfo: {exc}")
            return None
        self.skips.ok("host memory")
        used = total - available
        return Reading("host_memory", f"host {self.name}", 100.0 * used / total if total else 0.0,
                       f"{_size(used)} of {_size(total)} in use", f"host {self.name}")

    def data_disk(self) -> Reading | None:
        path = Path(settings.DATA_DIR)
        try:
            used, total = filesystem_use(path)
        except OSError as exc:
            self.skips.skip("the data directory's disk", f"{path}: {exc}")
            return None
        self.skips.ok("the data directory's disk")
        subject = f"{self.name}:{path}"
        return Reading("host_disk_data", subject, 100.0 * used / total if total else 0.0,
                       f"{_size(used)} of {_size(total)} used", f"the data directory {subject}")

    def engine_storage(self, session_runner_names: Iterable[str]) -> list[Reading]:
        """The storage of each local Docker engine in use (DockerRootDir), once per engine."""
        engines = docker_runners_in_use(session_runner_names)
        if not engines:
            self.skips.skip("the engine's storage", "no Docker runner is in use")
            return []
        self.skips.ok("the engine's storage")
        readings: list[Reading] = []
        seen: set[str] = set()
        for runner in engines:
            what = f"the storage of runner {runner.name}'s engine"
            # The runner's own answer to "is the engine on this machine" (its disk limits ask it too).
            if not runner._engine_is_local():
                self.skips.skip(what, "the engine is on another machine; watch its disk there")
                continue
            try:
                info = runner.call_engine("reading engine info", runner.client.info)
            except RunnerError as exc:
                self.skips.skip(what, str(exc))
                continue
            root, engine_id = str(info.get("DockerRootDir") or ""), str(info.get("ID") or runner.name)
            if engine_id in seen:
                continue
            seen.add(engine_id)
            if not root or not Path(root).is_dir():
                self.skips.skip(what, f"its DockerRootDir {root or '(none)'} is not visible here "
                                      "(the platform runs in a container of its own?)")
                continue
            try:
                used, total = filesystem_use(Path(root))
            except OSError as exc:
                self.skips.skip(what, f"{root}: {exc}")
                continue
            self.skips.ok(what)
            subject = f"{info.get('Name') or self.name}:{root}"
            readings.append(Reading("host_disk_engine", subject, 100.0 * used / total if total else 0.0,
                                    f"{_size(used)} of {_size(total)} used", f"the Docker engine's storage {subject}"))
        return readings


def docker_runners_in_use(session_runner_names: Iterable[str]) -> list[DockerRunner]:
    """The Docker runners (a VM-in-Docker runner's engine included) that LAB_RUNNERS configures,
    the default runner resolves to, or running sessions use."""
    aliases = set(settings.LAB_RUNNERS) | {name for name in session_runner_names if name}
    try:
        aliases.add(runners.resolve_alias(settings.LAB_DEFAULT_RUNNER))
    except RunnerError:
        pass  # a default that names no runner: /readyz says so; the others are still watched
    found: list[DockerRunner] = []
    for alias in sorted(aliases):
        try:
            runner = runners.get_runner(alias)
        except (RunnerError, ImproperlyConfigured):
            continue
        engine = runner.engine if isinstance(runner, DockerVmRunner) else runner
        if isinstance(engine, DockerRunner) and engine not in found:
            found.append(engine)
    return found


# ---- the sessions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Figures:
    stats: RunnerStats
    disk: DiskUsage | None


def _read(session: Session) -> _Figures:
    """One session's figures from its runner (on a pool thread: runner calls only, no database)."""
    runner = session.runner()
    return _Figures(runner.stats(session.runner_state), runner.disk_usage(session.runner_state))


def running_sessions() -> list[Session]:
    return list(Session.objects.filter(state=State.RUNNING).exclude(runner_state={})
                .select_related("lab", "user").order_by("created_at"))


def sample_sessions(sessions: list[Session], now: datetime, skips: Skips) -> list[Reading]:
    """Read every session's figures, record them as its SessionSample, and return them as readings.
    Samples of sessions no longer running are deleted."""
    figures: dict[UUID, _Figures] = {}
    if sessions:
        with ThreadPoolExecutor(max_workers=min(SESSION_THREADS, len(sessions)),
                                thread_name_prefix="watchdog") as pool:
            futures = [(session, pool.submit(_read, session)) for session in sessions]
            for session, future in futures:
                what = f"session {session.pk}"
                try:
                    figures[session.pk] = future.result()
                except NotImplementedError:
                    skips.skip(what, f"runner {session.runner_name or session.lab.runner} reports no figures")
                except (RunnerError, ImproperlyConfigured, OSError) as exc:
                    skips.skip(what, str(exc) or type(exc).__name__)
                else:
                    skips.ok(what)
    skips.retain(f"session {s.pk}" for s in sessions)
    _record(figures, now)
    readings: list[Reading] = []
    for session in sessions:
        if session.pk in figures:
            readings.extend(_session_readings(session, figures[session.pk]))
    return readings


def _record(figures: dict[UUID, _Figures], now: datetime) -> None:
    rows = [SessionSample(session_id=pk, cpu_percent=f.stats.cpu_percent, memory_bytes=f.stats.memory_bytes,
                          memory_limit_bytes=f.stats.memory_limit_bytes,
                          disk_used_bytes=f.disk.used_bytes if f.disk else None,
                          disk_total_bytes=f.disk.total_bytes if f.disk else None, sampled_at=now)
            for pk, f in figures.items()]
    if rows:
        SessionSample.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["session"],
            update_fields=["cpu_percent", "memory_bytes", "memory_limit_bytes", "disk_used_bytes",
                           "disk_total_bytes", "sampled_at"])
    SessionSample.objects.exclude(session__state=State.RUNNING).delete()


def _session_readings(session: Session, figures: _Figures) -> list[Reading]:
    subject = str(session.pk)
    label = f"session {session.pk} ({session.lab.slug}, {session.user.get_username()})"
    stats = figures.stats
    # A runner that knows no limit reports 0: the lab's is what the session was given.
    limit = stats.memory_limit_bytes or session.lab.memory_mb << 20
    cpus = float(session.lab.cpu) or 1.0
    readings = [
        Reading("session_memory", subject, 100.0 * stats.memory_bytes / limit,
                f"{_size(stats.memory_bytes)} of {_size(limit)}", label, session.pk),
        # cpu_percent counts 100 per busy CPU: against the lab's CPUs it is the share of its limit.
        Reading("session_cpu", subject, stats.cpu_percent / cpus,
                f"{stats.cpu_percent / 100:.2f} of {cpus:g} CPUs", label, session.pk),
    ]
    disk = figures.disk
    if disk is not None and disk.total_bytes:
        readings.append(Reading("session_disk", subject, 100.0 * disk.fraction,
                                f"{_size(disk.used_bytes)} of {_size(disk.total_bytes)}", label, session.pk))
    return readings
