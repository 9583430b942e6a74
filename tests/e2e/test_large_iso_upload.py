"""A signed-in learner's 2 GiB ISO streams to disk through the real server (issue 9).

Plain daphne held such an upload in memory several times over and was OOM-killed, for everyone.
Through the ISO page's own endpoint on the real server process (webserver.serve), an ISO of the
default LAB_ISO_MAX_BYTES arrives intact while the server's memory grows by less than 100 MiB
and other pages keep answering. Slow-ish: 2 GiB go through the server, Django's body spool
and the upload handler; it stays in the suite all the same.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.test import Client

from labs.models import Image
from tests.http_bodies import MB, IsoFile, ProcessMemory, Responsiveness, csrf_token, multipart, send_request

SIZE = 2 * 1024**3  # LAB_ISO_MAX_BYTES' default


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stored:
        while block := stored.read(4 * MB):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.slow
def test_a_2_gib_iso_upload_streams_to_disk_in_bounded_memory(asgi_live_server, owner):
    server = asgi_live_server
    assert server.process is not None
    client = Client()
    client.force_login(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    csrf_cookie, token = csrf_token(f"{server.url}/sessions/isos/", cookie)
    memory = ProcessMemory(server.process.pid)
    before = memory.rss()
    memory.reset_peak()

    iso = IsoFile(SIZE)
    content_type, length, body = multipart({"csrfmiddlewaretoken": token}, "file", "big.iso", SIZE, iso.chunks())
    try:
        with Responsiveness(f"{server.url}/") as catalog:
            answer = send_request(server.port, "POST", "/sessions/isos/upload/",
                                  {"Content-Type": content_type, "Cookie": f"{cookie}; csrftoken={csrf_cookie}"},
                                  body, content_length=length)
        growth = memory.peak() - before

        assert growth < 100 * MB, f"the server's resident memory grew by {growth / MB:.0f} MiB"
        assert not catalog.errors and set(catalog.statuses) == {200}, (catalog.errors, catalog.statuses)
        assert catalog.slowest < 2, f"the catalog took {catalog.slowest:.1f} s to answer during the upload"
        assert answer.status == 302 and answer.headers["location"] == "/sessions/isos/", answer
        stored = Image.objects.get(owner=owner)
        assert (stored.size_bytes, stored.sha256) == (SIZE, iso.sha256)
        assert sha256_of(Path(stored.file.path)) == iso.sha256
    finally:
        for image in Image.objects.filter(owner=owner):
            image.file.delete(save=False)
