"""Each route's body limit, and who gets it, on the real server process (webserver.serve).

The limits are made small here (a 256 KB default, 2 MB for ISOs and VM images, a 64 KB editor)
so that every case takes a few megabytes. A larger limit goes only to the route's own users,
decided from the session against the real database: anonymous clients, forged cookies, the
sessions of deactivated users and learners on staff routes all get the default.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from labs.models import Image
from tests.http_bodies import KB, MB, IsoFile, csrf_token, multipart, send_request, zeros

DEFAULT = 256 * KB
UPLOAD = 2 * MB
EDITOR = 64 * KB
TOO_LARGE_FOR_DEFAULT = b"This request is larger than the server accepts (256.0 KB)"


@pytest.fixture
def extra_server_env() -> dict[str, str]:
    return {"LAB_MAX_BODY_BYTES": str(DEFAULT), "LAB_ISO_MAX_BYTES": str(UPLOAD),
            "LAB_VM_IMAGE_MAX_BYTES": str(UPLOAD), "LAB_EDITOR_MAX_BYTES": str(EDITOR)}


def cookie_of(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def post_file(server: Any, path: str, size: int, cookie: str = "", chunked: bool = False, **send: Any) -> Any:
    content_type, length, body = multipart({}, "file", "blob.bin", size, zeros(size))
    headers = {"Content-Type": content_type, **({"Cookie": cookie} if cookie else {})}
    return send_request(server.port, "POST", path, headers, body, content_length=None if chunked else length,
                        chunked=chunked, **send)


def editor_save_path() -> str:
    return f"/sessions/{uuid.uuid4()}/files/save/"


def post_editor_save(server: Any, text_size: int, cookie: str, csrf: str = "") -> Any:
    body = json.dumps({"path": "big.txt", "content": "x" * text_size, "version": ""}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Cookie": f"{cookie}; csrftoken={csrf}" if csrf else cookie, "X-CSRFToken": csrf}
    return send_request(server.port, "POST", editor_save_path(), headers, [body], content_length=len(body))


def test_a_body_over_the_default_limit_is_refused_with_413_signed_in_or_not(asgi_live_server, owner):
    for cookie in ("", cookie_of(owner)):
        for chunked in (False, True):
            answer = post_file(asgi_live_server, "/", DEFAULT + 1, cookie, chunked=chunked)
            assert answer.status == 413, (cookie, chunked, answer)
            assert TOO_LARGE_FOR_DEFAULT in answer.body
            assert answer.headers["connection"] == "close"
            assert answer.headers["content-type"].startswith("text/html")

    within = post_file(asgi_live_server, "/", DEFAULT - 1024)
    assert within.status == 403  # Django's CSRF refusal: the view saw the request, body and all
    assert b"CSRF" in within.body


def test_each_upload_route_refuses_a_body_over_its_own_limit(asgi_live_server, owner, staff_user):
    iso = post_file(asgi_live_server, "/sessions/isos/upload/", UPLOAD + 128 * KB, cookie_of(owner))
    assert iso.status == 413, iso
    assert b"ISO images may be at most 2.0 MB." in iso.body

    image = post_file(asgi_live_server, "/admin/labs/image/add/", UPLOAD + 128 * KB, cookie_of(staff_user),
                      chunked=True)
    assert image.status == 413, image
    assert b"VM images uploaded here may be at most 2.0 MB" in image.body

    # The editor's JSON: a text six times the file limit (every byte could be a \\u00XX escape) is too much.
    editor = post_editor_save(asgi_live_server, 6 * EDITOR + 128 * KB, cookie_of(owner))
    assert editor.status == 413, editor
    assert editor.headers["content-type"] == "application/json"
    assert json.loads(editor.body) == {"error": "The editor saves files of at most 64.0 KB."}


def test_the_larger_limits_are_only_for_the_routes_own_users(asgi_live_server, owner, other_learner):
    iso_path, image_path = "/sessions/isos/upload/", "/admin/labs/image/add/"
    deactivated = cookie_of(other_learner)
    other_learner.is_active = False
    other_learner.save(update_fields=["is_active"])
    senders = {
        "anonymous": (iso_path, ""),
        "a forged session cookie": (iso_path, f"sessionid={uuid.uuid4().hex}"),
        "a deactivated user's session": (iso_path, deactivated),
        "a learner on a staff route": (image_path, cookie_of(owner)),
    }
    for chunked in (False, True):
        for who, (path, cookie) in senders.items():
            answer = post_file(asgi_live_server, path, MB, cookie, chunked=chunked)
            assert answer.status == 413, (who, chunked, answer)
            assert TOO_LARGE_FOR_DEFAULT in answer.body, who
            assert (b"only for staff" if path == image_path else b"only for signed-in users") in answer.body


@pytest.fixture
def stored_images() -> Iterator[None]:
    """The files the server stores for the uploads here (the media root is shared with other runs) go afterwards."""
    yield
    for image in Image.objects.exclude(file=""):
        image.file.delete(save=False)


def test_signed_in_users_upload_within_their_routes_limit(asgi_live_server, owner, staff_user, stored_images):
    server = asgi_live_server
    learner = cookie_of(owner)
    csrf_cookie, token = csrf_token(f"{server.url}/sessions/isos/", learner)
    iso = IsoFile(3 * MB // 2)
    content_type, length, body = multipart({"csrfmiddlewaretoken": token}, "file", "mine.iso", iso.size,
                                           iso.chunks())
    answer = send_request(server.port, "POST", "/sessions/isos/upload/",
                          {"Content-Type": content_type, "Cookie": f"{learner}; csrftoken={csrf_cookie}"}, body,
                          content_length=length, wait_for_continue=True)
    assert answer.continued  # "100 Continue" once the body was accepted, not before
    assert answer.status == 302 and answer.headers["location"] == "/sessions/isos/", answer
    stored = Image.objects.get(owner=owner)
    assert (stored.size_bytes, stored.sha256) == (iso.size, iso.sha256)

    staff = cookie_of(staff_user)
    csrf_cookie, token = csrf_token(f"{server.url}/admin/labs/image/add/", staff)
    disk = IsoFile(3 * MB // 2)
    fields = {"csrfmiddlewaretoken": token, "name": "staff-upload", "kind": "vm", "active": "on",
              "disk_format": "iso", "description": "", "reference": ""}
    content_type, length, body = multipart(fields, "file", "staff.iso", disk.size, disk.chunks())
    answer = send_request(server.port, "POST", "/admin/labs/image/add/",
                          {"Content-Type": content_type, "Cookie": f"{staff}; csrftoken={csrf_cookie}"}, body,
                          content_length=length)
    assert answer.status == 302, answer.body[-2000:]
    assert Image.objects.get(name="staff-upload").sha256 == disk.sha256

    # Past the default, within the editor's limit: the view answers (no such session here), not the server.
    csrf_cookie, _ = csrf_token(f"{server.url}/sessions/isos/", learner)
    editor = post_editor_save(server, 6 * EDITOR, learner, csrf_cookie)
    assert editor.status == 404, editor


def test_a_refused_client_waiting_for_100_continue_never_sends_its_body(asgi_live_server):
    answer = post_file(asgi_live_server, "/", 100 * MB, wait_for_continue=True)
    assert answer.status == 413
    assert not answer.continued
    assert answer.bytes_sent == 0 and answer.send_error == "answered before the body was sent"


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_after_a_refusal_the_rest_of_the_body_is_never_read_as_another_request(asgi_live_server):
    smuggled = b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 20
    body = smuggled + b"x" * (DEFAULT * 2)
    with socket.create_connection(("127.0.0.1", asgi_live_server.port), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answers = read_all(sock)
    assert answers.startswith(b"HTTP/1.1 413 ")
    assert answers.count(b"HTTP/1.1 ") == 1, answers


def test_a_kept_alive_connection_serves_the_next_request_after_a_streamed_body(asgi_live_server):
    with socket.create_connection(("127.0.0.1", asgi_live_server.port), timeout=30) as sock:
        body = b"a=" + b"b" * (DEFAULT - 10)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                     + b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = read_all(sock)
    assert answers.startswith(b"HTTP/1.1 403 ")  # CSRF, after Django read the body
    assert answers.count(b"HTTP/1.1 200 ") == 1, answers[:300]


def test_a_websocket_handshake_with_a_body_is_refused(asgi_live_server):
    answer = send_request(asgi_live_server.port, "GET", "/ws/anything/",
                          {"Upgrade": "websocket", "Connection": "Upgrade"}, [b"x" * 10], content_length=10)
    assert answer.status == 400
    assert b"A WebSocket handshake has no body." in answer.body
