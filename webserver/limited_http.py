"""daphne's HTTP request, with each route's body limit enforced and the body streamed.

daphne 4.2 (twisted.web's Request underneath) buffers every request body whole before the
application sees any of it: Twisted writes it to a file (in memory below 100 kB) and parses
multipart and urlencoded bodies into `request.args` with the email package (about 12x the
body in memory), then daphne pushes the whole body into the application's unbounded queue at
once. So one anonymous 100 MiB POST cost 1.2 GiB, and a 2 GiB upload killed the server.

Here, instead:

- the route's limit (webserver/body_limits.py) is decided as soon as the headers are in, before a
  byte of the body is read; reading pauses while a session cookie is checked in a thread, when
  the route gives more to some users than to others;
- a Content-Length above the limit is answered 413 at once; a chunked body is counted as it
  arrives and answered 413 as soon as it passes the limit;
- an accepted body is never buffered: the application starts when the headers are in and takes
  the body chunk by chunk from a bounded RequestBody (webserver/request_body.py), which stops
  reading from the client while the application is behind. Twisted's form parsing never runs.

When a response ends before the whole body has arrived (a refusal, or an application answering
early), the connection closes after it; what the client still sends meanwhile is read and
dropped, never parsed as another request, for at most LINGER_SECONDS (closing with unread data
would reset the connection, and most clients would then lose the answer).

Before any of that, Twisted reads the request line and each header as a line of at most 16 KiB
(LineReceiver.MAX_LENGTH), and all of them together up to 16 KiB (totalHeadersSize). Past a line's
limit it closed the connection without a word (a search of 17,000 characters got no response at
all); past the total, or on a malformed request, it wrote a bare "400 Bad Request" with no page.
DroppingChannel answers those with a page: 414 for a request line too long, 431 for headers too
long, 400 for the rest.
"""

from __future__ import annotations

import asyncio
import logging
import re
from functools import partial
from io import BytesIO
from typing import Any

import daphne.server  # noqa: F401  # first: it installs Twisted's asyncio reactor
from daphne.http_protocol import WebRequest
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel

from webserver import body_limits
from webserver.body_limits import Audience, BodyLimit
from webserver.request_body import RequestBody

log = logging.getLogger(__name__)

LINGER_SECONDS = 5.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# "METHOD SP": how a request line starts; a header line has no space before its colon.
REQUEST_LINE_START = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ ")
URI_TOO_LONG = (414, "The address is too long",
                "The address of this request is longer than the server reads (16 KB): a search or link this long "
                "cannot be answered. Shorten it and try again.")
HEADERS_TOO_LONG = (431, "The request's headers are too long",
                    "The request's headers (cookies, most often) are longer than the server reads (16 KB in all). "
                    "Clear this site's cookies and try again.")
BAD_REQUEST = (400, "Bad request", "The server could not read this request.")
REASONS = {**RESPONSES, 431: b"Request Header Fields Too Large"}  # Twisted's table lacks 431


