"""Resizing a browser terminal changes what the shell sees (`stty size`), clamped to sane bounds."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from channels.db import database_sync_to_async

pytest.register_assert_rewrite("consoles.tests.terminal_harness")

from consoles.tests.terminal_harness import attach, hang_up, make_lab, read_until, start_session  # noqa: E402

pytest_plugins = ["consoles.tests.terminal_harness"]
pytestmark = pytest.mark.django_db(transaction=True)


async def stty_size(communicator, marker: str) -> tuple[int, int]:
    # The numbers are computed by the shell, so the echoed command line cannot match the pattern.
    await communicator.send_to(bytes_data=f"echo {marker}$((1+1)):$(stty size):{marker}$((2+2))\n".encode())
    output = await read_until(communicator, f":{marker}4".encode())
    found = re.search(rf"{marker}2:(\d+) (\d+):{marker}4".encode(), output)
    assert found, output
    return int(found.group(1)), int(found.group(2))


async def size_becomes(communicator, expected: tuple[int, int], marker: str) -> tuple[int, int]:
    """The size the shell reports once the resize has been applied (Docker applies it through its API,
    a moment after the frame), or the last one seen after a few seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    attempt = 0
    while True:
        attempt += 1
        seen = await stty_size(communicator, f"{marker}x{attempt}x")
        if seen == expected or loop.time() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def check_resizes(communicator) -> None:
    assert await stty_size(communicator, "first") == (24, 80)
    await communicator.send_to(text_data=json.dumps({"type": "resize", "cols": 132, "rows": 43}))
    assert await size_becomes(communicator, (43, 132), "second") == (43, 132)
    await communicator.send_to(text_data=json.dumps({"type": "resize", "cols": 99999, "rows": 10**9}))
    assert await size_becomes(communicator, (200, 500), "third") == (200, 500)


async def test_resize_changes_the_local_shells_size(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner, "name=1&cols=80&rows=24")
    await check_resizes(communicator)
    # The lower bound too (Docker's engine turns a height or width of 1 into its default, 24x80).
    await communicator.send_to(text_data=json.dumps({"type": "resize", "cols": -4, "rows": 0}))
    assert await size_becomes(communicator, (1, 1), "fourth") == (1, 1)
    await hang_up(communicator)


@pytest.mark.docker
async def test_resize_changes_the_docker_shells_size(ws_app, docker_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(docker_runner)))()
    communicator, _ = await attach(ws_app, session, owner, "name=1&cols=80&rows=24")
    await check_resizes(communicator)
    await hang_up(communicator)


async def test_the_first_size_comes_from_the_url_and_is_clamped(ws_app, local_runner, owner):
    session = await database_sync_to_async(lambda: start_session(owner, make_lab(local_runner)))()
    communicator, _ = await attach(ws_app, session, owner, "name=1&cols=9000&rows=abc")
    assert await stty_size(communicator, "url") == (24, 500)
    await hang_up(communicator)
