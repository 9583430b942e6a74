"""Typing in a terminal counts as activity (keeps the session from idling out); keepalives do not."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app.models import Session

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import attach, hang_up, make_lab, read_until, start_session  # noqa: E402

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)


def idle_session(owner, runner: str) -> tuple[Session, object]:
    session = start_session(owner, make_lab(runner))
    long_ago = timezone.now() - timedelta(hours=1)
    Session.objects.filter(pk=session.pk).update(last_active_at=long_ago)
    return session, long_ago


def last_active(session: Session):
    return Session.objects.get(pk=session.pk).last_active_at


async def test_terminal_input_updates_last_active_at(ws_app, local_runner, owner, settings):
    settings.LAB_ACTIVITY_WRITE_SECONDS = 0
    session, long_ago = await database_sync_to_async(idle_session)(owner, local_runner)
    communicator, _ = await attach(ws_app, session, owner)
    # Keepalives, acks and resizes are not the learner working.
    await communicator.send_to(text_data=json.dumps({"type": "ping"}))
    await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": 1}))
    await communicator.send_to(text_data=json.dumps({"type": "resize", "cols": 81, "rows": 25}))
    await asyncio.sleep(0.5)
    assert await database_sync_to_async(last_active)(session) == long_ago
    await communicator.send_to(bytes_data=b"echo typed-$((1+1))\n")
    await read_until(communicator, b"typed-2")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await database_sync_to_async(last_active)(session) == long_ago:
        assert loop.time() < deadline, "last_active_at was not updated"
        await asyncio.sleep(0.1)
    assert await database_sync_to_async(last_active)(session) > timezone.now() - timedelta(minutes=1)
    await hang_up(communicator)


async def test_a_burst_of_keystrokes_writes_activity_at_most_once_per_interval(ws_app, local_runner, owner, settings):
    settings.LAB_ACTIVITY_WRITE_SECONDS = 0  # only the consumer's own ~10 s throttle applies
    session, long_ago = await database_sync_to_async(idle_session)(owner, local_runner)
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=b"e")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await database_sync_to_async(last_active)(session) == long_ago:
        assert loop.time() < deadline, "last_active_at was not updated"
        await asyncio.sleep(0.1)
    first = await database_sync_to_async(last_active)(session)
    for key in b"cho burst\n":
        await communicator.send_to(bytes_data=bytes([key]))
    await read_until(communicator, b"burst\r\n")
    await asyncio.sleep(0.3)
    assert await database_sync_to_async(last_active)(session) == first
    await hang_up(communicator)


async def test_staff_typing_in_a_learners_terminal_is_not_the_learners_activity(ws_app, local_runner, owner,
                                                                                 staff_user, settings):
    settings.LAB_ACTIVITY_WRITE_SECONDS = 0
    session, long_ago = await database_sync_to_async(idle_session)(owner, local_runner)
    communicator, _ = await attach(ws_app, session, staff_user)
    await communicator.send_to(bytes_data=b"echo staff-$((1+1))\n")
    await read_until(communicator, b"staff-2")
    await asyncio.sleep(0.5)
    assert await database_sync_to_async(last_active)(session) == long_ago
    await hang_up(communicator)
