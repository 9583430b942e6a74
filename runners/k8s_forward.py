"""Loopback forwarders to session ports through the Kubernetes API server's pod proxy.

With `endpoint_mode: "proxy"` the platform runs outside the cluster and cannot reach pod IPs.
The runner contract still hands out a TCP address (Endpoint host:port), so the runner keeps one
loopback listener per (pod, port): a connection to it becomes one request to
`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>` on the API server, authenticated with
the runner's own credentials and TLS verified against the kubeconfig's CA.

One request per connection. Each accepted connection carries exactly one request: its head is
read (bounded), checked, rewritten and sent with `Connection: close`; then exactly its body
(Content-Length, or chunked, parsed chunk by chunk) and nothing more; the answer goes back with
`Connection: close`, and both connections are closed. Rewriting every request of a kept-alive
connection would mean framing every later request exactly; one mistake there smuggles a raw
request to the API server on a connection that, with client-certificate credentials, is
already authenticated as the platform. The cost is a new TLS connection per request (clients
such as the preview's httpx simply open another one). An upgrade (WebSocket) is the one case
that keeps the connection: after a 101 from the pod, bytes are piped both ways, and they go to
the pod through the API server's tunnel, never to the API server itself.

The API server's own proxy changes answers (k8s.io/apimachinery/pkg/util/proxy/transport.go):
it prefixes absolute-path URLs in `Location` headers and in `text/html` bodies (href, src, ...;
gzip and deflate bodies too) with the proxy path. The forwarder undoes exactly that, so the app
reads the same through both endpoint modes. What it cannot undo: the API server consumes the
`Authorization` header (an app's basic auth never arrives), drops the query string of upgrade
requests (kubernetes#77142), removes CORS response headers and adds X-Forwarded-Uri.

Refused before anything is sent upstream: heads over 64 KiB or 100 header lines, anything but
an origin-form HTTP/1.x request of a method the pod proxy serves, dot segments (also
percent-encoded), ambiguous framing (Transfer-Encoding with Content-Length, any coding but
chunked, differing lengths), several or malformed Host headers, obsolete line folding and control
characters. The pod and port are fixed per listener; the client's Authorization, Impersonate-*,
X-Remote-* and hop-by-hop headers never reach the API server (its Host does, for the app: it
decides nothing about where the connection goes). Everything runs on the forwarder's own event loop in a daemon thread,
never on the caller's (daphne's) loop (k8s_listeners.py keeps the listeners, shared with k8s_vnc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import threading
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from runners.k8s_listeners import IDLE_SECONDS, Listener, PodListeners, until_one_ends

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_HEADER_LINES = 100
MAX_CHUNK_LINE = 1024
MAX_REWRITTEN_BODY = 16 * 1024 * 1024  # bigger HTML passes untouched
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
RESPONSE_TIMEOUT = 600.0
# What the pod proxy serves (pkg/registry/core/pod/rest/subresources.go, proxyMethods).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
TARGET = re.compile(rb"^/[\x21-\x7e]*$")
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
CHUNK_SIZE = re.compile(rb"^([0-9A-Fa-f]{1,8})(;[\x09\x20-\x7e]*)?$")
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: [\x09\x20-\x7e\x80-\xff]*)?$")
# Never forwarded to the API server: hop-by-hop headers, framing (re-sent as parsed), the
# client's Host and credentials, and headers the API server would act on as the platform.
DROPPED = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host",
                     "authorization", "proxy-authorization", "expect", "content-length", "transfer-encoding"})
DROPPED_PREFIXES = ("impersonate-", "x-remote-")
RESPONSE_DROPPED = frozenset({"connection", "keep-alive", "proxy-connection"})


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    length: int = 0
    chunked: bool = False
    upgrade: str = ""
    expect_continue: bool = False
    host: str = ""


def parse_request_head(head: bytes) -> Request:
    """The request head (through the blank line) checked as described in the module docstring."""
    if len(head) > MAX_HEAD:
        raise Refused(431, "Request Header Fields Too Large")
    lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise Refused(431, "Request Header Fields Too Large")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise Refused(400, "Bad Request")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not TOKEN.match(parts[0]):
        raise Refused(400, "Bad Request")
    method, target = parts[0].decode("ascii"), parts[1]
    if method not in METHODS:
        raise Refused(405, "Method Not Allowed")
    if not TARGET.match(target) or b"#" in target:
        raise Refused(400, "Bad Request")
    path = urlsplit(target.decode("ascii")).path
    decoded = unquote(unquote(path))  # twice: %252e is a dot for a server that decodes once more
    if any(segment in (".", "..") for segment in decoded.replace("\\", "/").split("/")) or "\x00" in decoded:
        raise Refused(400, "Bad Request")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.match(name) or VALUE_BAD.search(value):
            raise Refused(400, "Bad Request")  # also obsolete line folding (a line starting with space)
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    request = Request(method, target.decode("ascii"), headers)
    hosts = [value for name, value in headers if name == "host"]
    if len(hosts) > 1 or (hosts and not HOST.match(hosts[0])):
        raise Refused(400, "Bad Request")
    request.host = hosts[0] if hosts else ""
    lengths = {value for name, value in headers if name == "content-length"}
    codings = [value for name, value in headers if name == "transfer-encoding"]
    if codings:
        if lengths or [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
            raise Refused(400 if lengths else 501, "Bad Request" if lengths else "Not Implemented")
        request.chunked = True
    elif lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise Refused(400, "Bad Request")
        request.length = int(next(iter(lengths)))
    connection = {t.strip().lower() for name, value in headers if name == "connection" for t in value.split(",")}
    upgrade = next((value for name, value in headers if name == "upgrade"), "")
    if "upgrade" in connection and upgrade:
        if method != "GET" or request.chunked or request.length:
            raise Refused(400, "Bad Request")
        request.upgrade = upgrade
    request.expect_continue = any(name == "expect" and value.lower() == "100-continue" for name, value in headers)
    if any(name == "expect" and value.lower() != "100-continue" for name, value in headers):
        raise Refused(417, "Expectation Failed")
    # Headers the Connection header names are hop-by-hop as well.
    request.headers = [(n, v) for n, v in headers if n not in DROPPED and n not in connection
                       and not n.startswith(DROPPED_PREFIXES)]
    return request


@dataclass(frozen=True)
class ApiServer:
    """Where the API server is and how to talk to it, from the runner's client configuration."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    server_hostname: str | None
    authorization: Callable[[], str | None]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def api_server_of(configuration: Any) -> ApiServer:
    """From a `kubernetes.client.Configuration`: the same host, CA, client certificate and token
    (refreshed as the client refreshes it) that every other API call of the runner uses."""
    url = urlsplit(str(configuration.host))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"unusable API server address {configuration.host!r}")
    tls: ssl.SSLContext | None = None
    if url.scheme == "https":
        tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if not configuration.verify_ssl:  # insecure-skip-tls-verify, as the client itself does
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            tls.load_cert_chain(configuration.cert_file, configuration.key_file or None)
        tls.set_alpn_protocols(["http/1.1"])

    def authorization() -> str | None:
        value = (configuration.auth_settings().get("BearerToken") or {}).get("value")
        return str(value) if value else None

    return ApiServer(url.hostname, url.port or (443 if tls else 80), tls,
                     (configuration.tls_server_name or url.hostname) if tls else None, authorization)


