"""The editor's JSON endpoints answer malformed, deeply nested and odd-typed bodies with a clear 400.

Attack from issue 9: a 400 KB `[[[…]]]` body answered 500 (a RecursionError in json.loads).
Every change endpoint gets every hostile body from the session's owner, on a real session in
the local sandbox; the workspace must be exactly as before.
"""

from __future__ import annotations

import os

import pytest
from django.urls import reverse

from sessions_app import actions
from sessions_app.models import State
from sessions_app.tests.test_files_views import on_local_sandbox

ENDPOINTS = ("save", "create", "rename", "delete")

NESTED = 400_000  # about 400 KB, as in the issue
HOSTILE_BODIES = {
    "a 400 KB [[[…]]] body": b"[" * NESTED + b"]" * NESTED,
    "deep nesting inside a value": b'{"path": ' + b"[" * NESTED + b"]" * NESTED + b"}",
    "deeply nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "an unclosed [[[…": b"[" * NESTED,
    "nesting deeper than the editor sends": b'{"path": [[[[[[[[[["keep.txt"]]]]]]]]]]}',
    "not JSON": b"path=keep.txt",
    "not UTF-8": b'{"path": "keep\xff.txt"}',
    "a list": b'["keep.txt"]',
    "a string": b'"keep.txt"',
    "null": b"null",
    "a number with 5000 digits": b'{"path": 1' + b"0" * 5000 + b"}",
    "NaN": b'{"path": NaN}',
    "a path as a list": b'{"path": ["keep.txt"], "new_path": ["other.txt"], "content": "x", "version": ""}',
    "a path as an object": b'{"path": {"keep.txt": 1}, "new_path": "other.txt", "content": "x", "version": ""}',
    "a lone surrogate in the path": b'{"path": "keep\\ud800.txt", "new_path": "x\\udfff", "content": "x", '
                                    b'"version": ""}',
}
# Well-formed JSON with values of the wrong type, per endpoint.
ODD_VALUES = {
    "save": [{"path": "keep.txt", "content": 42, "version": ""},
             {"path": "keep.txt", "content": ["x"], "version": ""},
             {"path": "keep.txt", "content": "x", "version": {"v": 1}},
             {"path": "keep.txt", "content": "\ud800", "version": ""}],
    "create": [{"path": "new.txt", "kind": ["file"]}, {"path": "new.txt", "kind": {"file": 1}},
               {"path": "new\udc00.txt", "kind": "file"}],
    "rename": [{"path": "keep.txt", "new_path": 5}, {"path": "keep.txt", "new_path": None},
               {"path": "keep.txt", "new_path": "moved\ud800.txt"}],
    "delete": [{"path": 5}, {"path": True}, {"path": None}, {"path": "keep.txt\udfff"}],
}


@pytest.fixture
def sandboxed(owner, lab, settings, tmp_path, django_capture_on_commit_callbacks):
    """A running session of `lab` in the real local sandbox, with keep.txt in its workspace."""
    on_local_sandbox(lab, settings, tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    workspace = tmp_path / str(session.pk) / "workspace"
    (workspace / "keep.txt").write_text("the learner's work\n")
    yield session, workspace
    with django_capture_on_commit_callbacks(execute=True):
        actions.stop_session(session)


def snapshot(workspace) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, name), workspace): open(os.path.join(root, name), "rb").read()
        for root, _dirs, names in os.walk(workspace) for name in names
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hostile_bodies_get_a_clear_400_and_change_nothing(owner_client, sandboxed, endpoint):
    session, workspace = sandboxed
    before = snapshot(workspace)
    url = reverse(f"sessions:files:{endpoint}", args=[session.pk])
    for name, body in HOSTILE_BODIES.items():
        response = owner_client.post(url, body, content_type="application/json")
        assert response.status_code == 400, (name, response.status_code, response.content[:200])
        message = response.json()["error"]
        assert message and "Traceback" not in message, name
    for body in ODD_VALUES[endpoint]:
        response = owner_client.post(url, body, content_type="application/json")
        assert response.status_code == 400, (body, response.status_code, response.content[:200])
        assert response.json()["error"], body
    assert snapshot(workspace) == before
    assert sorted(os.listdir(workspace)) == ["keep.txt"]


def test_the_nesting_is_named_in_the_message(owner_client, sandboxed):
    session, _workspace = sandboxed
    url = reverse("sessions:files:save", args=[session.pk])
    response = owner_client.post(url, HOSTILE_BODIES["a 400 KB [[[…]]] body"], content_type="application/json")
    assert response.json() == {"error": "The request body must be JSON: nested more than 8 levels deep."}


def test_a_well_formed_save_still_works_after_the_hostile_ones(owner_client, sandboxed):
    session, workspace = sandboxed
    url = reverse("sessions:files:save", args=[session.pk])
    for body in HOSTILE_BODIES.values():
        owner_client.post(url, body, content_type="application/json")
    opened = owner_client.get(reverse("sessions:files:open", args=[session.pk]), {"path": "keep.txt"}).json()
    response = owner_client.post(url, {"path": "keep.txt", "content": "edited\n", "version": opened["version"]},
                                 content_type="application/json")
    assert response.status_code == 200
    assert (workspace / "keep.txt").read_text() == "edited\n"


def test_a_session_of_another_learner_still_answers_404_to_hostile_bodies(client, other_learner, sandboxed):
    session, workspace = sandboxed
    client.force_login(other_learner)
    response = client.post(reverse("sessions:files:save", args=[session.pk]),
                           HOSTILE_BODIES["a 400 KB [[[…]]] body"], content_type="application/json")
    assert response.status_code == 404
    assert (workspace / "keep.txt").read_text() == "the learner's work\n"
