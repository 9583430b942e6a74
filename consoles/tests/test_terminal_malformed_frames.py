"""Garbage from a browser (or anything pretending to be one) never crashes the terminal."""

from __future__ import annotations

import json
import os
import random

import pytest
from channels.db import database_sync_to_async

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import (  # noqa: E402
    attach,
    expect_close,
    hang_up,
    make_lab,
    next_message,
    read_until,
    start_session,
)

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)

GARBAGE_TEXT = [
    "not json at all",
    "{",
    "[1, 2, 3]",
    "null",
    '"resize"',
    json.dumps({"type": "nope"}),
    json.dumps({"no": "type"}),
    json.dumps({"type": ["ping"]}),
    json.dumps({"type": "resize", "cols": "wide", "rows": None}),
    json.dumps({"type": "resize", "cols": 1.5, "rows": 30}),
    json.dumps({"type": "resize", "cols": True, "rows": False}),
    json.dumps({"type": "resize"}),
    json.dumps({"type": "ack", "bytes": -5}),
    json.dumps({"type": "ack", "bytes": "lots"}),
    json.dumps({"type": "ack", "bytes": True}),
    '{"type": "ack", "bytes": NaN}',
    '{"type": "ack", "bytes": Infinity}',
    json.dumps({"type": "ack", "bytes": 10**30}),  # more than was ever sent: clamped
    "[" * 100_000,  # deep nesting, and larger than any control frame
    json.dumps({"type": "ping", "pad": "x" * 200_000}),
    os.urandom(512).decode("latin-1"),  # binary garbage sent as text
    "\x00\ufffd\ud7ff\U0001f600",
]


async def test_malformed_frames_are_ignored_and_the_shell_keeps_working(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    for text in GARBAGE_TEXT:
        await communicator.send_to(text_data=text)
    # An oversized input frame is dropped whole: its command never reaches the shell.
    await communicator.send_to(bytes_data=b"echo huge-$((1+1))\n" + b"#" * (64 * 1024 + 1))
    # Frames a real server would not produce (empty, neither kind, both kinds) are survived too.
    for raw in ({"text": ""}, {"bytes": b""}, {}, {"text": None, "bytes": None}, {"text": "{}", "bytes": b"x"}):
        await communicator.send_input({"type": "websocket.receive", **raw})
    # Invalid UTF-8 as keystrokes, then ^U to clear the line (no ^C/^D/^S: those would be real keys).
    await communicator.send_to(bytes_data=bytes(random.Random(7).randrange(0x80, 0x100) for _ in range(64)) + b"\x15")
    await communicator.send_to(bytes_data=b"echo alive-$((6*7))\n")
    output = await read_until(communicator, b"alive-42")
    assert b"huge-2" not in output
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    while True:
        message = await next_message(communicator)
        if message.get("text"):
            assert json.loads(message["text"]) == {"type": "pong"}  # nothing but the pong, no error frames
            break
    await hang_up(communicator)


async def test_a_stream_of_garbage_is_closed_with_4400(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    for _ in range(100):
        await communicator.send_to(text_data="garbage")
    code, _texts = await expect_close(communicator)
    assert code == 4400
    await hang_up(communicator)


async def test_frames_before_the_session_is_checked_reach_no_shell(ws_app, local_runner, owner, other_learner):
    from consoles.tests.terminal_harness import connect, local_terminal_records

    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator = await connect(ws_app, session, other_learner)
    for text in GARBAGE_TEXT[:5]:
        await communicator.send_to(text_data=text)
    await communicator.send_to(bytes_data=b"echo hi\n")
    code, texts = await expect_close(communicator)
    assert (code, texts) == (4403, [])
    assert local_terminal_records(session) == []
