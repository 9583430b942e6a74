"""Large request bodies: what they cost the web server, plain daphne against webserver.serve.

Both servers run in the same run, one after the other, as subprocesses on 127.0.0.1 serving
labsite.asgi:application on the same data (SQLite in a temporary directory). For each:

  anonymous POST     a multipart POST of --anon-mb MiB (default 100) to / without a session,
                     with a Content-Length and again chunked: growth of the server's peak
                     resident memory (VmHWM, reset just before), time to the answer's first byte
  signed-in upload   an ISO of --upload-mb MiB (default 256) through the ISO page's endpoint:
                     peak memory growth, throughput (MiB/s, first byte sent to answer received)
  pages meanwhile    the slowest GET of the catalog page while the body was being sent

Ratios are plain daphne / webserver.serve. Plain daphne needs about 12 times a body in memory:
mind --upload-mb on a small machine.

    python bench/upload_memory.py [--anon-mb 100] [--upload-mb 256]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.live_server import AsgiServer, free_port  # noqa: E402
from tests.http_bodies import (  # noqa: E402
    MB,
    Answer,
    IsoFile,
    ProcessMemory,
    Responsiveness,
    csrf_token,
    multipart,
    send_request,
    zeros,
)

SERVERS = {"plain daphne": "daphne", "webserver.serve": "webserver.serve"}


@dataclass
class Figures:
    status: int
    growth_mib: float
    seconds_to_answer: float
    seconds: float
    slowest_page: float


def setup_django(data_dir: str) -> None:
    os.environ.update({"LAB_DATA_DIR": data_dir, "DJANGO_SETTINGS_MODULE": "labsite.settings",
                       "LAB_MANIFEST_STATIC": "false", "DJANGO_DEBUG": "false", "LAB_LOG_LEVEL": "WARNING"})
    for name in ("DATABASE_URL", "DATABASE_TEST_NAME", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def learner_cookie() -> str:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(f"bench-{uuid.uuid4().hex[:6]}", password=uuid.uuid4().hex)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


@contextlib.contextmanager
def running(module: str, log: Path) -> Iterator[AsgiServer]:
    """`python -m <module>` serving the platform (tests/e2e/live_server.py's server process)."""
    server = AsgiServer("127.0.0.1", free_port(), os.environ.copy(), log, module=module)
    server.start()
    try:
        send_request(server.port, "GET", "/", {})  # the first request's imports are not part of any figure
        yield server
    finally:
        server.stop()


def measured(port: int, pid: int, send: Callable[[], Answer]) -> Figures:
    memory = ProcessMemory(pid)
    before = memory.rss()
    memory.reset_peak()
    with Responsiveness(f"http://127.0.0.1:{port}/") as pages:
        answer = send()
    return Figures(answer.status, (memory.peak() - before) / MB, answer.seconds_to_answer, answer.seconds,
                   pages.slowest)


def anonymous_post(port: int, size: int, chunked: bool) -> Answer:
    content_type, length, body = multipart({"title": "x"}, "file", "big.bin", size, zeros(size))
    return send_request(port, "POST", "/", {"Content-Type": content_type}, body,
                        content_length=None if chunked else length, chunked=chunked)


def iso_upload(port: int, size: int, cookie: str) -> Answer:
    csrf_cookie, token = csrf_token(f"http://127.0.0.1:{port}/sessions/isos/", cookie)
    iso = IsoFile(size)
    content_type, length, body = multipart({"csrfmiddlewaretoken": token}, "file", "bench.iso", size, iso.chunks())
    answer = send_request(port, "POST", "/sessions/isos/upload/",
                          {"Content-Type": content_type, "Cookie": f"{cookie}; csrftoken={csrf_cookie}"}, body,
                          content_length=length)
    from labs.models import Image

    stored = Image.objects.filter(sha256=iso.sha256).first()
    if answer.status != 302 or stored is None:
        raise SystemExit(f"the ISO upload failed: {answer.status} {answer.body[:300]!r}")
    stored.file.delete(save=False)  # a few hundred MB each; the sha256 matched
    stored.delete()
    return answer


def ratio(plain: float, ours: float) -> str:
    return f"{plain / ours:8.1f}x" if ours > 0 else "       -"


def report(title: str, results: dict[str, Figures], throughput_mib: float | None = None) -> None:
    plain, ours = results["plain daphne"], results["webserver.serve"]
    print(f"\n{title}")
    print(f"  {'':34}{'plain daphne':>14}{'webserver.serve':>15}  {'plain / ours':>10}")
    print(f"  {'answer':34}{plain.status:>14}{ours.status:>15}")
    print(f"  {'peak RSS growth (MiB)':34}{plain.growth_mib:>14.1f}{ours.growth_mib:>15.1f}"
          f"  {ratio(plain.growth_mib, ours.growth_mib)}")
    print(f"  {'time to the answer (s)':34}{plain.seconds_to_answer:>14.3f}{ours.seconds_to_answer:>15.3f}"
          f"  {ratio(plain.seconds_to_answer, ours.seconds_to_answer)}")
    if throughput_mib is not None:
        plain_rate, our_rate = throughput_mib / plain.seconds, throughput_mib / ours.seconds
        print(f"  {'throughput (MiB/s)':34}{plain_rate:>14.1f}{our_rate:>15.1f}  {ratio(plain_rate, our_rate)}")
    print(f"  {'slowest catalog GET meanwhile (s)':34}{plain.slowest_page:>14.3f}{ours.slowest_page:>15.3f}"
          f"  {ratio(plain.slowest_page, ours.slowest_page)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anon-mb", type=int, default=100, help="size of the anonymous POST (MiB)")
    parser.add_argument("--upload-mb", type=int, default=256, help="size of the signed-in ISO upload (MiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as data_dir:
        setup_django(data_dir)
        log = Path(data_dir) / "servers.log"
        cases: dict[str, dict[str, Figures]] = {"cl": {}, "chunked": {}, "upload": {}}
        for name, module in SERVERS.items():
            cookie = learner_cookie()
            with running(module, log) as server:
                assert server.process is not None
                port, pid = server.port, server.process.pid
                cases["cl"][name] = measured(port, pid, partial(anonymous_post, port, args.anon_mb * MB, False))
                cases["chunked"][name] = measured(port, pid, partial(anonymous_post, port, args.anon_mb * MB, True))
                cases["upload"][name] = measured(port, pid, partial(iso_upload, port, args.upload_mb * MB, cookie))
        print(f"request bodies: plain daphne vs webserver.serve on 127.0.0.1, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        report(f"anonymous {args.anon_mb} MiB multipart POST to /, Content-Length", cases["cl"])
        report(f"anonymous {args.anon_mb} MiB multipart POST to /, chunked", cases["chunked"])
        report(f"signed-in {args.upload_mb} MiB ISO upload", cases["upload"], throughput_mib=args.upload_mb)


if __name__ == "__main__":
    main()
