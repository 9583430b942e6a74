"""Start latency: request → running and request → first byte of a shell.

Measures the platform (start_session with the provisioning job run inline, then a terminal
attach) for the Docker and local runners, and, in the same run, the raw baseline: `docker run -d`
plus a TTY `docker exec` through the same SDK. Prints medians and the ratio to the baseline
(target: ≤ 1.2×).

    .venv/bin/python bench/start_latency.py [--rounds 10] [--image labs/busybox:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup_django(data_dir: str) -> None:
    os.environ["LAB_DATA_DIR"] = data_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ["LAB_EMBEDDED_JOBS"] = "inline"  # measure the job itself, not a thread hand-off
    # Its own container label: a reconciler of a real install on this engine must not touch them.
    os.environ["LAB_RUNNERS"] = '{"docker": {"BACKEND": "runners.docker.DockerRunner", ' \
        '"OPTIONS": {"instance": "labsbench"}}}'
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def first_byte(terminal) -> None:
    while not terminal.read(1024):
        pass


class PlatformCase:
    """One lab on one runner, started through the same action the Start button calls."""

    def __init__(self, runner_alias: str, image_ref: str, network: str) -> None:
        from django.contrib.auth.models import User

        from labs.models import Image, Lab
        from runners import get_runner

        self.user, _ = User.objects.get_or_create(username=f"bench-{runner_alias}-{network}")
        image, _ = Image.objects.get_or_create(name=f"bench-{runner_alias}", defaults={"reference": image_ref})
        self.lab = Lab.objects.create(slug=f"bench-{uuid.uuid4().hex[:8]}", title="bench", image=image,
                                      runner=runner_alias, memory_mb=128, network_mode=network, published=True)
        self.runner = get_runner(runner_alias)

    def once(self) -> tuple[float, float]:
        from sessions_app import actions
        from sessions_app.models import Session, State

        began = time.perf_counter()
        session = actions.start_session(self.user, self.lab)  # not in a transaction: the job runs inline now
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        running_at = time.perf_counter()
        terminal = self.runner.open_terminal(session.runner_state, name="bench")
        first_byte(terminal)
        shell_at = time.perf_counter()
        terminal.close()
        actions.stop_session(session)
        Session.objects.filter(pk=session.pk).delete()
        return running_at - began, shell_at - began


class RawDockerCase:
    """The baseline: what the Docker SDK alone needs for a container and a shell in it."""

    def __init__(self, image_ref: str) -> None:
        import docker

        self.client = docker.from_env()
        self.image_ref = image_ref

    def once(self) -> tuple[float, float]:
        began = time.perf_counter()
        container = self.client.containers.run(self.image_ref, ["sleep", "3600"], detach=True)
        running_at = time.perf_counter()
        exec_id = self.client.api.exec_create(container.id, ["sh", "-i"], stdin=True, tty=True)["Id"]
        sock = self.client.api.exec_start(exec_id, socket=True, tty=True)
        raw = getattr(sock, "_sock", sock)
        while not raw.recv(1024):
            pass
        shell_at = time.perf_counter()
        raw.close()
        container.remove(force=True)
        return running_at - began, shell_at - began


class RawDockerOwnNetworkCase(RawDockerCase):
    """Like-for-like baseline for bridge mode: raw SDK calls with a fresh network per container."""

    def once(self) -> tuple[float, float]:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        began = time.perf_counter()
        network = self.client.networks.create(name, driver="bridge")
        container = self.client.containers.run(self.image_ref, ["sleep", "3600"], detach=True, network=name)
        running_at = time.perf_counter()
        exec_id = self.client.api.exec_create(container.id, ["sh", "-i"], stdin=True, tty=True)["Id"]
        sock = self.client.api.exec_start(exec_id, socket=True, tty=True)
        raw = getattr(sock, "_sock", sock)
        while not raw.recv(1024):
            pass
        shell_at = time.perf_counter()
        raw.close()
        container.remove(force=True)
        network.remove()
        return running_at - began, shell_at - began


def summary(label: str, running: list[float], shell: list[float], base: tuple[list[float], list[float]] | None) -> str:
    r, s = statistics.median(running) * 1000, statistics.median(shell) * 1000
    line = f"{label:<34} running p50 {r:7.1f} ms   first shell byte p50 {s:7.1f} ms"
    if base:
        br, bs = statistics.median(base[0]) * 1000, statistics.median(base[1]) * 1000
        line += f"   ratio {r / br:4.2f}× / {s / bs:4.2f}×"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--image", default="labs/busybox:latest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        setup_django(data_dir)
        cases = {
            "raw docker run -d + exec (baseline)": RawDockerCase(args.image),
            "raw network create + run + exec": RawDockerOwnNetworkCase(args.image),
            "docker runner, network none": PlatformCase("docker", args.image, "none"),
            "docker runner, network bridge": PlatformCase("docker", args.image, "bridge"),
            "local runner (bubblewrap)": PlatformCase("local", "-", "isolated"),
        }
        samples: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in cases}
        for round_number in range(args.rounds + 2):
            for label, case in cases.items():  # interleaved, so engine drift hits every case alike
                running, shell = case.once()
                if round_number >= 2:  # the first two rounds warm caches and connections
                    samples[label][0].append(running)
                    samples[label][1].append(shell)
        baseline_label = "raw docker run -d + exec (baseline)"
        print(f"start latency, {args.rounds} rounds (after 2 warm-up rounds), image {args.image}")
        for label, (running, shell) in samples.items():
            base = None if label == baseline_label else samples[baseline_label]
            print(summary(label, running, shell, base))
        own = samples["raw network create + run + exec"]
        bridge = samples["docker runner, network bridge"]
        print(summary("docker runner, bridge vs like-for-like", *bridge, own))
        print("target: docker runner ≤ 1.2× the raw baseline. Bridge mode creates an isolated network per")
        print("session, which the plain baseline does not; the like-for-like row compares it with raw SDK calls")
        print("doing the same.")


if __name__ == "__main__":
    main()
