"""A VM session's consoles through the platform's real ASGI application (labsite.asgi): the serial
console in the terminal WebSocket and the graphical console in the VNC WebSocket, on real QEMU."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from consoles.tests.terminal_harness import cookie_for, expect_close, next_message
from labs.models import Lab
from labs.vm_images import register_file
from labsite.asgi import application
from runners import get_runner, reset_cache
from sessions_app import actions
from sessions_app.models import Session, State
from tests.vm_image import vm_image  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"localhost")
ORIGIN = (b"origin", b"http://localhost")
PROMPT = b"labvm# "


@pytest.fixture
def vm_session(settings, tmp_path, owner, vm_image):  # noqa: F811 - the fixture
    """A running VM session of a lab whose disk was registered the way staff register one."""
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    root = Path(tempfile.mkdtemp(prefix="lvc-"))
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "qemu": {
        "BACKEND": "runners.qemu.QemuRunner",
        "OPTIONS": {"root": str(root), "accel": "tcg", "powerdown_timeout": 1},
    }}
    settings.LAB_VM_IMAGE_DIR = tmp_path / "vm-images"
    settings.LAB_START_TIMEOUT_SECONDS = 120
    reset_cache()
    disk = register_file("console-vm", vm_image.disk).image
    lab = Lab.objects.create(slug="vm-consoles", title="VM consoles", image=disk, runner="qemu", published=True,
                             memory_mb=128, network_mode="none", consoles=["terminal", "vnc"])
    session = actions.start_session(owner, lab)  # the provisioning job runs inline in the tests
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    yield session
    runner = get_runner("qemu")
    for env in runner.list_managed():
        runner.remove_managed(env)
    shutil.rmtree(root, ignore_errors=True)
    reset_cache()


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    yield
    await database_sync_to_async(connections.close_all)()


async def connect(path: str, user) -> WebsocketCommunicator:
    headers = [HOST, ORIGIN]
    if user is not None:
        headers.append(await database_sync_to_async(cookie_for)(user))
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect(timeout=30)
    assert connected
    return comm


async def serial_until(comm: WebsocketCommunicator, needle: bytes, send: bytes = b"", timeout: float = 240) -> bytes:
    """Collect serial output until `needle`; `send` is typed again every few seconds until then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buffer = b""
    next_send = 0.0
    while needle not in buffer:
        if loop.time() > deadline:
            raise AssertionError(f"{needle!r} never appeared; got {buffer[-400:]!r}")
        if send and loop.time() >= next_send:
            await comm.send_to(bytes_data=send)
            next_send = loop.time() + 3
        try:
            message = await next_message(comm, timeout=1)
        except TimeoutError:
            continue
        assert message["type"] != "websocket.close", f"closed ({message.get('code')}); got {buffer[-400:]!r}"
        if message.get("bytes"):
            buffer += message["bytes"]
    return buffer


async def read_exact(comm: WebsocketCommunicator, buffer: bytearray, count: int) -> bytes:
    while len(buffer) < count:
        message = await next_message(comm, timeout=30)
        assert message["type"] == "websocket.send" and message.get("bytes") is not None, message
        buffer += message["bytes"]
    data = bytes(buffer[:count])
    del buffer[:count]
    return data


async def test_the_serial_console_answers_in_the_terminal_websocket(vm_session: Session, owner, other_learner):
    path = f"/ws/sessions/{vm_session.pk}/terminal/?name=1&cols=80&rows=24"
    outsider = await connect(path, other_learner)
    code, _ = await expect_close(outsider)
    assert code == 4403

    comm = await connect(path, owner)
    ready = json.loads((await next_message(comm, timeout=30))["text"])
    assert ready["type"] == "ready"
    await serial_until(comm, PROMPT, send=b"\r")  # the guest has booted to its shell
    await comm.send_to(bytes_data=b"echo serial-$((6*7))\r")
    assert b"serial-42" in await serial_until(comm, b"serial-42")
    await comm.disconnect(timeout=20)


async def test_the_graphical_console_speaks_rfb_through_the_vnc_websocket(vm_session: Session, owner, other_learner):
    path = f"/ws/sessions/{vm_session.pk}/vnc/"
    outsider = await connect(path, other_learner)
    code, _ = await expect_close(outsider)
    assert code == 4403

    comm = await connect(path, owner)
    buffer = bytearray()
    version = await read_exact(comm, buffer, 12)
    assert version.startswith(b"RFB 003.")
    await comm.send_to(bytes_data=b"RFB 003.008\n")
    count = (await read_exact(comm, buffer, 1))[0]
    assert 1 in await read_exact(comm, buffer, count)  # security None: the bridge is the only way in
    await comm.send_to(bytes_data=b"\x01")
    assert await read_exact(comm, buffer, 4) == b"\x00\x00\x00\x00"
    await comm.send_to(bytes_data=b"\x01")  # ClientInit, shared
    width, height = struct.unpack(">HH", await read_exact(comm, buffer, 4))
    assert width >= 640 and height >= 400  # QEMU's VGA text console
    await comm.disconnect(timeout=20)
