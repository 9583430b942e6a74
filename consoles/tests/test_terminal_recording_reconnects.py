"""A recorded terminal that reconnects (same tab name, same session: a page reload, a network drop)
goes on in the same recording: one row, one cast, times continuing after a "reconnected" marker.
A new tab name gets its own recording; a recording stopped at its size limit stays stopped.
Real consumer, real runners (Docker with tmux, where the shell outlives the socket; the local
sandbox), real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from consoles import recordings
from consoles.models import TerminalRecording

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import (  # noqa: E402
    attach,
    hang_up,
    make_lab,
    read_until,
    start_session,
)
from consoles.tests.test_terminal_recording import output_text, parse_cast  # noqa: E402

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)


def rows_of(session) -> list[TerminalRecording]:
    return list(TerminalRecording.objects.filter(session=session).order_by("started_at", "pk"))


def event_index(events: list[list], code: str, needle: str) -> int:
    return next(i for i, (_at, c, data) in enumerate(events) if c == code and needle in data)


async def run(communicator, command: str, answer: str) -> None:
    """Type a command and wait for its answer (computed by the shell, so the echo does not count)."""
    await communicator.send_to(bytes_data=f"{command}\n".encode())
    await read_until(communicator, answer.encode())


async def visit(ws_app, session, owner, name: str, command: str, answer: str) -> None:
    """Open terminal `name`, run one command in it and close it again (a page that comes and goes)."""
    communicator, _ready = await attach(ws_app, session, owner, f"name={name}")
    await run(communicator, command, answer)
    await hang_up(communicator)


async def ended_recording(session, media_root) -> tuple[TerminalRecording, dict, list[list]]:
    """The session's one recording, ended, with its size on record; its cast, parsed strictly."""
    [row] = await database_sync_to_async(rows_of)(session)
    path = media_root / row.file.name
    assert row.ended_at is not None and row.size_bytes == path.stat().st_size
    header, events = parse_cast(path)  # one header, times never going back
    return row, header, events


async def recorded_session(runner: str, owner, reference: str = "labs/busybox:latest", **fields):
    lab = await database_sync_to_async(lambda: make_lab(runner, reference, record_terminal=True, **fields))()
    return await database_sync_to_async(start_session)(owner, lab)


@pytest.mark.docker
async def test_a_reconnect_goes_on_in_the_same_recording_with_times_continuing(
        ws_app, docker_runner, media_root, owner):
    session = await recorded_session(docker_runner, owner, "labs/base:bookworm")
    first, ready = await attach(ws_app, session, owner, "name=keep&cols=80&rows=24")
    assert ready["reattached"] is False
    await run(first, "echo before-$((40+2))", "before-42")
    await hang_up(first)
    [row] = await database_sync_to_async(rows_of)(session)
    assert row.ended_at is not None
    await asyncio.sleep(1.5)  # the gap shows in the times: they continue, they do not start again at 0

    # The same tab again, in a larger window (a page reload): the same shell, the same recording.
    second, ready = await attach(ws_app, session, owner, "name=keep&cols=100&rows=30")
    assert ready["reattached"] is True
    [live] = await database_sync_to_async(rows_of)(session)
    assert live.pk == row.pk and live.ended_at is None  # recording again
    await run(second, "echo after-$((40+3))", "after-43")
    await hang_up(second)

    row, header, events = await ended_recording(session, media_root)
    assert (header["width"], header["height"]) == (80, 24)
    before = event_index(events, "o", "before-42")
    marker = event_index(events, "m", "reconnected")
    after = event_index(events, "o", "after-43")
    assert before < marker < after
    assert events[marker + 1][1:] == ["r", "100x30"]
    assert events[marker][0] >= events[before][0] + 1.4, (events[before], events[marker])
    assert [e for e in events if e[1] == "m"] == [events[marker]]
    assert "before-42" in output_text(events[:marker]) and "after-43" in output_text(events[marker:])

    # Another tab name: a recording of its own.
    await visit(ws_app, session, owner, "other", "echo other-$((40+4))", "other-44")
    rows = await database_sync_to_async(rows_of)(session)
    assert [r.terminal_name for r in rows] == ["keep", "other"]
    assert rows[1].file.name != rows[0].file.name
    _header, other_events = parse_cast(media_root / rows[1].file.name)
    assert "other-44" in output_text(other_events) and "after-43" not in output_text(other_events)
    assert recordings.live_terminals() == []


