"""The consoles' WebSockets: the browser terminal and the graphical console (VNC).

Terminal, `ws/sessions/<id>/terminal/?name=&cols=&rows=`. Wire protocol (static/js/terminal.js
implements the other side):
  server → client  binary: terminal output; text JSON: {"type": "ready", "name", "reattached"},
                   {"type": "pong"}, {"type": "exit"} (then close 1000), {"type": "error", "message"}
  client → server  binary: keystrokes; text JSON: {"type": "resize", "cols", "rows"},
                   {"type": "ack", "bytes": n} (bytes rendered since the previous ack), {"type": "ping"},
                   {"type": "steps"} (a step started: run its foreground script in terminal "1")
Close codes: 4400 bad request or repeated garbage, 4403 not yours (or not signed in), 4409 the
session is not running, 4500 the runner could not attach, 1000 the shell ended. The bridging
itself (flow control, non-blocking reads and writes, recording) is in consoles/terminals.py;
which cast a recorded terminal writes to (the same one again after a reconnect) in
consoles/recordings.py. The learner's own terminal records when the session first sent them output
(Session.first_output_at, for /metrics' request → first shell byte): one conditional UPDATE in a
thread on its first output frame, none once the session has it.

Graphical console, `ws/sessions/<id>/vnc/`: raw RFB in binary frames both ways, for noVNC in the
browser. The VNC server's address comes only from the session's runner; nothing the client sends
chooses it. Close codes: 4403 not your session (or not signed in), 4409 the session has no
running graphical console, 4502 its VNC server does not answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import Http404
from django.utils import timezone

from consoles import recordings, terminals, vnc_bridge
from consoles.flow import ClientFlow
from runners.base import RunnerError, vnc_endpoint_of
from sessions_app.access import get_session_for_user
from sessions_app.actions import mark_active
from sessions_app.models import Session, State

log = logging.getLogger(__name__)

MAX_STRIKES = 64  # consecutive malformed frames before the socket is closed with 4400

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_RUNNING = 4409
CLOSE_RUNNER_ERROR = 4500
PONG = json.dumps({"type": "pong"})


class TerminalConsumer(AsyncWebsocketConsumer):
    session: Session | None = None
    bridge: terminals.TerminalBridge | None = None
    client_flow: ClientFlow | None = None
    # Whether the session's first output is already recorded (or not ours to record): checked on
    # every output frame, so one attribute read is all the hot path pays.
    _first_output_noted = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Channels' own loop also listens to a channel layer, at the price of a task and an
        # asyncio.wait per message. A terminal needs no layer (nothing reaches it through groups,
        # and with Redis each one would hold a blocking receive open), so messages are awaited
        # directly: less work per keystroke.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Also when the server cancels us (shutdown, a client that never finished closing):
            # the shell's socket or process must not outlive its WebSocket.
            if self.bridge is not None:
                await asyncio.shield(self._release())

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs close_old_connections in a worker thread before every handler. Frames
        # touch no database (activity writes go through database_sync_to_async, which does its
        # own cleanup), and a thread hop per keystroke would cost more than the rest of the echo.
        if message.get("type") == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            await self.receive(text_data=text)
        elif data is not None:
            await self.receive(bytes_data=data)

    async def connect(self) -> None:
        self._strikes = 0
        self._last_activity = float("-inf")
        self._background: set[asyncio.Task[Any]] = set()
        self._counts_activity = False
        # Accept first so the close code reaches the browser; nothing is attached before the checks.
        await self.accept()
        user = self.scope.get("user")
        try:
            session = await database_sync_to_async(get_session_for_user)(user, self.scope["url_route"]["kwargs"]["pk"])
        except Http404:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        request = terminals.parse_request(self.scope.get("query_string", b""))
        if request is None:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        if session.state != State.RUNNING:
            await self.close(code=CLOSE_NOT_RUNNING)
            return
        attaching = asyncio.ensure_future(
            asyncio.to_thread(terminals.attach, session, request))
        try:
            stream, reattached = await asyncio.shield(attaching)
        except asyncio.CancelledError:
            attaching.add_done_callback(_close_if_attached)  # cancelled mid-attach: do not leak the shell
            raise
        except RunnerError as exc:
            await self._fail(f"Cannot open a terminal: {exc}")
            return
        except Exception:
            log.exception("opening a terminal for session %s failed", session.pk)
            await self._fail("Cannot open a terminal: the server could not reach the environment.")
            return
        self.session = session
        self._counts_activity = session.is_learner(user)  # staff helping is not the learner
        # Request → first shell byte is the learner's wait: only their own terminal records it, once
        # per session (the row says whether an earlier terminal already did).
        self._first_output_noted = not self._counts_activity or session.first_output_at is not None
        # Acks bound what the browser says it has not rendered; this bounds what daphne holds for it.
        self.client_flow = ClientFlow.for_send(self.base_send)
        self.bridge = bridge = terminals.TerminalBridge(stream, send_output=self._send_output,
                                                        on_exit=self._shell_exited,
                                                        client_writable=self.client_flow.wait_writable)
        if session.lab.record_terminal:
            try:
                bridge.recorder = await recordings.join(session, request)
            except Exception:
                log.exception("cannot record the terminal of session %s", session.pk)
        await self.send(text_data=json.dumps({"type": "ready", "name": request.name, "reattached": reattached}))
        bridge.start()
        self._runs_foreground = self._counts_activity and request.name == terminals.FOREGROUND_TERMINAL
        await self._run_foreground_scripts()

    async def _run_foreground_scripts(self) -> None:
        """Type the scripts queued for the first terminal into it (Killercoda's foreground scripts),
        when the learner's own first terminal is open: at connect, and when the page says a step
        started."""
        if not getattr(self, "_runs_foreground", False) or self.session is None or self.bridge is None:
            return
        session = self.session
        scripts = await database_sync_to_async(session.claim_foreground_scripts)()
        for item in scripts:
            try:
                typed = await asyncio.to_thread(terminals.stage_foreground, session, item["script"])
            except RunnerError as exc:
                await database_sync_to_async(session.log)(f"{item['label']}: its terminal script could not run: "
                                                          f"{exc}", level="warning")
                continue
            if self.bridge is None:
                return
            self.bridge.write(typed)

    async def _fail(self, message: str) -> None:
        await self.send(text_data=json.dumps({"type": "error", "message": message}))
        await self.close(code=CLOSE_RUNNER_ERROR)

    async def _send_output(self, data: bytes) -> None:
        await self.send(bytes_data=data)
        if not self._first_output_noted:
            self._note_first_output()

    def _note_first_output(self) -> None:
        """Record the session's first output in a thread (one conditional UPDATE per terminal open
        at most), never holding up the bytes."""
        self._first_output_noted = True
        if self.session is None:
            return
        at = timezone.now()
        task = asyncio.get_running_loop().create_task(
            database_sync_to_async(self.session.note_first_output)(at))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    async def _shell_exited(self) -> None:
        await self.send(text_data=json.dumps({"type": "exit"}))
        await self.close(code=1000)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        bridge = self.bridge
        if bridge is None:
            return  # refused or not attached yet: nothing reaches a shell
        if bytes_data is not None:
            if len(bytes_data) > terminals.MAX_INPUT_FRAME:
                await self._strike()
                return
            self._strikes = 0
            bridge.write(bytes_data)
            self._note_activity()
            return
        control = terminals.parse_control(text_data or "")
        if control is None:
            await self._strike()
            return
        self._strikes = 0
        if isinstance(control, terminals.Ack):
            bridge.ack(control.bytes)
        elif isinstance(control, terminals.Resize):
            bridge.resize(control.cols, control.rows)
        elif isinstance(control, terminals.StepsChanged):
            await self._run_foreground_scripts()
        else:
            await self.send(text_data=PONG)

    async def _strike(self) -> None:
        self._strikes += 1
        if self._strikes == MAX_STRIKES:
            log.info("terminal of session %s: closing after %d malformed frames",
                     self.session.pk if self.session else "?", self._strikes)
            await self.close(code=CLOSE_BAD_REQUEST)

    def _note_activity(self) -> None:
        now = asyncio.get_running_loop().time()
        if self.session is None or not self._counts_activity or not terminals.activity_due(self._last_activity, now):
            return
        self._last_activity = now
        task = asyncio.get_running_loop().create_task(database_sync_to_async(mark_active)(self.session, "terminal"))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("terminal activity or first-output write failed: %s", task.exception())

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        bridge, self.bridge = self.bridge, None
        if bridge is None:
            return
        try:
            # Cancels a pump waiting for the client's buffer to drain; leaves the recording (the
            # last connection of the terminal closes it and marks it ended).
            await bridge.close()
        finally:
            if self.client_flow is not None:  # no longer daphne's producer once nothing reads the shell
                self.client_flow.close()
                self.client_flow = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _close_if_attached(attaching: asyncio.Future[tuple[Any, bool]]) -> None:
    if attaching.cancelled() or attaching.exception() is not None:
        return
    stream, _reattached = attaching.result()
    asyncio.get_running_loop().run_in_executor(None, terminals.close_quietly, stream)



class VncConsumer(AsyncWebsocketConsumer):
    # No channel layer: nothing messages a console, and with Redis the layer's receive, cancelled
    # when the socket closes, could end in a TimeoutError traceback (see labsite/hosts.py).
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
            session = await database_sync_to_async(get_session_for_user)(user, self.scope["url_route"]["kwargs"]["pk"])
        except Http404:
            await self.close(vnc_bridge.CLOSE_FORBIDDEN)
            return
        if session.state != State.RUNNING:
            await self.close(vnc_bridge.CLOSE_UNAVAILABLE, "The session is not running.")
            return
        target = vnc_endpoint_of(session.endpoints)
        port = vnc_bridge.runner_vnc_port(session.endpoints) if target is None else None
        if port is not None:
            # The runner's address holds only in the process that asks (the Kubernetes runner's loopback
            # tunnel through the API server): ask it here, in a thread (it calls the API).
            try:
                target = await asyncio.to_thread(vnc_bridge.runner_vnc_endpoint, session, port)
            except RunnerError as exc:
                log.info("VNC server of session %s cannot be reached through its runner: %s", session.pk, exc)
                await self.close(vnc_bridge.CLOSE_UPSTREAM_FAILED, "The graphical console does not answer.")
                return
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
        self.counts_activity = session.is_learner(user)  # staff watching is not the learner
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
            await database_sync_to_async(mark_active)(self.session, "terminal")

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
