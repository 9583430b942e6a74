"""The editor's JSON endpoints: who may use them, CSRF, and the answers the editor script relies on.

Permissions and error shapes run on the in-memory fake runner; one round trip runs on the
real local sandbox so create, rename and delete (which use exec) are covered end to end.
"""

from __future__ import annotations

import json
import os

import pytest
from django.test import Client
from django.urls import reverse

from runners import fake, reset_cache
from sessions_app import actions
from sessions_app.models import Session, State
from sessions_app.workspace import version_of


@pytest.fixture
def running(owner, lab, django_capture_on_commit_callbacks) -> Session:
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING
    return session


def files(session: Session) -> dict[str, bytes]:
    """What the fake environment holds, by path."""
    env = fake.ENVIRONMENTS[session.runner_state["env_id"]]
    return {name: data for name, (data, _mtime) in env["files"].items()}


def put(session: Session, path: str, data: bytes) -> None:
    fake.ENVIRONMENTS[session.runner_state["env_id"]]["files"][path] = (data, 0.0)


def url(session: Session, name: str) -> str:
    return reverse(f"sessions:files:{name}", args=[session.pk])


def post(client: Client, session: Session, name: str, body: dict) -> tuple[int, dict]:
    response = client.post(url(session, name), json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_the_owner_lists_opens_and_saves(owner_client, running):
    put(running, "app/main.py", b"print(1)\n")
    listing = owner_client.get(url(running, "list"))
    assert listing.status_code == 200
    assert listing.json()["entries"] == [
        {"name": "app", "path": "app", "is_dir": True, "size": 0, "mtime": 0.0}
    ]
    assert listing["Cache-Control"].startswith("max-age=0")
    opened = owner_client.get(url(running, "open"), {"path": "app/main.py"}).json()
    assert opened["content"] == "print(1)\n" and opened["version"] == version_of(b"print(1)\n")
    status, body = post(owner_client, running, "save",
                        {"path": "app/main.py", "content": "print(2)\n", "version": opened["version"]})
    assert status == 200 and body["version"] == version_of(b"print(2)\n")
    assert files(running)["app/main.py"] == b"print(2)\n"


def test_a_conflict_answers_409_with_what_is_on_disk_and_writes_nothing(owner_client, running):
    put(running, "notes.md", b"mine\n")
    opened = owner_client.get(url(running, "open"), {"path": "notes.md"}).json()
    put(running, "notes.md", b"changed in the terminal\n")
    status, body = post(owner_client, running, "save",
                        {"path": "notes.md", "content": "my edit\n", "version": opened["version"]})
    assert status == 409
    assert body["conflict"] is True
    assert body["disk_content"] == "changed in the terminal\n"
    assert body["disk_version"] == version_of(b"changed in the terminal\n")
    assert "changed on disk" in body["error"]
    assert files(running)["notes.md"] == b"changed in the terminal\n"
    # "Overwrite" in the dialog saves again on top of the disk version.
    status, _ = post(owner_client, running, "save",
                     {"path": "notes.md", "content": "my edit\n", "version": body["disk_version"]})
    assert status == 200 and files(running)["notes.md"] == b"my edit\n"


def test_errors_come_back_as_json_with_a_message(owner_client, running, settings):
    settings.LAB_EDITOR_MAX_BYTES = 10
    put(running, "big.txt", b"x" * 11)
    put(running, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    cases = [
        (owner_client.get(url(running, "open"), {"path": "../etc/passwd"}), 400, "above the workspace"),
        (owner_client.get(url(running, "open"), {"path": "/etc/passwd"}), 400, "absolute path"),
        (owner_client.get(url(running, "open"), {"path": "big.txt"}), 413, "up to 10 bytes"),
        (owner_client.get(url(running, "open"), {"path": "image.png"}), 415, "binary file"),
        (owner_client.get(url(running, "open"), {"path": "missing.txt"}), 404, "no such file"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.content
        assert message in response.json()["error"]
    status, body = post(owner_client, running, "save", {"path": "../x", "content": "x", "version": ""})
    assert status == 400 and "above the workspace" in body["error"]
    status, body = post(owner_client, running, "save", {"path": "a.txt", "content": "x" * 11, "version": ""})
    assert status == 413
    bad_json = owner_client.post(url(running, "save"), "not json", content_type="application/json")
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    status, body = post(owner_client, running, "save", {"path": "a.txt", "content": "x" * 200, "version": ""})
    assert status == 413 and "larger than the server accepts" in body["error"]
    assert set(files(running)) == {"big.txt", "image.png"}


def test_a_stopped_session_answers_409(owner_client, running, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(running)
    response = owner_client.get(url(running, "list"))
    assert response.status_code == 409 and "not running" in response.json()["error"]


def test_another_learner_gets_404_everywhere_and_changes_nothing(client, other_learner, running):
    put(running, "secret.txt", b"owner's work\n")
    client.force_login(other_learner)
    assert client.get(url(running, "list")).status_code == 404
    assert client.get(url(running, "open"), {"path": "secret.txt"}).status_code == 404
    for name, body in [
        ("save", {"path": "secret.txt", "content": "pwned", "version": version_of(b"owner's work\n")}),
        ("create", {"path": "new.txt", "kind": "file"}),
        ("rename", {"path": "secret.txt", "new_path": "moved.txt"}),
        ("delete", {"path": "secret.txt"}),
    ]:
        response = client.post(url(running, name), json.dumps(body), content_type="application/json")
        assert response.status_code == 404, name
    assert files(running) == {"secret.txt": b"owner's work\n"}


def test_anonymous_visitors_get_404(client, running):
    assert client.get(url(running, "list")).status_code == 404
    assert client.post(url(running, "delete"), "{}", content_type="application/json").status_code == 404


def test_staff_may_open_a_learners_files(client, staff_user, running):
    put(running, "a.txt", b"hello\n")
    client.force_login(staff_user)
    assert client.get(url(running, "open"), {"path": "a.txt"}).json()["content"] == "hello\n"


def test_changes_need_the_csrf_token(owner, running, password):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    body = json.dumps({"path": "a.txt", "content": "x", "version": ""})
    refused = client.post(url(running, "save"), body, content_type="application/json")
    assert refused.status_code == 403
    assert files(running) == {}
    client.get(reverse("sessions:detail", args=[running.pk]))  # sets the CSRF cookie, as the page does
    token = client.cookies["csrftoken"].value
    accepted = client.post(url(running, "save"), body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 200
    assert files(running) == {"a.txt": b"x"}


def test_changes_are_posts_only(owner_client, running):
    for name in ("save", "create", "rename", "delete"):
        assert owner_client.get(url(running, name), {"path": "a.txt"}).status_code == 405
    assert owner_client.post(url(running, "open"), {"path": "a.txt"}).status_code == 405


def test_saving_counts_as_activity(owner_client, running, settings):
    settings.LAB_ACTIVITY_WRITE_SECONDS = 0
    Session.objects.filter(pk=running.pk).update(last_active_at=running.created_at)
    post(owner_client, running, "save", {"path": "a.txt", "content": "x", "version": ""})
    running.refresh_from_db()
    assert running.last_active_at > running.created_at


def on_local_sandbox(lab, settings, root) -> None:
    """Run `lab` on the real local sandbox (bubblewrap), without network, its sessions under `root`."""
    if not os.access("/usr/bin/bwrap", os.X_OK):
        pytest.fail("bubblewrap is required for this test: apt-get install bubblewrap")
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "local-files": {
        "BACKEND": "runners.local.LocalRunner", "OPTIONS": {"root": str(root)}}}
    reset_cache()
    lab.runner = "local-files"
    lab.network_mode = "none"
    lab.save()


def test_a_full_round_trip_on_the_local_sandbox(owner_client, owner, lab, settings, tmp_path,
                                                 django_capture_on_commit_callbacks):
    on_local_sandbox(lab, settings, tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    workspace = tmp_path / str(session.pk) / "workspace"
    try:
        assert post(owner_client, session, "create", {"path": "src", "kind": "folder"})[0] == 201
        status, body = post(owner_client, session, "create", {"path": "src/app.py", "kind": "file"})
        assert status == 201 and body["version"] == version_of(b"")
        status, body = post(owner_client, session, "create", {"path": "src/app.py", "kind": "file"})
        assert status == 409 and "already exists" in body["error"]
        assert post(owner_client, session, "save",
                    {"path": "src/app.py", "content": "print('hi')\n", "version": version_of(b"")})[0] == 200
        assert post(owner_client, session, "rename", {"path": "src", "new_path": "lib"})[0] == 200
        assert (workspace / "lib" / "app.py").read_text() == "print('hi')\n"
        listing = owner_client.get(url(session, "list"), {"path": "lib"}).json()
        assert [e["path"] for e in listing["entries"]] == ["lib/app.py"]
        assert post(owner_client, session, "delete", {"path": "lib"})[0] == 200
        assert sorted(os.listdir(workspace)) == []
    finally:
        with django_capture_on_commit_callbacks(execute=True):
            actions.stop_session(session)
