"""deploy/compose.yaml for real: the images built here (no registry), the whole platform started by
docker-compose on the machine's engine, and a learner's first minutes through it: sign in as the
admin that `ensure_admin` creates, start a demo lab on the Docker runner (the worker container
provisions it) and type into its terminal over the real WebSocket of the web container; then a
Docker-in-Docker demo lab, its inner engine and its web preview through the preview host. On the
way, /readyz follows a Redis outage and a killed worker is started again by its restart policy.

Needs docker-compose (Debian's 1.29; deploy/scripts/test.sh installs it), the engine and the locally
built labs/base-rootfs, labs/base, labs/dind, labs/busybox and labs/python:3.11-slim. The first run
builds the images (a few minutes); later runs with the same code reuse them. Nothing is left behind:
the project is taken down with its volumes, its data directory is deleted, and the session
containers, networks and volumes its runner made (labelled labs.managed-by=<this run's instance>)
are removed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.deploy.compose_stack import ADMIN_PASSWORD, Stack, run
from tests.e2e.learner_client import LearnerClient
from tests.learner_terminal import LearnerTerminal

pytestmark = [pytest.mark.compose, pytest.mark.docker, pytest.mark.slow]

LAB = "linux-shell-basics"  # runner "default": the Docker runner, the engine answering
STATE = re.compile(r'id="session-status"[^>]*data-state="([a-z]+)"')

DIND_LAB = "dockerfile-1-health"  # Docker-in-Docker, port 8080 declared for the web preview


def wait_for_state(client: LearnerClient, stack: Stack, session_id: str, timeout: float = 180,
                   passing: tuple[str, ...] = ("requested", "provisioning")) -> str:
    """Poll the session page's live region, as the page does, until the session is past `passing`."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        response = client.http.get(f"{stack.url}/sessions/{session_id}/status/", timeout=30)
        assert response.status_code == 200, response.status_code
        found = STATE.search(response.text)
        state = found.group(1) if found else "?"
        if state not in passing:
            return state
        time.sleep(1)
    raise AssertionError(f"the session was still {state} after {timeout:g} s\n{stack.logs()}")


