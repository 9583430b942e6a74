"""Shared pieces for the terminal WebSocket tests: real runners, real sessions, a real ASGI stack.

The application is built here (not imported from labsite.asgi) with the same middleware as
production: platform_origin_validator(AuthMiddlewareStack(URLRouter(...))), authenticated by
a real session cookie; requests carry the Host and Origin a page on http://localhost sends.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from asgiref.sync import SyncToAsync
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.urls import path

from consoles.consumers import TerminalConsumer
from labs.models import Image, Lab
from labsite.hosts import platform_origin_validator
from runners import get_runner, reset_cache
from sessions_app import actions
from sessions_app.models import Session, State

HOST = (b"host", b"localhost")
ORIGIN = (b"origin", b"http://localhost")
BWRAP = "/usr/bin/bwrap"


@pytest.fixture
def ws_app(settings: Any) -> Iterator[Any]:
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    yield platform_origin_validator(AuthMiddlewareStack(URLRouter([
        path("ws/sessions/<uuid:pk>/terminal/", TerminalConsumer.as_asgi()),
    ])))
    # database_sync_to_async ran in asgiref's worker thread, whose connection (kept open by
    # CONN_MAX_AGE) would otherwise stop the test database from being dropped.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def local_runner(settings: Any, tmp_path: Path) -> Iterator[str]:
    """The real sandboxed local runner ("local"), its sessions under tmp_path; removed afterwards."""
    if not os.access(BWRAP, os.X_OK):
        pytest.fail("bubblewrap is required for these tests: apt-get install bubblewrap")
    settings.DATA_DIR = tmp_path
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "local": {
        "BACKEND": "runners.local.LocalRunner", "OPTIONS": {"root": str(tmp_path / "local")}}}
    reset_cache()
    yield "local"
    runner = get_runner("local")
    for env in runner.list_managed():
        runner.remove_managed(env)
    reset_cache()


@pytest.fixture
def docker_runner(settings: Any, tmp_path: Path) -> Iterator[str]:
    """The real Docker runner ("docker") with its own instance label; everything removed afterwards."""
    try:
        docker.from_env().ping()
    except Exception as exc:
        pytest.fail(f"the Docker engine is required for these tests: {exc}")
    settings.DATA_DIR = tmp_path
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "docker": {
        "BACKEND": "runners.docker.DockerRunner",
        "OPTIONS": {"instance": f"labst{uuid.uuid4().hex[:6]}"}}}
    reset_cache()
    yield "docker"
    runner = get_runner("docker")
    for env in runner.list_managed():
        runner.remove_managed(env)
    reset_cache()


def make_lab(runner: str, reference: str = "labs/busybox:latest", **fields: Any) -> Lab:
    image, _ = Image.objects.get_or_create(name=f"img-{reference.replace('/', '-').replace(':', '-')}",
                                           defaults={"reference": reference})
    values: dict[str, Any] = {"slug": f"lab-{uuid.uuid4().hex[:8]}", "title": "A lab", "image": image,
                              "runner": runner, "memory_mb": 128, "published": True, "consoles": ["terminal"],
                              "network_mode": "none"}
    values.update(fields)
    return Lab.objects.create(**values)


def start_session(user: Any, lab: Lab) -> Session:
    """Start through the same action as the Start button; the provisioning job runs inline."""
    session = actions.start_session(user, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    return session


def cookie_for(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def terminal_path(session: Session, query: str = "name=1&cols=80&rows=24") -> str:
    return f"/ws/sessions/{session.pk}/terminal/?{query}"


async def connect(app: Any, session: Session, user: Any | None, query: str = "name=1&cols=80&rows=24",
                  origin: tuple[bytes, bytes] = ORIGIN) -> WebsocketCommunicator:
    headers = [HOST, origin]
    if user is not None:
        headers.append(await database_sync_to_async(cookie_for)(user))
    communicator = WebsocketCommunicator(app, terminal_path(session, query), headers=headers)
    connected, _ = await communicator.connect(timeout=30)
    assert connected
    return communicator


async def next_message(communicator: WebsocketCommunicator, timeout: float = 10.0) -> dict[str, Any]:
    """The next message the consumer sends, without cancelling it on a timeout (it must clean up)."""
    if communicator.future.done():
        communicator.future.result()  # the consumer crashed: raise its exception here
    try:
        return await asyncio.wait_for(communicator.output_queue.get(), timeout)
    except TimeoutError:
        if communicator.future.done():
            communicator.future.result()
        raise


async def attach(app: Any, session: Session, user: Any, query: str = "name=1&cols=80&rows=24"
                 ) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """Connect as `user` and return the communicator and its `ready` message."""
    communicator = await connect(app, session, user, query)
    message = await next_message(communicator, timeout=30)
    assert message["type"] == "websocket.send" and message.get("text"), message
    ready = json.loads(message["text"])
    assert ready["type"] == "ready", ready
    return communicator, ready


async def read_until(communicator: WebsocketCommunicator, needle: bytes, timeout: float = 15.0) -> bytes:
    """Collect output frames until `needle` appears; text frames are ignored."""
    buffer = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in buffer:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} did not appear; got {buffer[-400:]!r}")
        try:
            message = await next_message(communicator, remaining)
        except TimeoutError:
            raise AssertionError(f"{needle!r} did not appear; got {buffer[-400:]!r}") from None
        if message["type"] == "websocket.close":
            raise AssertionError(f"closed ({message.get('code')}) before {needle!r}; got {buffer[-400:]!r}")
        if message.get("bytes") is not None:
            buffer += message["bytes"]
    return buffer


async def expect_close(communicator: WebsocketCommunicator, timeout: float = 15.0) -> tuple[int | None, list]:
    """Read to the close message; return its code and the text frames seen before it."""
    texts = []
    while True:
        message = await next_message(communicator, timeout)
        if message["type"] == "websocket.close":
            return message.get("code"), texts
        if message.get("text") is not None:
            texts.append(json.loads(message["text"]))


async def hang_up(communicator: WebsocketCommunicator) -> None:
    """Disconnect and wait for the consumer to release the shell."""
    await communicator.disconnect(timeout=20)


def local_terminal_records(session: Session) -> list[dict[str, Any]]:
    """The local runner's records of live terminal processes in this session."""
    pids = Path(session.runner_state["root"]) / "pids"
    found = []
    for record in pids.glob("*.json") if pids.is_dir() else ():
        data = json.loads(record.read_text())
        if data.get("kind") == "terminal":
            found.append(data)
    return found
