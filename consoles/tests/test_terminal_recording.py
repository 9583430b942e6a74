"""Terminal recordings: valid asciinema v2 casts, UTF-8 kept whole across reads, input not recorded,
bounded in size."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from consoles.models import TerminalRecording
from consoles.terminals import CastRecorder, cast_header

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import (  # noqa: E402
    attach,
    hang_up,
    make_lab,
    next_message,
    read_until,
    start_session,
)

pytest_plugins = ["consoles.tests.terminal_harness"]


def parse_cast(path: Path) -> tuple[dict, list[list]]:
    """Parse an asciinema v2 file strictly: a header object, then [time, code, data] events in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert isinstance(header["width"], int) and isinstance(header["height"], int)
    assert isinstance(header["timestamp"], int)
    assert header["env"]["TERM"] == "xterm-256color"
    events = [json.loads(line) for line in lines[1:]]
    last = 0.0
    for event in events:
        assert len(event) == 3, event
        at, code, data = event
        assert isinstance(at, float | int) and at >= last, event
        assert code in ("o", "r", "m"), event  # "i" (input) is never recorded
        assert isinstance(data, str)
        last = at
    return header, events


def output_text(events: list[list]) -> str:
    return "".join(data for _at, code, data in events if code == "o")


def recordings_of(session) -> list[TerminalRecording]:
    return list(TerminalRecording.objects.filter(session=session))


@pytest.mark.django_db(transaction=True)
async def test_a_recorded_terminal_writes_a_valid_asciinema_v2_cast(ws_app, local_runner, media_root, owner):
    lab = await database_sync_to_async(lambda: make_lab(local_runner, record_terminal=True))()
    session = await database_sync_to_async(start_session)(owner, lab)
    communicator, _ = await attach(ws_app, session, owner, "name=rec&cols=90&rows=20")
    await communicator.send_to(bytes_data="echo café-$((40+2))\n".encode())
    await read_until(communicator, "café-42".encode())
    await communicator.send_to(text_data=json.dumps({"type": "resize", "cols": 100, "rows": 30}))
    # Typed with echo off, so only the shell's answer may show it; the cast must not hold it.
    await communicator.send_to(bytes_data=b"stty -echo; read -r secret; stty echo; echo got-${#secret}-chars\n")
    await asyncio.sleep(0.5)
    await communicator.send_to(bytes_data=b"hunter2\n")
    await read_until(communicator, b"got-7-chars")
    await hang_up(communicator)

    [recording] = await database_sync_to_async(recordings_of)(session)
    path = media_root / recording.file.name
    assert recording.file.name.startswith("recordings/") and recording.file.name.endswith(".cast")
    assert recording.terminal_name == "rec" and (recording.width, recording.height) == (90, 20)
    assert recording.ended_at is not None
    assert recording.size_bytes == path.stat().st_size
    header, events = parse_cast(path)
    assert (header["width"], header["height"]) == (90, 20)
    text = output_text(events)
    assert "café-42" in text
    assert "got-7-chars" in text
    assert "hunter2" not in text
    assert [data for _at, code, data in events if code == "r"] == ["100x30"]


@pytest.mark.django_db(transaction=True)
async def test_a_character_split_across_two_reads_is_recorded_whole(ws_app, local_runner, media_root, owner):
    lab = await database_sync_to_async(lambda: make_lab(local_runner, record_terminal=True))()
    session = await database_sync_to_async(start_session)(owner, lab)
    communicator, _ = await attach(ws_app, session, owner)
    # "é" is \303\251: the shell prints the first byte, waits, then the second.
    await communicator.send_to(bytes_data=b"printf 'split-\\303'; sleep 0.5; printf '\\251-done-%d\\n' $((1+1))\n")
    frames = []
    while not any(b"-done-2" in frame for frame in frames):
        message = await next_message(communicator)
        if message.get("bytes"):
            frames.append(message["bytes"])
    assert any(frame.endswith(b"split-\xc3") for frame in frames), frames  # the split really happened
    await hang_up(communicator)

    [recording] = await database_sync_to_async(recordings_of)(session)
    _header, events = parse_cast(media_root / recording.file.name)
    text = output_text(events)
    assert "split-é-done-2" in text
    assert "\ufffd" not in text


@pytest.mark.django_db(transaction=True)
async def test_a_recording_stops_at_the_size_limit_with_a_marker(ws_app, local_runner, media_root, owner, settings):
    settings.LAB_RECORDING_MAX_BYTES = 20_000
    lab = await database_sync_to_async(lambda: make_lab(local_runner, record_terminal=True))()
    session = await database_sync_to_async(start_session)(owner, lab)
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=b"head -c 300000 /dev/zero | tr '\\0' y; echo; echo end-$((1+1))\n")
    received = 0
    buffer = b""
    while b"end-2" not in buffer:
        message = await next_message(communicator)
        data = message.get("bytes") or b""
        received += len(data)
        buffer = buffer[-100:] + data
        if data:
            await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": len(data)}))
    assert received > 300_000  # the terminal itself is not limited
    await hang_up(communicator)

    [recording] = await database_sync_to_async(recordings_of)(session)
    path = media_root / recording.file.name
    _header, events = parse_cast(path)
    assert path.stat().st_size <= 20_000 + 200  # the limit, plus the marker saying why it ends
    assert events[-1][1:] == ["m", "recording stopped: size limit reached"]
    assert recording.size_bytes == path.stat().st_size


@pytest.mark.django_db(transaction=True)
async def test_a_lab_without_recording_leaves_no_recording(ws_app, local_runner, media_root, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=b"echo plain-$((1+1))\n")
    await read_until(communicator, b"plain-2")
    await hang_up(communicator)
    assert await database_sync_to_async(recordings_of)(session) == []
    assert not (media_root / "recordings").exists()


async def test_the_recorder_keeps_multibyte_characters_whole_across_any_split(tmp_path):
    path = tmp_path / "unit.cast"
    header = cast_header(80, 24, 1_700_000_000.0)
    path.write_text(header, encoding="utf-8")
    recorder = CastRecorder(path, written=len(header.encode()), max_bytes=1_000_000)
    payload = "é → 😀 ok".encode()
    for index in range(len(payload)):  # one byte at a time: every character is split
        recorder.output(payload[index:index + 1])
    recorder.output(b"\xf0\x9f")  # a character cut off by the end of the stream
    size = await recorder.close()
    _header, events = parse_cast(path)
    assert output_text(events) == "é → 😀 ok\ufffd"
    assert size == path.stat().st_size
