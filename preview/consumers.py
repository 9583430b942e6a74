"""The web preview proxy: `/sessions/<id>/preview/<port>/<path>` over HTTP and WebSocket.

labsite/asgi.py sends matching HTTP requests to PreviewHttpConsumer (behind
AuthMiddlewareStack) and labsite/asgi.py matching WebSockets to
PreviewWebSocketConsumer. Who may look, where the app is and what is rewritten is decided
in preview/proxy.py; this module moves the bytes. With a separate preview host
(LAB_PREVIEW_HOST) the same consumers serve it, authorized by preview/origin.py.

On the platform's origin (no preview host) every HTTP answer, the app's and our own pages and
redirects, carries `Content-Security-Policy: sandbox …` (preview.SANDBOX_POLICY): the app's
documents run with an opaque origin, never as the platform.

HTTP is streamed both ways: request body chunks go up as they arrive, response chunks come
down as the app writes them, so neither a large upload nor a large download is held in memory
here. Statuses the proxy gives itself: 404 (no such preview for you, or an undeclared port),
503 (the session is not running), 502 (nothing listens on the port, or the app broke the
connection), 504 (the app did not accept the connection within 5 s).

WebSocket close codes: 4403 no access, 4404 undeclared port, 4409 session not running,
4502 the app cannot be reached; once connected, the app's close code is passed on (codes
the server may not send, 1001–2999, arrive as 4000 + code % 1000, e.g. 1011 → 4011).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

import httpx2 as httpx
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from consoles.flow import ClientFlow, find_daphne_protocol
from labs.models import IdleSignal
from preview import access, origin, proxy
from preview.access import PreviewGrant, PreviewNotFound, SessionNotRunning, UndeclaredPort
from runners.base import Endpoint, RunnerError
from sessions_app import actions
from sessions_app.models import Session

log = logging.getLogger(__name__)

# The brief's form, with the trailing part optional so `.../preview/8080` can redirect to `.../8080/`.
PREVIEW_PATH = r"^sessions/(?P<pk>[0-9a-f-]{36})/preview/(?P<port>[0-9]{1,5})(?:/(?P<path>.*))?$"
_RAW_PREFIX = re.compile(rb"^/*sessions/[0-9a-f-]{36}/preview/[0-9]{1,5}")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONNECT_TIMEOUT = 5.0
# Reads and writes have no limit: long polls, server-sent events and slow downloads are normal.
_TIMEOUT = httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=None, pool=CONNECT_TIMEOUT)
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=50, keepalive_expiry=30.0)
# Headers httpx adds on its own; the app should see only what the browser sent.
_CLIENT_DEFAULTS = ("accept", "accept-encoding", "user-agent")

WS_MAX_MESSAGE = 16 * 1024 * 1024
WS_MAX_QUEUE = 16  # frames buffered from the app before we stop reading from it
WS_WRITE_LIMIT = 64 * 1024  # bytes buffered towards the app before a send waits

CLOSE_FORBIDDEN = 4403
CLOSE_UNDECLARED_PORT = 4404
CLOSE_NOT_RUNNING = 4409
CLOSE_UNREACHABLE = 4502

NOT_FOUND_TEXT = (
    "There is no preview here for you. If someone shared it with you, the link may have expired or been revoked."
)


class _ClientGone(Exception):
    """The browser disconnected while we were still reading its request body."""


class _NoCookies(http.cookiejar.CookieJar):
    """The client is shared by every session: it must never remember a cookie it sees."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


def _new_client(endpoint: Endpoint | None = None) -> httpx.AsyncClient:
    transport = None
    if endpoint is not None and endpoint.unix_path:
        transport = httpx.AsyncHTTPTransport(uds=endpoint.unix_path, trust_env=False, limits=_LIMITS)
    return httpx.AsyncClient(
        timeout=_TIMEOUT,
        limits=_LIMITS,
        follow_redirects=False,
        trust_env=False,  # session traffic never goes through the host's HTTP_PROXY
        cookies=_NoCookies(),
        transport=transport,
    )


# One pooled client per event loop (connections belong to the loop that opened them).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def _client_for(endpoint: Endpoint) -> tuple[httpx.AsyncClient, bool]:
    """The HTTP client to reach `endpoint`, and whether the caller must close it."""
    if endpoint.unix_path:
        return _new_client(endpoint), True
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = _new_client()
    return client, False


