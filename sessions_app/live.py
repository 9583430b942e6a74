"""Notices that a session changed (a new progress line, a new state), pushed to the live streams
that follow it (sessions_app/streams.py) so the session page hears at once instead of polling.

A notice says only which session changed: a stream that hears one reads what is new from the
database itself, so a lost notice costs a delay (streams also re-read on a slow timer) and a
doubled one a needless read, never a wrong page.

How notices travel:
- With Redis (a RedisChannelLayer: REDIS_URL), through a channel-layer group per session, so a job
  in a worker process reaches the streams in every web process. Each stream has a channel of its
  own; channels_redis receives for all of a process's channels on one connection. (A stream open
  longer than the layer's group_expiry, a day, hears only its re-reads.)
- Without (the in-memory layer, or none), through a registry in this process, which is where jobs
  run then (in threads). Not through InMemoryChannelLayer: its queues belong to the event loop of
  the receiving stream and are not thread-safe, and notices come from job threads and from the
  threads sync views run in; a put from there would not wake the loop.

Publishing never fails the caller: a change is saved whatever happens to its notice (logged).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

MESSAGE = {"type": "session.changed"}


def group_name(session_id: UUID | str) -> str:
    return f"session-live.{UUID(str(session_id)).hex}"


def _shared_layer() -> Any:
    """The channel layer when it reaches other processes; None when notices stay in this one."""
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer


class Listener:
    """One stream's doorbell: `ring` from any thread, `wait` in the stream's event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._rung = asyncio.Event()
        # Whether a notice since the last wait asked for the status region anew (`publish(status=True)`).
        self.status_asked = False

    def ring(self, status: bool = False) -> None:
        """Thread-safe, and harmless once the stream has gone (its loop closed or busy elsewhere)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            self._loop.call_soon_threadsafe(self.ring_here, status)

    def ring_here(self, status: bool = False) -> None:
        self.status_asked = self.status_asked or status
        self._rung.set()

    def take_status_asked(self) -> bool:
        asked, self.status_asked = self.status_asked, False
        return asked

    async def wait(self, timeout: float) -> bool:
        """Whether a notice came within `timeout` seconds (several count as one)."""
        try:
            await asyncio.wait_for(self._rung.wait(), timeout)
        except TimeoutError:
            return False
        self._rung.clear()
        return True


class _LocalRegistry:
    """The streams of this process, by session, for notices that stay in it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, set[Listener]] = {}

    def add(self, session_id: str, listener: Listener) -> None:
        with self._lock:
            self._listeners.setdefault(session_id, set()).add(listener)

    def discard(self, session_id: str, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(session_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[session_id]

    def ring(self, session_id: str, status: bool = False) -> None:
        with self._lock:
            listeners = list(self._listeners.get(session_id, ()))
        for listener in listeners:
            listener.ring(status)

    def count(self) -> int:
        with self._lock:
            return sum(len(listeners) for listeners in self._listeners.values())


_local = _LocalRegistry()


class _Sender:
    """An event loop in a thread of its own that sends notices through the shared layer, so a notice
    costs one round trip to Redis (~0.3 ms) rather than a new event loop and connection each
    (async_to_sync: ~3 ms, ten times per start, on the path to the learner's shell)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # A forked process (RQ runs each job in one) has the loop object but not its thread.
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="live-notices", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def send(self, layer: Any, group: str, timeout: float, status: bool = False) -> None:
        """Send and wait for it (a job's process may end right after its last notice)."""
        message = {**MESSAGE, "status": True} if status else MESSAGE
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), self._running_loop())
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


_sender = _Sender()
SEND_TIMEOUT = 2.0  # Redis not answering: the transition goes on, its notice is given up


def publish(session_id: UUID | str, status: bool = False) -> None:
    """Tell the streams of `session_id` that it changed. `status`: something the status region shows
    changed in the same state (a resource notice), so they render it anew. Never raises: a failure
    is logged."""
    try:
        layer = _shared_layer()
        if layer is None:
            _local.ring(UUID(str(session_id)).hex, status)
        else:
            _sender.send(layer, group_name(session_id), SEND_TIMEOUT, status)
    except Exception:  # a notice is a courtesy: the change itself is saved, and streams re-read anyway
        log.warning("could not tell the live streams of session %s about a change", session_id, exc_info=True)


def publish_on_commit(session_id: UUID | str) -> None:
    """`publish` once the surrounding transaction commits (at once outside one): a stream that
    hears the notice must find the change in the database."""
    transaction.on_commit(lambda: publish(session_id))


@contextlib.asynccontextmanager
async def listen(session_id: UUID | str) -> AsyncIterator[Listener]:
    """A Listener rung on every notice for `session_id` while the block runs. Subscribe before the
    first read, so nothing that changes between the two goes unheard. If the shared layer cannot
    subscribe (Redis down), the listener is never rung and the stream relies on its re-reads."""
    listener = Listener()
    layer = _shared_layer()
    if layer is None:
        key = UUID(str(session_id)).hex
        _local.add(key, listener)
        try:
            yield listener
        finally:
            _local.discard(key, listener)
        return
    group = group_name(session_id)
    try:
        channel = await asyncio.wait_for(layer.new_channel(), SEND_TIMEOUT)
        await asyncio.wait_for(layer.group_add(group, channel), SEND_TIMEOUT)
    except Exception:  # Redis is down: the stream still re-reads on its timer
        log.warning("cannot subscribe to notices of session %s; its stream re-reads on a timer only",
                    session_id, exc_info=True)
        yield listener
        return
    relay = asyncio.create_task(_relay(layer, channel, listener))
    try:
        yield listener
    finally:
        relay.cancel()
        # Bounded: a receive cancelled in the middle of Redis's reply must not hold the stream open.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(relay, SEND_TIMEOUT)
        try:
            await asyncio.wait_for(layer.group_discard(group, channel), SEND_TIMEOUT)
        except Exception:  # the group's membership expires by itself (group_expiry)
            log.warning("cannot unsubscribe a stream of session %s", session_id, exc_info=True)


async def _relay(layer: Any, channel: str, listener: Listener) -> None:
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("lost the notices of channel %s for a moment", channel, exc_info=True)
            await asyncio.sleep(1.0)
            continue
        listener.ring_here(bool(message.get("status")))


def local_listener_count() -> int:
    """How many streams of this process listen through the in-process registry (tests, benchmarks)."""
    return _local.count()