def wait_for_readiness(stack: Stack, done: Callable[[int, dict[str, Any]], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{stack.url}/readyz", timeout=10)
        if done(response.status_code, response.json()):
            return
        assert time.monotonic() < deadline, f"/readyz still answers {response.status_code} {response.text}"
        time.sleep(0.5)


def open_preview(client: LearnerClient, stack: Stack, session_id: str, port: int) -> requests.Response:
    """What a browser does with the preview's address: the platform redirects to the preview host
    with a token, which answers with the grant cookie and a redirect to the clean address. The
    cookie is `Secure` (browsers take it from http://localhost, a secure context); requests keeps
    Secure cookies for https only, so it is carried by hand here."""
    hop = client.http.get(f"{stack.url}/sessions/{session_id}/preview/{port}/", timeout=30, allow_redirects=False)
    assert hop.status_code == 302, (hop.status_code, hop.text[:300])
    target = hop.headers["Location"]
    assert target.startswith(f"http://localhost:{stack.preview_port}/"), target
    preview = requests.Session()
    granted = preview.get(target, timeout=30, allow_redirects=False)
    assert granted.status_code == 302 and granted.cookies, (granted.status_code, granted.headers)
    clean = requests.compat.urljoin(target, granted.headers["Location"])
    cookies = "; ".join(f"{name}={value}" for name, value in granted.cookies.items())
    return preview.get(clean, headers={"Cookie": cookies}, timeout=30)


def test_the_platform_runs_from_compose_and_serves_a_docker_lab(engine):
    stack = Stack()
    timings: dict[str, float] = {}
    try:
        stack.prepare()
        assert stack.images is not None
        timings["image build"] = stack.images.build_seconds
        timings["compose up to ready"] = stack.up()

        ready = requests.get(f"{stack.url}/readyz", timeout=10).json()
        assert ready["checks"]["database"] == "up" and ready["checks"]["redis"] == "up", ready
        assert ready["checks"]["runners"]["docker"] == {"status": "up", "required": True}, ready
        assert requests.get(f"{stack.url}/healthz", timeout=10).text == "ok"
        # The web container's health check, as the engine runs it (its first run is 30 s away).
        web = stack.compose("ps", "-q", "web").stdout.strip()
        check = json.loads(run(["docker", "inspect", "-f", "{{json .Config.Healthcheck.Test}}", web]).stdout)
        assert check[0] == "CMD-SHELL", check
        run(["docker", "exec", web, "sh", "-c", check[1]])
        # The preview host answers on its own port and serves nothing of the platform there.
        preview_home = requests.get(f"http://localhost:{stack.preview_port}/", timeout=10)
        assert preview_home.status_code == 404, preview_home.status_code

        # Redis goes away and comes back: /readyz names it meanwhile; the worker waits it out (the
        # session started below is its job). A worker that dies is started again by its policy.
        started = time.monotonic()
        stack.compose("stop", "redis")
        wait_for_readiness(stack, lambda status, body: status == 503 and "redis" in body["down"])
        stack.compose("start", "redis")
        wait_for_readiness(stack, lambda status, body: status == 200)
        worker = stack.compose("ps", "-q", "worker").stdout.strip()
        run(["docker", "exec", worker, "sh", "-c", "kill -KILL $(cat /proc/1/task/1/children)"])
        deadline = time.monotonic() + 60
        while run(["docker", "inspect", "-f", "{{.RestartCount}} {{.State.Running}}", worker]).stdout.split() != [
                "1", "true"]:
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.5)
        timings["outage and restart"] = time.monotonic() - started

        started = time.monotonic()
        stack.manage("import_lab", "labs/demo_catalog")
        created = ADMIN_PASSWORD.search(stack.manage("ensure_admin", "--username", "admin"))
        assert created, "ensure_admin printed no password"
        timings["import and admin"] = time.monotonic() - started

        client = LearnerClient(stack.url)
        client.sign_in(created.group(1), created.group(2))
        started = time.monotonic()
        session_id = client.start_lab(LAB, timeout=60)  # queued for the worker container
        state = wait_for_state(client, stack, session_id)
        assert state == "running", (f"the session ended {state}:\n{client.session_page(session_id)[-3000:]}\n"
                                    f"{stack.logs()}")
        timings["session start"] = time.monotonic() - started
        assert len(stack.session_containers()) == 1  # made by the worker, with this install's label

        with LearnerTerminal.open(stack.url, session_id, client.cookie_header) as terminal:
            result = terminal.run("echo $((6*7))", timeout=60)
        assert result.status == 0, result.output
        assert re.search(r"^42\s*$", result.output, re.MULTILINE), result.output

        client.stop_session(session_id)  # the worker tears it down; one live session per learner
        assert wait_for_state(client, stack, session_id, timeout=60, passing=("running", "stopping")) == "stopped"
        assert stack.session_containers() == []

        # Docker-in-Docker: the images the runner preloads are saved into LAB_DATA_DIR and bound into
        # the session by their path on the host, which is why the data directory is a host directory.
        # Then the web preview: the platform redirects to the preview host (its second port), which
        # proxies to the session container's address on the session's own bridge.
        started = time.monotonic()
        dind_id = client.start_lab(DIND_LAB, timeout=60)
        assert dind_id != session_id
        assert wait_for_state(client, stack, dind_id, timeout=240) == "running", (
            f"{client.session_page(dind_id)[-3000:]}\n{stack.logs()}")
        timings["Docker-in-Docker session start"] = time.monotonic() - started
        with LearnerTerminal.open(stack.url, dind_id, client.cookie_header) as terminal:
            # labs/busybox reaches the inner engine only by the preload (there is no registry).
            inner = terminal.run("docker run --rm labs/busybox:latest echo inner-$((40+2))", timeout=120)
            assert inner.status == 0 and re.search(r"^inner-42\s*$", inner.output, re.MULTILINE), inner.output
            terminal.run("mkdir -p /tmp/site && echo compose-preview-ok > /tmp/site/index.html")
            terminal.type("python3 -m http.server 8080 --directory /tmp/site\n")
            terminal.read_until(re.compile(rb"Serving HTTP"), timeout=30)
            page = open_preview(client, stack, dind_id, 8080)
        assert page.status_code == 200, (page.status_code, page.text[:500])
        assert page.text.strip() == "compose-preview-ok"
        client.stop_session(dind_id)
    finally:
        started = time.monotonic()
        stack.down()
        timings["down"] = time.monotonic() - started
        print("compose timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    assert stack.session_containers() == []
