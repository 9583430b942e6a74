"""Graphical console: a WebSocket to the session's VNC server, for noVNC in the browser.

The WebSocket carries raw RFB in binary frames both ways. The VNC server's address comes
only from `session.endpoints["vnc"]`; nothing the client sends chooses it. Close codes:
4403 not your session (or not signed in), 4409 the session has no running graphical
console, 4502 its VNC server does not answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import Http404

from sessions_app import vnc_bridge
from sessions_app.access import _get_session_for_user
from sessions_app.actions import record_activity
from sessions_app.consumers.flow import ClientFlow
from sessions_app.models import Session, State

log = logging.getLogger(__name__)


class VncConsumer(AsyncWebsocketConsumer):
    # No channel layer: nothing messages a console, and with Redis the layer's receive, cancelled
    # when the socket closes, could end in a TimeoutError traceback (see consumers/hosts.py).
    channel_layer_alias = None
    session: Session | None = None
    upstream: vnc_bridge.VncConnection | None = None
    flow: ClientFlow | None = None
    pump: asyncio.Task[None] | None = None
    counts_activity = False
    activity: vnc_bridge.ActivityThrottle

    async def connect(self) -> None:
        # Accept first so the close code reaches the browser; nothing is connected before the checks.
        await self.accept(vnc_bridge.choose_subprotocol(self.scope.get("subprotocols")))
        user = self.scope.get("user")
        try:
            session = await database_sync_to_async(_get_session_for_user)(user, self.scope["url_route"]["kwargs"]["pk"])
        except Http404:
            await self.close(vnc_bridge.CLOSE_FORBIDDEN)
            return
        if session.state != State.RUNNING:
            await self.close(vnc_bridge.CLOSE_UNAVAILABLE, "The session is not running.")
            return
        target = vnc_bridge.vnc_target(session.endpoints)
        if target is None:
            await self.close(vnc_bridge.CLOSE_UNAVAILABLE, "This session has no graphical console.")
            return
        try:
            self.upstream = await vnc_bridge.open_vnc(target)
        except (OSError, TimeoutError) as exc:
            log.info("VNC server of session %s at %s does not answer: %s", session.pk, target, exc)
            await self.close(vnc_bridge.CLOSE_UPSTREAM_FAILED, "The graphical console does not answer.")
            return
        self.session = session
        self.counts_activity = session.user_id == getattr(user, "pk", None)  # staff watching is not the learner
        self.activity = vnc_bridge.ActivityThrottle()
        # One frame of slack in daphne's buffer lets the next frame be ready while it is written.
        self.flow = ClientFlow.for_send(self.base_send, high_water=vnc_bridge.MAX_FRAME_BYTES)
        self.pump = asyncio.create_task(self._pump_to_client(self.upstream, self.flow))

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels hops to a worker thread to close stale DB connections before every handler: a
        # thread round trip per frame. The frame handler touches the DB only through
        # database_sync_to_async, which does that itself.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def _pump_to_client(self, upstream: vnc_bridge.VncConnection, flow: ClientFlow) -> None:
        """VNC server → browser, never reading on while the browser's socket is backed up."""
        try:
            while True:
                await flow.wait_writable()
                data = await upstream.read()
                if not data:
                    break
                await self.send(bytes_data=data)
        except OSError:
            pass
        # The VNC server closed (or failed): close the browser's side too.
        await self.close(1000, "The graphical console closed.")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        upstream = self.upstream
        if bytes_data is None or upstream is None or upstream.is_closing:
            return  # text frames carry nothing for RFB; before the VNC connection there is nowhere to go
        upstream.write(bytes_data)
        if upstream.write_buffer_size > vnc_bridge.UPSTREAM_HIGH_WATER_BYTES:
            assert self.flow is not None
            self.flow.pause_reading()  # the VNC server lags: stop taking frames from the browser
            try:
                await upstream.drain()
            except OSError:
                return  # the pump sees the closed connection and closes the WebSocket
            finally:
                self.flow.resume_reading()
        if self.counts_activity and vnc_bridge.is_user_input(bytes_data) and self.activity.due():
            assert self.session is not None
            await database_sync_to_async(record_activity)(self.session)

    async def disconnect(self, code: Any) -> None:
        if self.pump is not None:
            self.pump.cancel()
            try:
                await self.pump
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("VNC bridge of session %s failed", self.session.pk if self.session else "?")
        if self.flow is not None:
            self.flow.close()
        if self.upstream is not None:
            self.upstream.close()
