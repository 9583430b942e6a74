"""The terminal WebSocket: who gets a shell, on the real local (bubblewrap) and Docker runners."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
from channels.db import database_sync_to_async

from runners import get_runner
from sessions_app.models import State

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import (  # noqa: E402
    attach,
    connect,
    expect_close,
    hang_up,
    local_terminal_records,
    make_lab,
    next_message,
    read_until,
    start_session,
)

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_owner_gets_a_local_shell_that_runs_commands(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, ready = await attach(ws_app, session, owner, "name=main&cols=100&rows=30")
    assert ready == {"type": "ready", "name": "main", "reattached": False}
    assert len(local_terminal_records(session)) == 1
    await communicator.send_to(bytes_data=b"echo $((6*7))\n")
    assert b"42" in await read_until(communicator, b"42")
    await hang_up(communicator)
    assert local_terminal_records(session) == []  # the local shell ends with its socket


@pytest.mark.docker
async def test_the_owner_gets_a_docker_shell_that_runs_commands(ws_app, docker_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(docker_runner)))()
    communicator, ready = await attach(ws_app, session, owner)
    assert ready == {"type": "ready", "name": "1", "reattached": False}  # busybox has no tmux
    await communicator.send_to(bytes_data=b"echo $((6*7))\n")
    await read_until(communicator, b"42")
    await hang_up(communicator)


@pytest.mark.docker
async def test_a_docker_image_with_tmux_keeps_the_shell_for_the_same_tab_name(ws_app, docker_runner, owner):
    lab = await database_sync_to_async(lambda: make_lab(docker_runner, "labs/base:bookworm"))()
    session = await database_sync_to_async(start_session)(owner, lab)
    first, ready = await attach(ws_app, session, owner, "name=keep")
    assert ready["reattached"] is False
    await first.send_to(bytes_data=b"export MARK=kept-$((40+2))\n")
    await hang_up(first)
    second, ready = await attach(ws_app, session, owner, "name=keep")
    assert ready["reattached"] is True
    await second.send_to(bytes_data=b"echo $MARK\n")
    await read_until(second, b"kept-42")
    other, ready = await attach(ws_app, session, owner, "name=other")
    assert ready["reattached"] is False
    await hang_up(second)
    await hang_up(other)


async def test_another_learner_is_refused_and_nothing_is_attached(ws_app, local_runner, owner, other_learner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator = await connect(ws_app, session, other_learner)
    await communicator.send_to(bytes_data=b"touch /workspace/intruder\n")
    code, texts = await expect_close(communicator)
    assert code == 4403
    assert texts == []
    assert local_terminal_records(session) == []
    assert not (Path(session.runner_state["root"]) / "workspace" / "intruder").exists()


async def test_an_anonymous_client_is_refused_and_nothing_is_attached(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator = await connect(ws_app, session, None)
    code, texts = await expect_close(communicator)
    assert (code, texts) == (4403, [])
    assert local_terminal_records(session) == []


@pytest.mark.docker
async def test_another_learner_gets_no_exec_in_a_docker_session(ws_app, docker_runner, owner, other_learner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(docker_runner)))()
    communicator = await connect(ws_app, session, other_learner)
    code, _ = await expect_close(communicator)
    assert code == 4403
    container = docker.from_env().containers.get(session.runner_state["container_id"])
    assert not container.attrs.get("ExecIDs")


async def test_staff_may_open_a_learners_terminal(ws_app, local_runner, owner, staff_user):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, staff_user)
    await communicator.send_to(bytes_data=b"echo staff-$((1+1))\n")
    await read_until(communicator, b"staff-2")
    await hang_up(communicator)


async def test_a_cross_origin_upgrade_is_refused(ws_app, local_runner, owner):
    from channels.testing import WebsocketCommunicator

    from consoles.tests.terminal_harness import cookie_for, terminal_path

    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    cookie = await database_sync_to_async(cookie_for)(owner)
    communicator = WebsocketCommunicator(ws_app, terminal_path(session),
                                         headers=[(b"origin", b"http://evil.example"), cookie])
    connected, _ = await communicator.connect(timeout=10)
    assert not connected
    assert local_terminal_records(session) == []


async def test_a_stopped_session_is_refused_with_409(ws_app, local_runner, owner):
    from sessions_app import actions

    def stopped():
        session = start_session(owner, make_lab(local_runner))
        actions.stop_session(session)
        session.refresh_from_db()
        return session

    session = await database_sync_to_async(stopped)()
    assert session.state != State.RUNNING
    communicator = await connect(ws_app, session, owner)
    code, _ = await expect_close(communicator)
    assert code == 4409


async def test_a_tab_name_outside_the_allowed_pattern_is_refused(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator = await connect(ws_app, session, owner, "name=..%2Fetc")
    code, _ = await expect_close(communicator)
    assert code == 4400
    assert local_terminal_records(session) == []


async def test_a_vanished_environment_is_reported_and_closed_with_4500(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    runner = get_runner(local_runner)
    await database_sync_to_async(runner.stop)(session.runner_state)  # gone behind the platform's back
    communicator = await connect(ws_app, session, owner)
    code, texts = await expect_close(communicator)
    assert code == 4500
    assert texts[0]["type"] == "error" and "terminal" in texts[0]["message"]


async def test_the_end_of_the_shell_is_announced_and_the_socket_closed(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=b"exit\n")
    code, texts = await expect_close(communicator)
    assert texts[-1] == {"type": "exit"}
    assert code == 1000
    await hang_up(communicator)
    assert local_terminal_records(session) == []


async def test_ping_is_answered_with_pong(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    while True:
        message = await next_message(communicator)
        if message.get("text"):
            assert json.loads(message["text"]) == {"type": "pong"}
            break
    await hang_up(communicator)


async def test_several_tabs_of_one_session_are_separate_shells(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    one, _ = await attach(ws_app, session, owner, "name=1")
    two, _ = await attach(ws_app, session, owner, "name=2")
    assert len(local_terminal_records(session)) == 2
    await one.send_to(bytes_data=b"echo one-$((2*3))\n")
    await two.send_to(bytes_data=b"echo two-$((3*3))\n")
    assert b"two-9" not in await read_until(one, b"one-6")
    assert b"one-6" not in await read_until(two, b"two-9")
    await hang_up(one)
    await hang_up(two)