class _WriteWindow:
    """Backpressure towards a slow browser.

    ASGI has no "the client is not keeping up" signal, and daphne writes whatever it is sent
    into Twisted's buffer at once, so a fast app and a slow browser would pile the whole
    download up in memory. Registered as the Twisted request's push producer, we are told when
    the socket's send buffer is full (pause) and when it has drained (resume), and wait in
    between. Under any other server (or if daphne's internals change) `attach` finds no
    request and the proxy streams without it.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self._open = asyncio.Event()
        self._open.set()

    @classmethod
    def attach(cls, send: Send) -> _WriteWindow | None:
        request = find_daphne_protocol(send)  # for HTTP, daphne's Twisted request
        if request is None:
            return None
        window = cls(request)
        try:
            request.registerProducer(window, True)
        except Exception:  # a producer already there, or the connection already gone
            return None
        if getattr(getattr(request, "channel", None), "_waitingForTransport", False):
            window.pauseProducing()  # the buffer filled before we registered: wait for it to drain
        return window

    # Twisted's IPushProducer, called on the event loop's thread (daphne's asyncio reactor).
    def pauseProducing(self) -> None:
        self._open.clear()

    def resumeProducing(self) -> None:
        self._open.set()

    def stopProducing(self) -> None:
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()

    def detach(self) -> None:
        with contextlib.suppress(Exception):  # the connection is gone; nothing to unregister from
            self._request.unregisterProducer()


def _app_target(scope: Scope) -> bytes:
    """The path the app sees (the prefix stripped), percent-encoding kept as the browser sent it."""
    raw = scope.get("raw_path")
    if raw:
        match = _RAW_PREFIX.match(raw)
        if match:
            rest = raw[match.end():]
            return rest if rest.startswith(b"/") else b"/" + rest
    # The prefix itself was percent-encoded: fall back to the decoded path the router matched.
    path = scope["url_route"]["kwargs"].get("path") or ""
    return b"/" + quote(path, safe="/:@!$&'()*+,;=-._~").encode("ascii")


def _with_query(path: bytes, query: bytes) -> bytes:
    return path + b"?" + query if query else path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _forward_context(scope: Scope, grant: PreviewGrant, websocket: bool = False) -> proxy.ForwardContext:
    client = scope.get("client")
    return proxy.ForwardContext(
        prefix=grant.prefix,
        port=grant.port,
        client_ip=client[0] if client else None,
        scheme=proxy.public_scheme(scope),
        public_host=_header(scope, b"host"),
        websocket=websocket,
    )


async def _authorize(scope: Scope) -> PreviewGrant:
    kwargs = scope["url_route"]["kwargs"]
    query = scope.get("query_string", b"")
    query_token, _ = access.split_share_param(query)
    cookies = scope.get("cookies") or {}
    cookie_token = cookies.get(access.SHARE_COOKIE)
    if origin.is_preview_host(scope):
        # Its own grants only: the platform's session (which a browser would not send here anyway) counts for nothing.
        embed, _ = access.split_param(query, origin.EMBED_PARAM)
        return await database_sync_to_async(origin.authorize)(
            kwargs["pk"], int(kwargs["port"]), embed=embed if scope["type"] == "http" else None,
            grant_cookie=cookies.get(access.GRANT_COOKIE), query_token=query_token, cookie_token=cookie_token,
        )
    return await database_sync_to_async(access.authorize)(
        scope.get("user"), kwargs["pk"], int(kwargs["port"]), query_token=query_token, cookie_token=cookie_token
    )


def _app_query(scope: Scope, grant: PreviewGrant) -> tuple[bytes, bool]:
    """The query string the app sees (our own tokens taken out), and whether a token was taken out."""
    query = scope.get("query_string", b"")
    stripped = False
    if grant.share_token is not None:
        _, query = access.split_share_param(query)
        stripped = True
    if origin.is_preview_host(scope):
        embed, query = access.split_param(query, origin.EMBED_PARAM)
        stripped = stripped or embed is not None
    return query, stripped


class PreviewHttpConsumer:
    """Reverse-proxies one HTTP request to the session's app (a plain ASGI application:
    Channels' HTTP consumers collect the whole request body before handling it)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        # Who may frame our answers: None on the platform's origin (SAMEORIGIN); on a preview host
        # our own pages may be framed anywhere until a grant names the platform's origin.
        on_preview_host = origin.is_preview_host(scope)
        self.frame_ancestors: str | None = origin.MESSAGE_FRAME_ANCESTORS if on_preview_host else None
        # On the platform's origin every answer is sandboxed, ours and the app's alike.
        self.sandboxed = not on_preview_host

    @classmethod
    def as_asgi(cls) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await cls(scope, receive, send).handle()

        app.consumer_class = cls  # type: ignore[attr-defined]  # what Channels' routing inspects
        return app

    async def handle(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        port = int(kwargs["port"])
        prefix = access.preview_prefix(kwargs["pk"], port)
        if kwargs.get("path") is None:
            # Relative URLs in the app's pages only resolve under the prefix with its slash.
            location = _with_query(prefix.encode() + b"/", self.scope.get("query_string", b""))
            await self._respond(308, [(b"location", location), (b"cache-control", b"no-store")])
            return
        try:
            grant = await _authorize(self.scope)
        except UndeclaredPort as exc:
            await self._page(404, "No preview on this port", str(exc))
            return
        except PreviewNotFound:
            await self._page(404, "Not found", NOT_FOUND_TEXT)
            return
        except SessionNotRunning:
            await self._page(503, "The session is not running", "The preview works only while the session is running.")
            return
        if grant.frame_ancestors is not None:
            self.frame_ancestors = grant.frame_ancestors
        target = _app_target(self.scope)
        # Forwarded as it came: a `share` parameter that named no share (owner, staff) is the app's.
        query, stripped = _app_query(self.scope, grant)
        if stripped:
            # First use of a share link or an embed token: keep the grant in a cookie only this
            # port's preview sees, and take the token out of the address (and so out of what the
            # app and its Referers see).
            headers = [(b"location", _with_query(prefix.encode() + target, query)), (b"cache-control", b"no-store"),
                       (b"referrer-policy", b"no-referrer")]
            if grant.share_token is not None:
                headers.append((b"set-cookie", access.share_cookie_header(grant).encode("latin-1")))
            if grant.new_host_grant is not None:
                headers.append((b"set-cookie", origin.grant_cookie_header(grant, self.scope).encode("latin-1")))
            await self._respond(302, headers)
            return
        try:
            endpoint = await asyncio.to_thread(proxy.resolve_endpoint, grant.session, port)
        except RunnerError as exc:
            log.info("preview %s: no endpoint for port %s: %s", grant.session.pk, port, exc)
            await self._page(502, "The preview cannot reach this session",
                             "Its environment does not answer on the network; try again in a moment.", retry=True)
            return
        # Someone using the app in the session: activity, if the lab counts preview traffic.
        await actions.amark_active(grant.session, IdleSignal.PREVIEW)
        await self._proxy(grant, endpoint, _with_query(target, query), unquote(target.decode("ascii", "replace")))

    # ---- the exchange ------------------------------------------------------------------------

    async def _proxy(self, grant: PreviewGrant, endpoint: Endpoint, target: bytes, app_path: str) -> None:
        first = await self.receive()
        if first["type"] != "http.request":
            return  # the browser left before sending its request
        client, owned = _client_for(endpoint)
        body_done = asyncio.Event()
        content: bytes | AsyncIterator[bytes]
        if first.get("more_body"):
            content = self._request_body(first.get("body", b""), body_done)
        else:
            content = first.get("body", b"")
            body_done.set()
        headers = proxy.upstream_request_headers(self.scope["headers"], _forward_context(self.scope, grant))
        url = httpx.URL(scheme="http", host=endpoint.host or "localhost", port=endpoint.port or grant.port,
                        raw_path=target)
        request = client.build_request(self.scope["method"], url, headers=headers, content=content)
        sent = {name for name, _ in headers}
        for name in _CLIENT_DEFAULTS:
            if name not in sent and name in request.headers:
                del request.headers[name]
        exchange = asyncio.create_task(self._exchange(client, request, grant, endpoint, app_path))
        watchers: list[asyncio.Task[Any]] = []
        try:
            # While httpx reads the request body, it is the only reader of `receive`; after that a
            # watcher takes over to notice the browser leaving, which cancels the exchange.
            body_waiter = asyncio.create_task(body_done.wait())
            watchers.append(body_waiter)
            await asyncio.wait({exchange, body_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not exchange.done():
                gone = asyncio.create_task(self._wait_disconnect())
                watchers.append(gone)
                await asyncio.wait({exchange, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not exchange.done():
                    exchange.cancel()
                    await asyncio.wait({exchange})  # let it close the app's response
                    return
            await exchange
        finally:
            for task in (exchange, *watchers):
                task.cancel()
            if owned:
                await client.aclose()

    async def _request_body(self, first: bytes, done: asyncio.Event) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body"):
                break
        done.set()

    async def _wait_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _exchange(
        self, client: httpx.AsyncClient, request: httpx.Request, grant: PreviewGrant, endpoint: Endpoint, app_path: str
    ) -> None:
        port = grant.port
        retry = request.method in ("GET", "HEAD")
        try:
            response = await client.send(request, stream=True)
        except _ClientGone:
            return
        except httpx.ConnectTimeout:
            proxy.forget_endpoint(grant.session.pk, port)
            await self._page(504, f"Port {port} did not answer in time",
                             f"The app on port {port} did not accept the connection within "
                             f"{CONNECT_TIMEOUT:g} seconds.", retry=retry)
            return
        except httpx.ConnectError:
            proxy.forget_endpoint(grant.session.pk, port)
            await self._page(502, f"Nothing is listening on port {port} in your session yet",
                             f"Start your app so that it listens on port {port} on all interfaces "
                             "(0.0.0.0, not only 127.0.0.1), then reload.", retry=retry)
            return
        except httpx.TransportError as exc:
            log.info("preview %s:%s: %s %s failed: %r", grant.session.pk, port, request.method, app_path, exc)
            await self._page(502, f"The app on port {port} did not answer",
                             "It closed the connection without sending a response.")
            return
        try:
            headers = proxy.rewrite_response_headers(
                response.headers.raw,
                prefix=grant.prefix,
                app_hosts=proxy.app_netlocs(endpoint, port),
                public_host=_header(self.scope, b"host"),
                app_request_path=app_path,
                frame_ancestors=grant.frame_ancestors,
            )
            await self._start(response.status_code, headers)
            window = _WriteWindow.attach(self.send)
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                        if window is not None:
                            await window.wait()
            finally:
                if window is not None:
                    window.detach()
        except httpx.TransportError as exc:
            # Too late for an error page; the response ends where the app stopped.
            log.info("preview %s:%s: %s %s broke off: %r", grant.session.pk, port, request.method, app_path, exc)
        finally:
            await response.aclose()
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    # ---- our own answers ---------------------------------------------------------------------

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Every response starts here, so none leaves without the sandbox where it is needed."""
        if self.sandboxed:
            headers = [*headers, (b"content-security-policy", proxy.SANDBOX_POLICY.encode())]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
        await self._start(status, headers)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _page(self, status: int, title: str, message: str, retry: bool = False) -> None:
        status, headers, body = proxy.message_page(status, title, message, retry_seconds=5 if retry else None,
                                                     frame_ancestors=self.frame_ancestors)
        await self._respond(status, headers, body)


def _client_close_code(code: int | None) -> int:
    """The close code to pass on to the browser. The server may send only 1000 and 3000–4999."""
    if code is None or code in (1000, 1001, 1005):
        return 1000
    if 3000 <= code <= 4999:
        return code
    return 4000 + code % 1000


class PreviewWebSocketConsumer(AsyncWebsocketConsumer):
    """Relays a WebSocket between the browser and the session's app, frame by frame.

    Backpressure: a frame from the browser is handed to the app before the next one is read
    (the app side buffers at most WS_WRITE_LIMIT bytes, and daphne stops reading the browser's
    socket while it is full); at most WS_MAX_QUEUE frames from the app wait for us, and the next
    is taken only once daphne's buffer toward the browser is below ClientFlow's bound. One
    message is at most WS_MAX_MESSAGE bytes.
    """

    # No channel layer: nothing elsewhere ever messages a preview socket, and with Redis each
    # connection would otherwise hold a channel of its own there.
    channel_layer_alias = None
    upstream: ClientConnection | None = None
    pump: asyncio.Task[None] | None = None
    flow: ClientFlow | None = None
    session: Session | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the server cancels us: the app's side must not outlive the browser's.
            if self.pump is not None:
                self.pump.cancel()
            if self.flow is not None:
                self.flow.close()
            if self.upstream is not None:
                await asyncio.shield(self.upstream.close())

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections in a worker thread before every handler;
        # frames touch no database, and a thread hop per frame would add latency to every one.
        if message.get("type") == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        if origin.configured_host() and not origin.is_preview_host(self.scope):
            # The app's pages live on the preview host; its WebSockets go there too.
            await self._refuse(CLOSE_FORBIDDEN)
            return
        try:
            grant = await _authorize(self.scope)
        except UndeclaredPort:
            await self._refuse(CLOSE_UNDECLARED_PORT)
            return
        except PreviewNotFound:
            await self._refuse(CLOSE_FORBIDDEN)
            return
        except SessionNotRunning:
            await self._refuse(CLOSE_NOT_RUNNING)
            return
        try:
            endpoint = await asyncio.to_thread(proxy.resolve_endpoint, grant.session, grant.port)
            self.upstream = await self._open_upstream(grant, endpoint)
        except (RunnerError, OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            proxy.forget_endpoint(grant.session.pk, grant.port)
            log.info("preview %s:%s: WebSocket to the app failed: %r", grant.session.pk, grant.port, exc)
            await self._refuse(CLOSE_UNREACHABLE)
            return
        await self.accept(subprotocol=self.upstream.subprotocol)
        self.flow = ClientFlow.for_send(self.base_send)
        self.pump = asyncio.create_task(self._pump(self.upstream, self.flow))
        self.session = grant.session
        await actions.amark_active(grant.session, IdleSignal.PREVIEW)

    async def _refuse(self, code: int) -> None:
        # Accept first so the browser sees the code; nothing has been opened towards the session.
        await self.accept()
        await self.close(code=code)

    async def _open_upstream(self, grant: PreviewGrant, endpoint: Endpoint) -> ClientConnection:
        query, _ = _app_query(self.scope, grant)
        target = _with_query(_app_target(self.scope), query).decode("ascii")
        headers = proxy.upstream_request_headers(
            self.scope["headers"], _forward_context(self.scope, grant, websocket=True)
        )
        lookup = dict(headers)
        extra = [(name, value) for name, value in headers if name not in ("host", "origin", "user-agent")]
        options: dict[str, Any] = {
            "origin": lookup.get("origin"),
            "user_agent_header": lookup.get("user-agent"),
            "subprotocols": list(self.scope.get("subprotocols") or []) or None,
            "additional_headers": extra,
            "compression": None,
            "proxy": None,
            "open_timeout": CONNECT_TIMEOUT,
            "max_size": WS_MAX_MESSAGE,
            "max_queue": WS_MAX_QUEUE,
            "write_limit": WS_WRITE_LIMIT,
        }
        uri = f"ws://{proxy.upstream_host(grant.port)}{target}"  # also the Host header the app sees
        if endpoint.unix_path:
            return await unix_connect(endpoint.unix_path, uri, **options)
        return await connect(uri, host=endpoint.host, port=endpoint.port or grant.port, **options)

    async def _pump(self, upstream: ClientConnection, flow: ClientFlow) -> None:
        try:
            async for message in upstream:
                if isinstance(message, str):
                    await self.send(text_data=message)
                else:
                    await self.send(bytes_data=message)
                # The browser is not keeping up: take nothing more from the app until daphne's
                # buffer drains (websockets then stops reading the app once its queue is full).
                await flow.wait_writable()
        except ConnectionClosed:
            pass
        await self.close(code=_client_close_code(upstream.close_code))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        message = text_data if text_data is not None else (bytes_data or b"")
        # daphne queues the browser's frames without limit while we wait for a slow app; when this
        # send will wait (the app's buffer goes past its limit), stop reading the browser meanwhile.
        lagging = upstream.transport.get_write_buffer_size() + len(message) > WS_WRITE_LIMIT
        flow = self.flow if lagging else None
        if flow is not None:
            flow.pause_reading()
        try:
            await upstream.send(message)
        except ConnectionClosed:
            pass  # the pump sees the close and passes it on
        finally:
            if flow is not None:
                flow.resume_reading()
        if self.session is not None:
            # Only the browser's frames: an app pushing to an open tab is not someone using it.
            # No query (nor thread hop) while this process marked the session lately.
            await actions.amark_active(self.session, IdleSignal.PREVIEW)

    async def disconnect(self, code: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.flow is not None:
            self.flow.close()
        if self.upstream is not None:
            await self.upstream.close()