class DroppingChannel(HTTPChannel):
    """An HTTP connection that can stop reading requests: after `drop_rest()`, whatever the
    client sends is dropped unparsed, and closing half-closes (our side done, the client's still
    read and dropped) until the client closes or LINGER_SECONDS pass."""

    _dropping = False
    _linger: asyncio.TimerHandle | None = None

    def drop_rest(self) -> None:
        self._dropping = True
        self.persistent = False

    def dataReceived(self, data: bytes) -> None:
        if not self._dropping:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        # LineReceiver goes on splitting lines already buffered after a refusal; they are dropped too.
        if not self._dropping:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._dropping:
            super().rawDataReceived(data)

    # -- requests Twisted cannot read --------------------------------------------------------------

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line past Twisted's limit: `line` is the buffer from its start, a request line or a header."""
        self._refuse_unread(*(URI_TOO_LONG if REQUEST_LINE_START.match(line) else HEADERS_TOO_LONG))

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's bare 400: the request line and headers over their total size, or a malformed request."""
        if self._receivedHeaderSize <= self.totalHeadersSize:
            self._refuse_unread(*BAD_REQUEST)
        elif len(getattr(self, "_path", b"")) > self.totalHeadersSize // 2:
            self._refuse_unread(*URI_TOO_LONG)  # the address took most of the room
        else:
            self._refuse_unread(*HEADERS_TOO_LONG)

    def _refuse_unread(self, status: int, title: str, message: str) -> None:
        """Answer a request that was never handed to a Request, then close, dropping the rest."""
        if self._dropping:
            return
        self.drop_rest()
        transport: Any = self.transport
        log.info("refused a request from %s: %s %s", getattr(transport.getPeer(), "host", "?"), status, title)
        headers, body = body_limits.error_response(status, title, message, as_json=False)
        head = b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])
        head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        transport.write(head + b"\r\n" + body)
        self.loseConnection()

    def loseConnection(self) -> None:
        transport: Any = self.transport
        half_close = getattr(transport, "loseWriteConnection", None)
        if not self._dropping or half_close is None or self._linger is not None:
            super().loseConnection()
            return
        transport.unregisterProducer()  # as HTTPChannel.loseConnection does: the channel is its producer
        transport.resumeProducing()  # go on reading, to drop it
        half_close()
        # Twisted's reactor here is asyncio's loop (daphne installs it).
        self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abortConnection)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # HTTPChannel's has no default
        if self._linger is not None:
            self._linger.cancel()
        super().connectionLost(reason)


