"""deploy/scripts/supervise.sh, which run.sh starts the worker and the housekeeping loops under:
a command that exits is started again, and a stop request stops the command and the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.redis_server import wait_until

ROOT = Path(__file__).resolve().parent.parent
SUPERVISE = ROOT / "deploy" / "scripts" / "supervise.sh"


def supervise(log: Path, *command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["bash", str(SUPERVISE), "demo", str(log), *command], start_new_session=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def lines(path: Path, prefix: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith(prefix)] if path.exists() else []


@pytest.fixture
def stop_after(request):
    started: list[subprocess.Popen[bytes]] = []
    yield started.append
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def test_a_command_that_exits_is_started_again_with_a_growing_delay(tmp_path, stop_after):
    log = tmp_path / "demo.log"
    supervisor = supervise(log, "sh", "-c", 'echo "run $$"; exit 3')
    stop_after(supervisor)
    wait_until(lambda: len(lines(log, "run ")) >= 3, 15, "the command was not started three times")
    notes = [line for line in log.read_text().splitlines() if "[supervise]" in line]
    assert "exited with status 3 after 0 s; starting it again in 1 s" in notes[0]
    assert "starting it again in 2 s" in notes[1]
    assert len(set(lines(log, "run "))) >= 3  # a new process each time


def test_a_stop_request_stops_the_command_and_the_supervisor(tmp_path, stop_after):
    log = tmp_path / "demo.log"
    # The command takes a moment to finish after SIGTERM, as a worker finishing its job does.
    script = 'echo "pid $$"; trap \'sleep 1; echo "finished"; exit 0\' TERM; while :; do sleep 0.1; done'
    supervisor = supervise(log, "sh", "-c", script)
    stop_after(supervisor)
    pid = int(wait_until(lambda: lines(log, "pid "), 10, "the command did not start")[0].split()[1])
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    assert lines(log, "finished") == ["finished"]  # it was waited for, not killed
    assert not alive(pid)
    assert len(lines(log, "pid ")) == 1  # and not started again
    assert log.read_text().rstrip().endswith("demo: stopped")


def test_the_command_is_out_of_reach_of_a_ctrl_c_meant_for_the_terminal(tmp_path, stop_after):
    """The terminal's Ctrl-C goes to its foreground process group: the supervisor stops the command
    itself, so it is never seen exiting on its own and started again."""
    log = tmp_path / "demo.log"
    supervisor = supervise(log, "sh", "-c", 'echo "pid $$"; exec sleep 60')
    stop_after(supervisor)
    pid = int(wait_until(lambda: lines(log, "pid "), 10, "the command did not start")[0].split()[1])
    assert os.getsid(pid) != os.getsid(supervisor.pid)
    os.killpg(supervisor.pid, signal.SIGINT)  # what Ctrl-C does to the supervisor's group
    assert supervisor.wait(timeout=15) == 0
    assert not alive(pid)
    assert len(lines(log, "pid ")) == 1


def test_run_sh_supervises_the_worker_and_every_housekeeping_loop():
    run_sh = (ROOT / "deploy" / "scripts" / "run.sh").read_text()
    for command in ("run_worker default judge", "reap_sessions --loop 30", "reconcile_runners --loop 300",
                    "gc_snapshots --loop 3600", "manage.py run_watchdog"):
        line = next(line for line in run_sh.splitlines() if command in line)
        assert line.lstrip().startswith("supervise "), line
    assert "rqworker" not in run_sh  # django-rq's worker quits when Redis goes away
