"""The learner's terminal records when it first sent them output (request → first shell byte, for
/metrics): once per session, through the real consumer on the real local runner, at most one
write per terminal opened and none once the session has it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_app.models import Session

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import attach, hang_up, make_lab, read_until, start_session  # noqa: E402

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def writes(monkeypatch) -> list[datetime]:
    """Every call the consumer makes to record the first output (each is one conditional UPDATE)."""
    calls: list[datetime] = []
    real = Session.note_first_output

    def counted(self: Session, at: datetime) -> bool:
        calls.append(at)
        return real(self, at)

    monkeypatch.setattr(Session, "note_first_output", counted)
    return calls


def first_output_at(session: Session) -> datetime | None:
    return Session.objects.get(pk=session.pk).first_output_at


async def wait_for_first_output(session: Session) -> datetime:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (value := await database_sync_to_async(first_output_at)(session)) is None:
        assert loop.time() < deadline, "first_output_at was not recorded"
        await asyncio.sleep(0.05)
    return value


async def test_the_learners_first_terminal_output_is_recorded_once(ws_app, local_runner, owner, writes: Any):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    assert session.first_output_at is None
    before = timezone.now()
    communicator, _ = await attach(ws_app, session, owner)
    # Plenty of output frames: the prompt, the echo, the command's own lines.
    await communicator.send_to(bytes_data=b"for i in 1 2 3 4 5; do echo line-$i; done\n")
    await read_until(communicator, b"line-5")
    recorded = await wait_for_first_output(session)
    assert before <= recorded <= timezone.now()
    assert recorded >= session.created_at
    await hang_up(communicator)
    assert len(writes) == 1  # one write for this terminal, however many frames it sent

    # Another terminal of the same session (a second tab, a reconnect) leaves the first time alone
    # and does not even try: the row it loaded already has one.
    second, _ = await attach(ws_app, session, owner, "name=2&cols=80&rows=24")
    await second.send_to(bytes_data=b"echo again-$((1+1))\n")
    await read_until(second, b"again-2")
    await hang_up(second)
    assert await database_sync_to_async(first_output_at)(session) == recorded
    assert len(writes) == 1


async def test_two_terminals_opened_together_keep_the_earliest_time(ws_app, local_runner, owner, writes: Any):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    # Both load the row before either has written: each may try once, only the first one counts.
    one, _ = await attach(ws_app, session, owner, "name=1&cols=80&rows=24")
    two, _ = await attach(ws_app, session, owner, "name=2&cols=80&rows=24")
    for communicator, word in ((one, b"one"), (two, b"two")):
        await communicator.send_to(bytes_data=b"echo " + word + b"-$((1+1))\n")
        await read_until(communicator, word + b"-2")
    recorded = await wait_for_first_output(session)
    await hang_up(one)
    await hang_up(two)
    assert 1 <= len(writes) <= 2
    assert recorded == min(writes)
    assert await database_sync_to_async(first_output_at)(session) == recorded


async def test_staff_opening_a_learners_terminal_records_nothing(ws_app, local_runner, owner, staff_user,
                                                                 writes: Any):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, staff_user)
    await communicator.send_to(bytes_data=b"echo staff-$((1+1))\n")
    await read_until(communicator, b"staff-2")
    await asyncio.sleep(0.3)
    await hang_up(communicator)
    assert writes == []
    assert await database_sync_to_async(first_output_at)(session) is None


def test_the_update_is_conditional(owner, lab):
    """Session.note_first_output itself: the first time wins, a later call changes nothing."""
    session = Session.objects.create(user=owner, lab=lab, state="running", runner_name="fake")
    first = timezone.now()
    assert session.note_first_output(first) is True
    assert Session.objects.get(pk=session.pk).note_first_output(first + timedelta(seconds=5)) is False
    assert Session.objects.get(pk=session.pk).first_output_at == first