class LimitedRequest(WebRequest):
    """daphne's WebRequest whose body is limited and streamed (see the module's docstring).

    Requests without a body go through daphne exactly as before.
    """

    channel: DroppingChannel
    client_addr: list[Any] | None  # daphne's: [host, port] of the client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.streamed_body: RequestBody | None = None  # webserver.serve hands it to the application
        self._limit: BodyLimit | None = None  # None until decided
        self._received = 0
        self._refused = False
        self._expect_continue = False
        self._paused_for_check = False
        super().__init__(*args, **kwargs)

    # -- Twisted's calls, in the order they come -------------------------------------------------

    def gotLength(self, length: int | None) -> None:
        """All headers are in; `length` is the Content-Length, None for a chunked body."""
        # daphne hands the application what is in `content`: here it stays empty, the body streams.
        self.content = BytesIO()
        if length == 0:
            return
        self._take_request_line()
        self._expect_continue = self._take_expect_continue()
        if (self.getHeader(b"upgrade") or b"").lower() == b"websocket":
            self._refuse(400, "Bad request", "A WebSocket handshake has no body.")
            return
        self.streamed_body = RequestBody(self._pause_reading, self._resume_reading)
        route = body_limits.route_limit(self.path, self.server.root_path)
        key = body_limits.session_key(self.requestHeaders.getRawHeaders(b"cookie") or [])
        if key and body_limits.needs_audience(route, length):
            self._paused_for_check = True
            self._pause_reading()
            check = asyncio.get_running_loop().run_in_executor(None, body_limits.audience_of, key)
            check.add_done_callback(partial(self._audience_checked, route, length))
        else:
            self._decide(body_limits.limit_for(route, Audience.ANYONE), length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused or self.streamed_body is None:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit.max_bytes:
            self._refuse(413, "Request too large", self._limit.refusal)
            return
        self.streamed_body.feed(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The whole request is in: for a request with a body, only its end."""
        if self._refused:
            return
        if self.streamed_body is None:
            super().requestReceived(command, path, version)  # no body: daphne as ever
        else:
            self.streamed_body.end()

    # -- daphne's calls ----------------------------------------------------------------------------

    def finish(self) -> None:
        if self.channel is not None and (
            self._refused or (self.streamed_body is not None and not self.streamed_body.complete)
        ):
            # The rest of this body must never be read as the next request.
            self.channel.drop_rest()
        super().finish()

    def send_disconnect(self) -> None:
        if self.streamed_body is not None:
            self.streamed_body.disconnect()
        super().send_disconnect()

    def connectionLost(self, reason: Any) -> None:
        if self.streamed_body is not None:
            self.streamed_body.disconnect()
        super().connectionLost(reason)

    # -- deciding --------------------------------------------------------------------------------

    def _audience_checked(self, route: BodyLimit, length: int | None, check: asyncio.Future[Audience]) -> None:
        if self._disconnected or self._refused:
            return
        try:
            audience = check.result()
        except Exception:
            log.exception("checking the session of a %s %s failed", self.method.decode(), self.path.decode())
            self._refuse(503, "Try again", "The server could not check your sign-in just now; try again.")
            return
        self._decide(body_limits.limit_for(route, audience), length)

    def _decide(self, limit: BodyLimit, length: int | None) -> None:
        self._limit = limit
        if (length is not None and length > limit.max_bytes) or self._received > limit.max_bytes:
            self._refuse(413, "Request too large", limit.refusal)
            return
        if self._expect_continue:
            self._transport().write(CONTINUE)
        # daphne starts the application now; webserver.serve gives it `streamed_body` to read from.
        self.process()
        if self._paused_for_check:
            self._paused_for_check = False
            self._resume_reading()

    def _refuse(self, status: int, title: str, message: str) -> None:
        """Answer `status` instead of reading (the rest of) the body."""
        if self._refused:
            return
        self._refused = True
        if self.streamed_body is not None:
            self.streamed_body.disconnect()  # an application reading it gets http.disconnect
        if self.channel is not None:
            self.channel.drop_rest()
        log.info("refused %s %s from %s: %s", self.method.decode(errors="replace"),
                 self.path.decode(errors="replace"), getattr(self.client, "host", "?"), message)
        # Answered from the event loop, not from inside Twisted's parser that called us.
        asyncio.get_running_loop().call_soon(self._answer, status, title, message)

    def _answer(self, status: int, title: str, message: str) -> None:
        if self.finished or self.channel is None:
            return
        if self._response_started or self.startedWriting:
            self._transport().abortConnection()  # the application already answered: too late for ours
            return
        as_json = body_limits.wants_json(
            (self.requestHeaders.getRawHeaders(b"accept") or [b""])[0],
            (self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0],
        )
        headers, body = body_limits.error_response(status, title, message, as_json)
        if self.client_addr is None and hasattr(self.client, "host"):  # daphne sets it only for what it processed
            self.client_addr = [str(self.client.host), self.client.port]
        self.handle_reply({"type": "http.response.start", "status": status, "headers": headers})
        self.handle_reply({"type": "http.response.body", "body": body})

    # -- helpers -----------------------------------------------------------------------------------

    def _take_request_line(self) -> None:
        """What Twisted sets only once the whole body is in; refusals and daphne need it now."""
        channel: Any = self.channel
        self.method, self.uri, self.clientproto = channel._command, channel._path, channel._version
        self.path = self.uri.split(b"?", 1)[0]

    def _take_expect_continue(self) -> bool:
        """Whether the client waits for "100 Continue"; sent here once the body is accepted, not
        by Twisted before the limit is known (the header is removed so Twisted does not)."""
        expect = self.requestHeaders.getRawHeaders(b"expect")
        if not expect:
            return False
        self.requestHeaders.removeHeader(b"expect")
        return expect[0].lower() == b"100-continue" and self.clientproto == b"HTTP/1.1"

    def _transport(self) -> Any:
        return self.channel.transport

    def _pause_reading(self) -> None:
        if self.channel is not None:
            self._transport().pauseProducing()

    def _resume_reading(self) -> None:
        if self.channel is not None and not self._refused:
            self._transport().resumeProducing()
