"""The web server raises its open-descriptor limit at start-up: two descriptors per terminal would
stop a daphne process at a few hundred terminals under the usual soft limit of 1,024."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _limited(soft: int, hard: int):  # type: ignore[no-untyped-def]
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    probe = ("import resource; from webserver.descriptors import raise_descriptor_limit; "
             "print(raise_descriptor_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, preexec_fn=_limited(256, 4096),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["4096", "4096", "4096"]


def test_a_ceiling_caps_it_and_a_higher_soft_limit_is_left_alone() -> None:
    probe = ("import resource; from webserver.descriptors import raise_descriptor_limit; "
             "print(raise_descriptor_limit(ceiling=2000), raise_descriptor_limit(ceiling=100))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, preexec_fn=_limited(256, 4096),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2000", "2000"]  # never lowered


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_web_server_starts_with_the_raised_limit(tmp_path) -> None:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "webserver.serve", "-b", "127.0.0.1", "-p", str(port),
                               "labsite.asgi:application"], cwd=ROOT, preexec_fn=_limited(512, 8192),
                              env={"PATH": "/usr/bin:/bin", "LAB_DATA_DIR": str(tmp_path),
                                   "DJANGO_SETTINGS_MODULE": "labsite.settings"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.1)
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == ["8192", "8192"], line
    finally:
        server.terminate()
        server.wait(timeout=15)
