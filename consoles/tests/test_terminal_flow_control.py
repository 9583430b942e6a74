"""Flow control, end to end: a flooding shell keeps at most HIGH_WATER + one frame unacknowledged,
resumes when the browser acknowledges, and keystrokes stay interactive during the flood."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from consoles.terminals import FRAME_BYTES, HIGH_WATER, LOW_WATER

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import (  # noqa: E402
    attach,
    hang_up,
    make_lab,
    next_message,
    start_session,
)

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)

# Output as fast as a shell can make it: large writes of "y" (busybox `yes` writes a line at a time,
# which Docker's exec relay turns into a trickle). The TTY still echoes keys typed meanwhile.
FLOOD = b"tr '\\0' y </dev/zero\n"


async def received_until_quiet(communicator, quiet: float = 1.0, limit: float = 60.0, at_least: int = 0) -> int:
    """Bytes of output received until none arrives for `quiet` seconds (once `at_least` have come:
    a slow machine may pause the flood for a moment on its own)."""
    total = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        try:
            message = await next_message(communicator, quiet if total >= at_least else deadline - loop.time())
        except TimeoutError:
            return total
        assert message["type"] == "websocket.send", message
        total += len(message.get("bytes") or b"")
    raise AssertionError(f"output never paused; {total} bytes received without an ack")


async def flood_while_acking(communicator, seconds: float) -> int:
    """Read and acknowledge every frame for `seconds`; return the bytes received."""
    total = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        message = await next_message(communicator, 5)
        data = message.get("bytes") or b""
        total += len(data)
        if data:
            await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": len(data)}))
    return total


async def stop_flood_and_check_the_shell(communicator) -> None:
    await communicator.send_to(bytes_data=b"\x03")
    await communicator.send_to(bytes_data=b"echo calm-$((6*7))\n")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    buffer = b""
    while b"calm-42" not in buffer:
        assert loop.time() < deadline, buffer[-300:]
        message = await next_message(communicator, 10)
        data = message.get("bytes") or b""
        buffer = buffer[-4096:] + data
        if data:
            await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": len(data)}))


async def check_pause_and_resume(communicator) -> None:
    await communicator.send_to(bytes_data=FLOOD)
    stalled = await received_until_quiet(communicator, at_least=HIGH_WATER)
    # Paused just past the high-water mark: at most one more frame went out.
    assert HIGH_WATER < stalled <= HIGH_WATER + FRAME_BYTES, stalled
    # Acknowledging only down to just above the low-water mark does not resume it...
    await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": stalled - LOW_WATER - 1}))
    assert await received_until_quiet(communicator, quiet=0.5) == 0
    # ...acknowledging the rest does, and with acks the flood goes on well past another window.
    await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": LOW_WATER + 1}))
    assert await flood_while_acking(communicator, 3.0) > 2 * HIGH_WATER
    await stop_flood_and_check_the_shell(communicator)


async def test_a_local_flood_pauses_at_the_high_water_mark_and_resumes_on_ack(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await check_pause_and_resume(communicator)
    await hang_up(communicator)


@pytest.mark.docker
async def test_a_docker_flood_pauses_at_the_high_water_mark_and_resumes_on_ack(ws_app, docker_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(docker_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await check_pause_and_resume(communicator)
    await hang_up(communicator)


async def test_a_keystroke_echoes_quickly_while_output_floods(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=FLOOD)
    await flood_while_acking(communicator, 1.0)
    loop = asyncio.get_running_loop()
    delays = []
    for key in b"QWZXK":  # the TTY echoes keys typed while the flood runs; it prints only "y"
        sent_at = loop.time()
        await communicator.send_to(bytes_data=bytes([key]))
        data = b""
        while bytes([key]) not in data:
            assert loop.time() - sent_at < 10, "the echo never came back"
            message = await next_message(communicator, 10)
            data = message.get("bytes") or b""
            if data:
                await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": len(data)}))
        delays.append(loop.time() - sent_at)
    assert max(delays) < 1.0, delays
    await stop_flood_and_check_the_shell(communicator)
    await hang_up(communicator)


async def test_output_frames_are_coalesced_up_to_64_kib(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner)
    await communicator.send_to(bytes_data=FLOOD)
    sizes = []
    while sum(sizes) < 4 * 1024 * 1024:
        message = await next_message(communicator, 10)
        data = message.get("bytes") or b""
        sizes.append(len(data))
        await communicator.send_to(text_data=json.dumps({"type": "ack", "bytes": len(data)}))
    assert max(sizes) <= FRAME_BYTES
    assert max(sizes) > 4096  # more than one PTY read per frame under load
    await stop_flood_and_check_the_shell(communicator)
    await hang_up(communicator)
