"""Loopback listeners, one per (namespace, pod, port), on an event loop of their own.

The Kubernetes runner's proxy mode hands the platform TCP addresses on 127.0.0.1 that lead into a
pod through the API server: the pod forwarder (k8s_forward.py, HTTP through pods/proxy) and the VM
screen's tunnel (k8s_vnc.py, RFB inside QEMU's WebSocket). Both keep their listeners here: made on
first use, found again for the same pod and port, closed with their session (`close_pod`) or after
`idle_seconds` without a connection; every connection is served by the subclass's `_serve` on the
listeners' own loop in a daemon thread, never on the caller's (daphne's) loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

IDLE_SECONDS = 600.0


@dataclass
class Listener:
    namespace: str
    pod: str
    port: int
    server: asyncio.AbstractServer
    address: tuple[str, int]
    active: set[asyncio.Task[None]] = field(default_factory=set)
    used: float = field(default_factory=time.monotonic)

    @property
    def prefix(self) -> str:
        """The API server's pod proxy path of this port."""
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}:{self.port}/proxy"


class PodListeners:
    """Listeners on a loop of their own. Public methods are thread-safe and blocking."""

    thread_name = "k8s-pod-listeners"
    stream_limit = 2**16  # the StreamReader's buffer limit (asyncio's default)

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._listeners: dict[tuple[str, str, int], Listener] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaper: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()

    # thread-facing ---------------------------------------------------------------------------------
    def _run(self, coro: Any, timeout: float = 30) -> Any:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self.thread_name, daemon=True).start()
                self._reaper = asyncio.run_coroutine_threadsafe(self._reap_idle(), loop)
                self._loop = loop
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def _address(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        """The loopback address of the listener for `port` of `pod` (made on first use)."""
        if not (0 < int(port) < 65536) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", pod or "") \
                or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace or ""):
            raise ValueError(f"no listener for {namespace!r}/{pod!r}:{port!r}")
        return self._run(self._listen(namespace, pod, int(port)))  # type: ignore[no-any-return]

    def close_pod(self, pod: str | None) -> bool:
        """Close the pod's listeners and cut their connections (its session stopped); True if there were any."""
        if pod and self._loop is not None and any(key[1] == pod for key in list(self._listeners)):
            self._run(self._close(lambda listener: listener.pod == pod))
            return True
        return False

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._run(self._close(lambda listener: True))
            if self._reaper is not None:
                self._reaper.cancel()
            loop, self._loop = self._loop, None
            loop.call_soon_threadsafe(loop.stop)

    def listeners(self) -> dict[tuple[str, str, int], tuple[str, int]]:
        return {key: listener.address for key, listener in list(self._listeners.items())}

    # on the listeners' loop ----------------------------------------------------------------------------
    async def _listen(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        key = (namespace, pod, port)
        listener = self._listeners.get(key)
        if listener is None:
            holder: list[Listener] = []

            async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._accepted(holder[0], reader, writer)

            server = await asyncio.start_server(accepted, "127.0.0.1", 0, limit=self.stream_limit)
            sockname = server.sockets[0].getsockname()
            listener = Listener(namespace, pod, port, server, (str(sockname[0]), int(sockname[1])))
            holder.append(listener)
            self._listeners[key] = listener
        listener.used = time.monotonic()
        return listener.address

    async def _accepted(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        listener.active.add(task)
        listener.used = time.monotonic()
        try:
            await self._serve(listener, reader, writer)
        finally:
            listener.active.discard(task)
            listener.used = time.monotonic()
            writer.close()

    async def _serve(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One accepted connection, to its end; the subclass's errors are its own to handle."""
        raise NotImplementedError

    async def _close(self, which: Callable[[Listener], bool]) -> None:
        for key, listener in list(self._listeners.items()):
            if which(listener):
                del self._listeners[key]
                listener.server.close()
                for task in list(listener.active):
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.server.wait_closed(), 5)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_seconds / 2))
            cutoff = time.monotonic() - self.idle_seconds

            def idle(listener: Listener, cutoff: float = cutoff) -> bool:
                return not listener.active and listener.used < cutoff

            await self._close(idle)


async def until_one_ends(*directions: Coroutine[Any, Any, None]) -> None:
    """Both directions of a tunnel until one of them ends; then the other is stopped."""
    tasks = [asyncio.ensure_future(direction) for direction in directions]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