@pytest.mark.docker
async def test_a_reconnect_before_the_old_connection_ends_records_each_output_once(
        ws_app, docker_runner, media_root, owner):
    session = await recorded_session(docker_runner, owner, "labs/base:bookworm")
    old, _ready = await attach(ws_app, session, owner, "name=dup")
    await run(old, "echo first-$((40+1))", "first-41")
    # The new connection arrives while the old one is still open (the drop is not noticed yet).
    new, ready = await attach(ws_app, session, owner, "name=dup")
    assert ready["reattached"] is True
    await run(new, "echo once-$((40+5))", "once-45")
    await read_until(old, b"once-45")  # both connections show the same tmux pane
    [row] = await database_sync_to_async(rows_of)(session)
    assert row.ended_at is None

    # The newer connection leaves first: the older one goes on being recorded.
    await hang_up(new)
    [row] = await database_sync_to_async(rows_of)(session)
    assert row.ended_at is None
    await run(old, "echo later-$((40+6))", "later-46")
    await hang_up(old)

    _row, _header, events = await ended_recording(session, media_root)
    text = output_text(events)
    assert text.count("once-45") == 1, text  # recorded from one connection, not from both
    assert "first-41" in text and "later-46" in text
    assert [data for _at, code, data in events if code == "m"] == ["reconnected"]
    assert recordings.live_terminals() == []


async def test_a_recording_stopped_at_its_size_limit_is_not_started_again_by_a_reconnect(
        ws_app, local_runner, media_root, owner, settings):
    settings.LAB_RECORDING_MAX_BYTES = 4_000
    session = await recorded_session(local_runner, owner)
    await visit(ws_app, session, owner, "big", "head -c 6000 /dev/zero | tr '\\0' y; echo; echo full-$((1+1))",
                "full-2")
    [row] = await database_sync_to_async(rows_of)(session)
    path = media_root / row.file.name
    size = path.stat().st_size
    _header, events = parse_cast(path)
    assert events[-1][1:] == ["m", "recording stopped: size limit reached"]

    await visit(ws_app, session, owner, "big", "echo again-$((1+1))", "again-2")
    [again] = await database_sync_to_async(rows_of)(session)
    assert again.pk == row.pk and again.ended_at == row.ended_at
    assert path.stat().st_size == size


async def test_a_cast_cut_off_mid_line_is_repaired_before_it_goes_on(ws_app, local_runner, media_root, owner):
    session = await recorded_session(local_runner, owner)
    await visit(ws_app, session, owner, "cut", "echo whole-$((1+1))", "whole-2")
    [row] = await database_sync_to_async(rows_of)(session)
    path = media_root / row.file.name
    with path.open("a", encoding="utf-8") as handle:
        handle.write('[99.5, "o", "half a li')  # the server died in the middle of a write

    await visit(ws_app, session, owner, "cut", "echo next-$((1+2))", "next-3")
    _header, events = parse_cast(path)  # strict: every line an event, in order
    text = output_text(events)
    assert "whole-2" in text and "next-3" in text and "half a li" not in text
    assert len(await database_sync_to_async(rows_of)(session)) == 1


async def test_a_recording_whose_file_is_gone_is_replaced_by_a_new_one(ws_app, local_runner, media_root, owner):
    session = await recorded_session(local_runner, owner)
    await visit(ws_app, session, owner, "gone", "echo start-$((1+1))", "start-2")
    [row] = await database_sync_to_async(rows_of)(session)
    (media_root / row.file.name).unlink()
    await visit(ws_app, session, owner, "gone", "echo fresh-$((1+1))", "fresh-2")
    rows = await database_sync_to_async(rows_of)(session)
    assert len(rows) == 2 and rows[0].pk == row.pk
    _header, events = parse_cast(media_root / rows[1].file.name)
    assert "fresh-2" in output_text(events)
    assert json.loads((media_root / rows[1].file.name).read_text().splitlines()[0])["version"] == 2
