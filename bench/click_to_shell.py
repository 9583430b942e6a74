"""Click → shell: the path a learner feels, from pressing Start to the first byte of their shell.

A real daphne server (the platform as `deploy/scripts/run.sh` serves it with embedded defaults:
SQLite, jobs on the web process's threads, the Docker runner) and a client that does what the
browser does: POST the lab page's Start form (cookie, CSRF token), load the session page it is
sent to, follow the page's event stream (/sessions/<id>/stream/) until the session is running,
open the terminal WebSocket and wait for the first byte of output. Each phase is timed, so the
breakdown shows where the time goes (start request, the page, running, first byte).

Baseline, in the same run and interleaved round by round: the Docker SDK alone, `docker run -d`
plus a TTY `docker exec` of the login shell, on the same image and with a network of its own
where the lab's mode creates one (like for like with what the runner does).

Goal (issue 14): Start POST → first shell byte ≤ 1.2× the baseline, for every demo lab image.

    .venv/bin/python bench/click_to_shell.py [--rounds 5] [--labs linux-shell-basics,busybox]
    (--labs all adds the Docker-in-Docker demo labs)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from terminal import free_port, start_daphne  # noqa: E402  (bench/ is the script's own directory)

DEMO_CONTAINER_LABS = ("linux-shell-basics",)
DEMO_DIND_LABS = ("dockerfile-1-health", "dockerfile-2-layers", "dockerfile-3-multistage")
BUSYBOX = "busybox"  # a lab of the bench's own: the smallest image, network none (the runner-only bench's case)
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def setup_django(data_dir: str, instance: str) -> None:
    """The embedded defaults of run.sh, in a directory of the bench's own."""
    os.environ["LAB_DATA_DIR"] = data_dir
    os.environ["LAB_RUNNERS"] = json.dumps({"docker": {"BACKEND": "runners.docker.DockerRunner",
                                                       "OPTIONS": {"instance": instance}}})
    os.environ["LAB_DEFAULT_RUNNER"] = "docker"
    for name in ("DATABASE_URL", "REDIS_URL", "LAB_EMBEDDED_JOBS"):
        os.environ.pop(name, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "labsite.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("import_lab", str(ROOT / "labs/demo_catalog"), verbosity=0)


def make_busybox_lab() -> None:
    from labs.models import Image, Lab

    image, _ = Image.objects.get_or_create(name="bench-busybox", defaults={"reference": "labs/busybox:latest"})
    Lab.objects.get_or_create(slug=BUSYBOX, defaults={"title": "busybox", "image": image, "runner": "docker",
                                                      "memory_mb": 128, "network_mode": "none", "published": True,
                                                      "consoles": ["terminal"]})


def learner_cookie() -> tuple[Any, str]:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(f"bench-{uuid.uuid4().hex[:6]}", password=uuid.uuid4().hex)
    client = Client()
    client.force_login(user)
    return user, client.cookies["sessionid"].value


@dataclass
class Phases:
    posted: list[float] = field(default_factory=list)  # the Start POST answered (a redirect)
    page: list[float] = field(default_factory=list)  # the session page loaded
    running: list[float] = field(default_factory=list)  # the stream said running
    first_byte: list[float] = field(default_factory=list)  # the shell's first byte through the WebSocket


class PlatformCase:
    def __init__(self, port: int, slug: str, cookie: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        self.slug = slug
        self.cookie = cookie

    async def once(self, phases: Phases) -> None:
        import aiohttp
        from websockets.asyncio.client import connect

        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar, cookies={"sessionid": self.cookie}) as http:
            async with http.get(f"{self.base}/labs/{self.slug}/") as page:  # the lab page, outside the timing
                token = CSRF_FIELD.search(await page.text())
                assert token, "no Start form on the lab page"
            began = time.perf_counter()
            async with http.post(f"{self.base}/labs/{self.slug}/start/", data={"csrfmiddlewaretoken": token.group(1)},
                                 headers={"Referer": f"{self.base}/labs/{self.slug}/", "Origin": self.base},
                                 allow_redirects=False) as answer:
                location = answer.headers.get("Location", "")
                assert answer.status == 302 and "/sessions/" in location, (answer.status, location)
            posted = time.perf_counter()
            session_id = location.rstrip("/").rsplit("/", 1)[1]
            async with http.get(f"{self.base}{location}") as page:
                await page.read()
            paged = time.perf_counter()
            async with http.get(f"{self.base}/sessions/{session_id}/stream/",
                                headers={"Accept": "text/event-stream"}) as stream:
                await _until_running(stream)
            running = time.perf_counter()
            ws = await connect(f"{self.ws_base}/ws/sessions/{session_id}/terminal/?name=1&cols=80&rows=24",
                               origin=self.base, additional_headers={"Cookie": f"sessionid={self.cookie}"},
                               compression=None, proxy=None, ping_interval=None)
            while not isinstance(await ws.recv(), bytes):
                pass  # the "ready" message, then output
            shell = time.perf_counter()
            await ws.close()
            stop_token = CSRF_FIELD.search(await (await http.get(f"{self.base}{location}")).text())
            async with http.post(f"{self.base}/sessions/{session_id}/stop/",
                                 data={"csrfmiddlewaretoken": stop_token.group(1) if stop_token else ""},
                                 headers={"Referer": f"{self.base}{location}", "Origin": self.base},
                                 allow_redirects=False) as stopped:
                assert stopped.status in (302, 303), stopped.status
        phases.posted.append(posted - began)
        phases.page.append(paged - began)
        phases.running.append(running - began)
        phases.first_byte.append(shell - began)


async def _until_running(stream: Any) -> None:
    event = ""
    async for raw in stream.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "state":
            state = json.loads(line[5:]).get("state")
            if state == "running":
                return
            if state in ("failed", "stopped", "expired"):
                raise RuntimeError(f"the session ended while starting: {state}")
        elif not line:
            event = ""
    raise RuntimeError("the stream ended before the session was running")


class RawCase:
    """`docker run -d` + a TTY exec of the login shell through the SDK, with a network of its own
    when the lab's mode gives each session one."""

    def __init__(self, image_ref: str, own_network: bool) -> None:
        import docker

        self.client = docker.from_env()
        self.image_ref = image_ref
        self.own_network = own_network

    def once(self, phases: Phases) -> None:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        began = time.perf_counter()
        network = self.client.networks.create(name, driver="bridge") if self.own_network else None
        container = self.client.containers.run(self.image_ref, ["sleep", "3600"], detach=True,
                                               network=name if network else None,
                                               network_mode=None if network else "none")
        running = time.perf_counter()
        exec_id = self.client.api.exec_create(container.id, ["sh", "-il"], stdin=True, tty=True)["Id"]
        sock = self.client.api.exec_start(exec_id, socket=True, tty=True)
        raw = getattr(sock, "_sock", sock)
        while not raw.recv(1024):
            pass
        shell = time.perf_counter()
        raw.close()
        container.remove(force=True)
        if network is not None:
            network.remove()
        phases.running.append(running - began)
        phases.first_byte.append(shell - began)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms ({min(values) * 1000:.0f}–{max(values) * 1000:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--labs", default=",".join((BUSYBOX, *DEMO_CONTAINER_LABS)),
                        help="comma-separated lab slugs; 'all' = busybox and every Docker demo lab")
    args = parser.parse_args()
    slugs = [BUSYBOX, *DEMO_CONTAINER_LABS, *DEMO_DIND_LABS] if args.labs == "all" else args.labs.split(",")
    instance = f"labsbench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as data_dir:
        setup_django(data_dir, instance)
        make_busybox_lab()
        from labs.models import Lab

        _, cookie = learner_cookie()
        port = free_port()
        daphne = start_daphne(data_dir, port)
        try:
            print(f"click → shell: daphne on 127.0.0.1:{port} (embedded defaults), {args.rounds} rounds after one "
                  f"warm-up, {os.cpu_count()} cores; median (min–max) from the Start POST")
            for slug in slugs:
                lab = Lab.objects.select_related("image").get(slug=slug)
                platform, raw = PlatformCase(port, slug, cookie), RawCase(lab.image.reference,
                                                                          lab.network_mode in ("bridge", "isolated"))
                platform_phases, raw_phases = Phases(), Phases()
                for round_number in range(args.rounds + 1):
                    keep = round_number > 0  # the first round warms caches and connections
                    platform_sample, raw_sample = Phases(), Phases()
                    asyncio.run(platform.once(platform_sample))
                    raw.once(raw_sample)
                    if keep:
                        for target, sample in ((platform_phases, platform_sample), (raw_phases, raw_sample)):
                            for name in ("posted", "page", "running", "first_byte"):
                                getattr(target, name).extend(getattr(sample, name))
                ratio = statistics.median(platform_phases.first_byte) / statistics.median(raw_phases.first_byte)
                print(f"\n{slug} ({lab.image.reference}, network {lab.network_mode})")
                print(f"  first shell byte   platform {spread(platform_phases.first_byte)}   "
                      f"raw {spread(raw_phases.first_byte)}   ratio {ratio:4.2f}× (goal ≤ 1.2×)")
                print(f"  breakdown          Start answered {spread(platform_phases.posted)}, session page "
                      f"{spread(platform_phases.page)}, stream says running {spread(platform_phases.running)}")
                print(f"  raw running        {spread(raw_phases.running)} (docker run -d returned)")
        finally:
            daphne.terminate()
            try:
                daphne.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daphne.kill()
            subprocess.run(["docker", "rm", "-f", *subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=labs.managed-by={instance}"],
                capture_output=True, text=True, check=True).stdout.split()], capture_output=True, check=False)


if __name__ == "__main__":
    main()