class PodForwarder(PodListeners):
    """The runner's HTTP listeners (k8s_listeners.py). Public methods are thread-safe and blocking."""

    thread_name = "k8s-pod-forwarder"
    stream_limit = MAX_HEAD + 1

    def __init__(self, api_server: Callable[[], ApiServer], idle_seconds: float = IDLE_SECONDS) -> None:
        super().__init__(idle_seconds)
        self._api_server_factory = api_server
        self._api_server: ApiServer | None = None

    def address(self, namespace: str, pod: str, port: int) -> tuple[str, int]:
        """The loopback address that reaches `port` of `pod` (a listener is made on first use)."""
        if self._api_server is None:
            self._api_server = self._api_server_factory()
        return self._address(namespace, pod, port)

    # on the forwarder's loop --------------------------------------------------------------------------
    async def _serve(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._forward(listener, reader, writer)
        except Refused as refused:
            with contextlib.suppress(Exception):
                await _answer(writer, refused.status, refused.reason)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("pod forwarder failed for %s/%s:%s", listener.namespace, listener.pod, listener.port)

    async def _forward(self, listener: Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError as exc:
            raise Refused(431, "Request Header Fields Too Large") from exc
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise Refused(400, "Bad Request") from exc
            return
        request = parse_request_head(head)
        api = self._api_server
        assert api is not None
        upstream_head = await asyncio.to_thread(_upstream_head, request, listener.prefix, api)
        if request.expect_continue:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                api.host, api.port, ssl=api.tls, server_hostname=api.server_hostname, limit=MAX_HEAD + 1),
                CONNECT_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.warning("pod forwarder: cannot reach the API server %s:%s: %s", api.host, api.port, exc)
            raise Refused(502, "Bad Gateway") from exc
        try:
            up_writer.write(upstream_head)
            await _copy_body(request, reader, up_writer)
            await self._answer_from(listener, request, reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _answer_from(self, listener: Listener, request: Request, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
                           up_writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), RESPONSE_TIMEOUT)
            except asyncio.LimitOverrunError as exc:
                raise Refused(502, "Bad Gateway") from exc
            lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
            status_match = STATUS_LINE.match(lines[0])
            if status_match is None:
                raise Refused(502, "Bad Gateway")
            status = int(status_match.group(1))
            if status == 101:
                if not request.upgrade:
                    raise Refused(502, "Bad Gateway")
                writer.write(head)
                await writer.drain()
                await _tunnel(reader, writer, up_reader, up_writer)
                return
            if 100 <= status < 200:
                writer.write(head)  # 100 Continue, 103 Early Hints: interim, the answer follows
                continue
            break
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        headers = [(n, _unprefix_location(v, listener.prefix) if n.lower() in ("location", "content-location") else v)
                   for n, v in headers if n.lower() not in RESPONSE_DROPPED]
        has_body = request.method != "HEAD" and status not in (204, 304)
        content_type = next((v for n, v in headers if n.lower() == "content-type"), "")
        encoding = next((v for n, v in headers if n.lower() == "content-encoding"), "").strip().lower()
        if has_body and content_type.split(";")[0].strip().lower() == "text/html" and \
                encoding in ("", "gzip", "deflate"):
            body = await _read_body(headers, up_reader)
            if body is not None:
                body = _unprefix_html(body, encoding, listener.prefix)
                headers = [(n, v) for n, v in headers if n.lower() not in ("content-length", "transfer-encoding")]
                headers.append(("Content-Length", str(len(body))))
                writer.write(_response_head(lines[0], headers) + body)
                await writer.drain()
                return
            raise Refused(502, "Bad Gateway")
        writer.write(_response_head(lines[0], headers))
        length = next((v for n, v in headers if n.lower() == "content-length"), None)
        chunked = any(n.lower() == "transfer-encoding" for n, v in headers)
        if not has_body:
            pass
        elif length is not None and length.isdigit() and not chunked:
            await _copy_exactly(up_reader, writer, int(length))
        else:
            await _copy_all(up_reader, writer)  # chunked or close-delimited: the API server closes after it
        await writer.drain()


def _upstream_head(request: Request, prefix: str, api: ApiServer) -> bytes:
    # The client's Host goes on (the API server's proxy passes it to the pod, so the app sees what it sees in
    # pod-ip mode, e.g. the preview's localhost:<port>); it changes nothing about where the bytes go.
    lines = [f"{request.method} {prefix}{request.target} HTTP/1.1", f"Host: {request.host or api.host_header}"]
    authorization = api.authorization()
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines.extend(f"{name}: {value}" for name, value in request.headers)
    if request.upgrade:
        lines += ["Connection: Upgrade", f"Upgrade: {request.upgrade}"]
    else:
        lines.append("Connection: close")
        if request.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif request.length or request.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {request.length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _copy_body(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if request.chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            match = CHUNK_SIZE.match(line[:-2])
            if len(line) > MAX_CHUNK_LINE or match is None:
                raise Refused(400, "Bad Request")
            size = int(match.group(1), 16)
            writer.write(line)
            if size == 0:
                while True:  # trailer fields, then the blank line
                    trailer = await reader.readuntil(b"\r\n")
                    if len(trailer) > MAX_CHUNK_LINE:
                        raise Refused(400, "Bad Request")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        await writer.drain()
                        return
            await _copy_exactly(reader, writer, size)
            if await reader.readexactly(2) != b"\r\n":
                raise Refused(400, "Bad Request")
            writer.write(b"\r\n")
    elif request.length:
        await _copy_exactly(reader, writer, request.length)
    await writer.drain()


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size > 0:
        data = await reader.read(min(size, 65536))
        if not data:
            raise EOFError("the connection ended inside a body")
        size -= len(data)
        writer.write(data)
        await writer.drain()


async def _copy_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
                  up_writer: asyncio.StreamWriter) -> None:
    """After a 101: both ways until one side ends (as the API server's own upgrade proxy does)."""
    await until_one_ends(_copy_all(reader, up_writer), _copy_all(up_reader, writer))


async def _read_body(headers: list[tuple[str, str]], reader: asyncio.StreamReader) -> bytes | None:
    """A whole response body, without its framing (None: too big or malformed)."""
    length = next((v for n, v in headers if n.lower() == "content-length"), None)
    if any(n.lower() == "transfer-encoding" for n, v in headers):
        body = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            match = CHUNK_SIZE.match(line[:-2])
            if match is None:
                return None
            size = int(match.group(1), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return bytes(body)
            if len(body) + size > MAX_REWRITTEN_BODY:
                return None
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if length is not None:
        if not length.isdigit() or int(length) > MAX_REWRITTEN_BODY:
            return None
        return await reader.readexactly(int(length))
    data = await reader.read(MAX_REWRITTEN_BODY + 1)
    body = bytearray(data)
    while data and len(body) <= MAX_REWRITTEN_BODY:
        data = await reader.read(65536)
        body += data
    return bytes(body) if len(body) <= MAX_REWRITTEN_BODY else None


def _unprefix_location(value: str, prefix: str) -> str:
    """`Location: <prefix>/x` (the API server's rewrite of the app's `/x`) back to `/x`; also
    `http://<host><prefix>/x`, its rewrite of a URL naming the host the request named."""
    try:
        url = urlsplit(value)
    except ValueError:
        return value
    if url.path == prefix or url.path.startswith(prefix + "/"):
        return urlunsplit((url.scheme, url.netloc, url.path[len(prefix):] or "/", url.query, url.fragment))
    return value


def _unprefix_html(body: bytes, encoding: str, prefix: str) -> bytes:
    """Undo the API server's HTML rewriting: it wrote `attr="<prefix>/x"` for the app's `/x`."""
    # gzip, or deflate as the API server writes it back (Go's compress/flate: raw, no zlib header);
    # a zlib-wrapped body is read too. Whatever cannot be read was not rewritten either.
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else -zlib.MAX_WBITS if encoding == "deflate" else 0
    raw = body
    if wbits:
        try:
            raw = zlib.decompress(body, wbits)
        except zlib.error:
            if encoding != "deflate":
                return body
            try:
                raw, wbits = zlib.decompress(body), zlib.MAX_WBITS
            except zlib.error:
                return body
    marker = prefix.encode()
    if marker not in raw:
        return body
    # Only where the API server put it: at the start of a URL in an attribute, or after the app's own
    # scheme://host when that host was the one the request named.
    raw = re.sub(rb'(=\s*["\']?(?:https?://[^/"\'\s>]+)?)' + re.escape(marker) + rb"(?=/)", rb"\1", raw)
    if not wbits:
        return raw
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(raw) + compressor.flush()


def _response_head(status_line: bytes, headers: list[tuple[str, str]]) -> bytes:
    lines = [status_line.decode("latin-1"), *(f"{n}: {v}" for n, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = f"{status} {reason}\n".encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()


_forwarders: weakref.WeakKeyDictionary[Any, PodForwarder] = weakref.WeakKeyDictionary()
_forwarders_lock = threading.Lock()


def forwarder_for(owner: Any, api_server: Callable[[], ApiServer]) -> PodForwarder:
    """The one forwarder of `owner` (a runner), made on first use."""
    with _forwarders_lock:
        forwarder = _forwarders.get(owner)
        if forwarder is None:
            forwarder = _forwarders[owner] = PodForwarder(api_server)
        return forwarder
