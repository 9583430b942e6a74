"""Reaper teardown: N expired Docker sessions removed by one reaper pass, against raw `docker rm -f`.

Starts N real sessions on the Docker runner (busybox, network none, started in parallel outside
the timing), marks them expired, and times one reaper pass with the teardown jobs run inline, as a
worker runs them one after another. In the same run, the baseline removes as many plain containers
with the SDK's `remove(force=True)`, one after another. Also prints what one teardown's listing
costs with N sessions present: the session's own (label-filtered) listing against the listing of
every managed environment that each teardown made before (which made a pass O(N²)).

Goal (issue 14): 1,000 expired sessions torn down in ≤ 2 minutes.

    .venv/bin/python bench/reaper_teardown.py [--sessions 200] [--image labs/busybox:latest]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from start_latency import setup_django  # noqa: E402  (bench/ is the script's own directory)


def start_sessions(count: int, image_ref: str) -> list[object]:
    """`count` running sessions whose time is up, their containers started by the real runner."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from labs.models import Image, Lab
    from runners import get_runner
    from runners.base import SessionSpec
    from sessions_app.models import Session, State

    runner = get_runner("docker")
    image, _ = Image.objects.get_or_create(name="bench-reaper", defaults={"reference": image_ref})
    lab = Lab.objects.create(slug=f"bench-{uuid.uuid4().hex[:8]}", title="bench", image=image, runner="docker",
                             memory_mb=32, network_mode="none", published=True)
    users = [User.objects.create(username=f"bench-reaper-{uuid.uuid4().hex[:10]}") for _ in range(count)]
    ids = [uuid.uuid4() for _ in range(count)]

    def start(index: int) -> dict[str, object]:
        spec = SessionSpec(session_id=str(ids[index]), user_id=users[index].pk, username="learner",
                           lab_slug=lab.slug, image=image_ref, memory_mb=32, network_mode="none")
        return runner.start(spec).state

    with ThreadPoolExecutor(max_workers=4) as pool:
        states = list(pool.map(start, range(count)))
    past = timezone.now() - timedelta(minutes=1)
    return Session.objects.bulk_create(
        Session(pk=ids[i], user=users[i], lab=lab, runner_name="docker", state=State.RUNNING, runner_state=states[i],
                started_at=past - timedelta(hours=1), expires_at=past, last_active_at=past)
        for i in range(count)
    )


def listing_costs(session_id: str, rounds: int = 5) -> tuple[float, float]:
    """Median seconds of one session's own listing and of the whole listing, with every session present."""
    from runners import get_runner

    runner = get_runner("docker")
    own, whole = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        runner.list_managed_for(session_id)
        own.append(time.perf_counter() - began)
        began = time.perf_counter()
        runner.list_managed()
        whole.append(time.perf_counter() - began)
    return statistics.median(own), statistics.median(whole)


def raw_removal(count: int, image_ref: str) -> float:
    """Seconds for the SDK alone to remove `count` running containers, one after another."""
    import docker

    client = docker.from_env()

    def run(_: int) -> object:
        return client.containers.run(image_ref, ["sleep", "3600"], detach=True, network_mode="none",
                                     labels={"labs.bench": "reaper"})

    with ThreadPoolExecutor(max_workers=4) as pool:
        containers = list(pool.map(run, range(count)))
    began = time.perf_counter()
    for container in containers:
        container.remove(force=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--image", default="labs/busybox:latest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        setup_django(data_dir)
        from runners import get_runner
        from sessions_app.models import LIVE_STATES, Session
        from sessions_app.reaping import reap

        print(f"reaper teardown: {args.sessions} expired Docker sessions on {args.image}, network none")
        sessions = start_sessions(args.sessions, args.image)
        own, whole = listing_costs(str(sessions[0].pk))
        began = time.perf_counter()
        reap()
        platform = time.perf_counter() - began
        left = Session.objects.filter(state__in=LIVE_STATES).count()
        leftover_containers = len(get_runner("docker").list_managed())
        raw = raw_removal(args.sessions, args.image)
        per = platform / args.sessions
        print(f"  one reaper pass (teardowns inline): {platform:6.1f} s, {per * 1000:6.1f} ms per session, "
              f"{left} still live, {leftover_containers} environments left")
        print(f"  raw docker rm -f, one by one:       {raw:6.1f} s, {raw / args.sessions * 1000:6.1f} ms per container")
        print(f"  ratio platform / raw: {platform / raw:4.2f}×")
        print(f"  one teardown's listing with {args.sessions} sessions present: own {own * 1000:.1f} ms, "
              f"every managed environment {whole * 1000:.1f} ms ({whole / own:.1f}× — what each teardown paid before)")
        print(f"  projected for 1,000 sessions at this rate: {per * 1000:.0f} s (goal ≤ 120 s)")


if __name__ == "__main__":
    main()
