"""endpoint_mode "proxy": session ports reached through the API server's pods/proxy by the runner's
loopback forwarders (runners/k8s_forward.py), against the API server double (tests/k8s/), whose
pods are real Docker containers. The app in the pod is a small HTTP + WebSocket server; the same
app is reached in pod-ip mode too. Also: what the double's pods/proxy answers, as kube-apiserver
does, and the web preview driving a Kubernetes session in proxy mode."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import socket
import ssl
import time
import uuid
import zlib
from datetime import timedelta
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from runners.base import RunnerError, SessionSpec
from runners.k8s_forward import ApiServer, PodForwarder, Refused, _unprefix_html, _unprefix_location, parse_request_head
from runners.kubernetes import KubernetesRunner
from tests.k8s.fixtures import SESSIONS_NAMESPACE as NS

pytest_plugins = ["preview.tests.test_preview_support"]  # daphne and the session helpers

DEBIAN = "labs/base:bookworm"  # has python3 for the app
TINY = "labs/busybox:latest"
APP_PORT = 8080
PAGE = (b'<!doctype html><html><head><link rel="stylesheet" href="/static/site.css"></head><body>'
        b'<a href="/docs/">docs</a> <a href="relative/x">rel</a> <img src="/img/logo.png?v=2"> '
        b'<form action="/submit" method="post"></form><a href="https://example.org/x">out</a></body></html>')
# The learner's app: echoes requests as JSON, serves PAGE (optionally gzipped), redirects, and speaks
# WebSocket (echo) after telling what request line and Authorization it saw. Standard library only.
APP = r'''
import base64, gzip, hashlib, json, socket, struct, sys, threading
PAGE = __PAGE__
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
seen = []
local = threading.local()

def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest

def reply(conn, status, headers, body):
    lines = ["HTTP/1.1 " + status] + [name + ": " + value for name, value in headers]
    lines += ["Content-Length: " + str(len(body)), "Connection: close"]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if getattr(local, "head", False) else body))

def websocket(conn, line, headers, rest):
    accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: " + accept + "\r\n\r\n").encode())
    buf = [rest]
    def need(n):
        while len(buf[0]) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf[0] += chunk
        out, buf[0] = buf[0][:n], buf[0][n:]
        return out
    def send(payload, opcode=1):
        n = len(payload)
        if n < 126:
            size = bytes([n])
        elif n < 65536:
            size = bytes([126]) + struct.pack(">H", n)
        else:
            size = bytes([127]) + struct.pack(">Q", n)
        conn.sendall(bytes([0x80 | opcode]) + size + payload)
    send(json.dumps({"request": line, "authorization": headers.get("authorization", "")}).encode())
    while True:
        b0, b1 = need(2)
        opcode, n = b0 & 15, b1 & 127
        if n == 126:
            n = struct.unpack(">H", need(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", need(8))[0]
        mask = need(4) if b1 & 128 else b"\0\0\0\0"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(need(n)))
        if opcode == 8:
            send(payload[:2], 8)
            return
        if opcode == 9:
            send(payload, 10)
            continue
        send(payload, opcode)

def handle(conn):
    try:
        head, rest = read_head(conn)
        if head is None:
            return
        line, *header_lines = head.split("\r\n")
        pairs = [tuple(x.strip() for x in h.split(":", 1)) for h in header_lines]
        headers = {k.lower(): v for k, v in pairs}
        seen.append(line)
        method, target, _ = line.split(" ")
        local.head = method == "HEAD"
        path = target.split("?")[0]
        if headers.get("upgrade", "").lower() == "websocket":
            return websocket(conn, line, headers, rest)
        body = rest
        if headers.get("transfer-encoding", "").lower() == "chunked":
            raw, body = rest, b""
            while True:
                while b"\r\n" not in raw:
                    raw += conn.recv(65536)
                size_line, raw = raw.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(raw) < size + 2:
                    raw += conn.recv(65536)
                body, raw = body + raw[:size], raw[size + 2:]
                if size == 0:
                    break
        else:
            while len(body) < int(headers.get("content-length", 0)):
                body += conn.recv(65536)
        if path == "/page.html":
            if "gzip" in target:
                return reply(conn, "200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                              ("Content-Encoding", "gzip")], gzip.compress(PAGE))
            return reply(conn, "200 OK", [("Content-Type", "text/html; charset=utf-8")], PAGE)
        if path == "/go":
            return reply(conn, "302 Found", [("Location", "/target?y=1")], b"")
        if path == "/seen":
            return reply(conn, "200 OK", [("Content-Type", "application/json")], json.dumps(seen).encode())
        answer = {"method": method, "target": target, "headers": pairs, "length": len(body),
                  "sha256": hashlib.sha256(body).hexdigest(), "body": body[:200].decode("latin-1")}
        reply(conn, "200 OK", [("Content-Type", "application/json"), ("Access-Control-Allow-Origin", "*")],
              json.dumps(answer).encode())
    except Exception as exc:
        print("app:", repr(exc), file=sys.stderr, flush=True)
    finally:
        conn.close()

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
'''.replace("__PAGE__", repr(PAGE))


def spec_of(image: str = DEBIAN) -> SessionSpec:
    return SessionSpec(session_id=str(uuid.uuid4()), user_id=7, username="olivia", lab_slug="web", image=image,
                       cpu=0.5, memory_mb=128, disk_mb=256, exposed_ports=(APP_PORT,))


def make_runner(kubeconfig_path: Any, mode: str, instance: str) -> KubernetesRunner:
    return KubernetesRunner(f"kubernetes-{mode}", {"kubeconfig": str(kubeconfig_path), "namespace": NS,
                                                  "instance": instance, "agent_image": TINY, "api_timeout": 20,
                                                  "endpoint_mode": mode})


@pytest.fixture
def runners(kubeconfig) -> dict[str, KubernetesRunner]:
    instance = f"labstest{uuid.uuid4().hex[:6]}"
    made = {mode: make_runner(kubeconfig, mode, instance) for mode in ("proxy", "pod-ip")}
    yield made
    for runner in made.values():
        forwarder = getattr(runner, "_forwarder", None)
        if forwarder is not None:
            forwarder.close()


def start_app(runner: KubernetesRunner) -> dict[str, Any]:
    state = runner.start(spec_of(), timeout=90).state
    runner.write_file(state, "app.py", APP.encode())
    started = runner.exec(state, ["sh", "-c", f"nohup python3 /workspace/app.py {APP_PORT} >/tmp/app.log 2>&1 "
                                              "</dev/null &"], timeout=20)
    assert started.ok, started
    deadline = time.monotonic() + 20
    probe = f"import socket; socket.create_connection(('127.0.0.1', {APP_PORT}), 1)"
    while not runner.exec(state, ["python3", "-c", probe], timeout=10).ok:
        assert time.monotonic() < deadline, runner.exec(state, ["cat", "/tmp/app.log"]).stdout
        time.sleep(0.2)
    return state


@pytest.fixture
def app(runners) -> dict[str, Any]:
    state = start_app(runners["proxy"])
    yield state
    runners["proxy"].stop(state, timeout=1)


def request(address: tuple[str, int], method: str, target: str, body: Any = None,
            headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    connection.request(method, target, body=body, headers=headers or {}, **kwargs)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def raw_exchange(address: tuple[str, int], data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def proxy_calls(k8s_api) -> list[Any]:
    return [call for call in k8s_api.calls if call.resource == "pods/proxy"]


def api_get(k8s_api, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cadata=k8s_api.ca_pem)
    connection = http.client.HTTPSConnection("127.0.0.1", k8s_api.port, context=context, timeout=30)
    headers = {"Authorization": f"Bearer {token if token is not None else k8s_api.token}"}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


# the forwarder's request checks, without a cluster -----------------------------------------------------------
@pytest.mark.parametrize("head, status", [
    (b"HELLO\r\n\r\n", 400),
    (b"GET http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # absolute form: a forward proxy request
    (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET * HTTP/1.1\r\n\r\n", 400),
    (b"GET /../../secrets HTTP/1.1\r\n\r\n", 400),
    (b"GET /a/%2e%2e/%2E%2E/secrets HTTP/1.1\r\n\r\n", 400),
    (b"GET /a/%252e%252e/x HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n", 417),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431),
])
def test_the_forwarder_refuses_what_is_not_a_plain_request(head: bytes, status: int) -> None:
    with pytest.raises(Refused) as refused:
        parse_request_head(head)
    assert refused.value.status == status


def test_the_forwarder_keeps_end_to_end_headers_and_drops_credentials_and_hop_by_hop_ones() -> None:
    parsed = parse_request_head(
        b"GET /ws?token=1 HTTP/1.1\r\nHost: localhost:8080\r\nAuthorization: Bearer app\r\n"
        b"Impersonate-User: system:admin\r\nImpersonate-Group: system:masters\r\nX-Remote-User: admin\r\n"
        b"Connection: Upgrade, X-Secret\r\nX-Secret: 1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n"
        b"Cookie: a=b\r\nProxy-Authorization: Basic x\r\n\r\n")
    assert parsed.upgrade == "websocket" and parsed.target == "/ws?token=1"
    assert parsed.headers == [("sec-websocket-key", "k"), ("cookie", "a=b")]


def test_the_api_servers_rewrites_are_undone_in_every_encoding() -> None:
    prefix = "/api/v1/namespaces/labs/pods/lab-1:8080/proxy"
    original = b'<a href="/x?y=1">x</a><img src=\'/i.png\'><a href=/bare>b</a><a href="http://h:1/z">z</a>'
    rewritten = (f'<a href="{prefix}/x?y=1">x</a><img src=\'{prefix}/i.png\'><a href={prefix}/bare>b</a>'
                 f'<a href="http://h:1{prefix}/z">z</a>').encode()
    assert _unprefix_html(rewritten, "", prefix) == original
    assert zlib.decompress(_unprefix_html(gzip.compress(rewritten), "gzip", prefix), 16 + zlib.MAX_WBITS) == original
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # what Go's flate writer produces
    assert zlib.decompress(_unprefix_html(raw.compress(rewritten) + raw.flush(), "deflate", prefix),
                           -zlib.MAX_WBITS) == original
    assert zlib.decompress(_unprefix_html(zlib.compress(rewritten), "deflate", prefix)) == original
    assert _unprefix_html(b"\x00not gzip", "gzip", prefix) == b"\x00not gzip"
    assert _unprefix_html(b"<p>the path " + prefix.encode() + b"/ in text</p>", "", prefix).count(b"proxy") == 1
    assert _unprefix_location(f"{prefix}/target?y=1", prefix) == "/target?y=1"
    assert _unprefix_location(prefix, prefix) == "/"
    assert _unprefix_location(f"http://localhost:8080{prefix}/a", prefix) == "http://localhost:8080/a"
    assert _unprefix_location("https://example.org/x", prefix) == "https://example.org/x"
    assert _unprefix_location(f"{prefix}-other/x", prefix) == f"{prefix}-other/x"


def test_listeners_close_when_idle_and_an_unreachable_api_server_is_a_502() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    forwarder = PodForwarder(lambda: ApiServer("127.0.0.1", dead, None, None, lambda: "Bearer t"), idle_seconds=0.6)
    try:
        address = forwarder.address("labs", "lab-1", 8080)
        assert forwarder.address("labs", "lab-1", 8080) == address and address[0] == "127.0.0.1"
        assert forwarder.address("labs", "lab-1", 9090) != address
        assert raw_exchange(address, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 502 ")
        with pytest.raises(ValueError):
            forwarder.address("labs", "../other", 80)
        deadline = time.monotonic() + 10
        while forwarder.listeners() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert forwarder.listeners() == {}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()
    finally:
        forwarder.close()


# through the double, with a real app in a pod -------------------------------------------------------------------
@pytest.mark.docker
def test_proxy_mode_reaches_the_app_with_path_query_and_bodies(runners, app, k8s_api):
    runner = runners["proxy"]
    endpoint = runner.endpoint(app, APP_PORT)
    assert endpoint.host == "127.0.0.1" and endpoint.port and endpoint.port != APP_PORT
    address = (endpoint.host, endpoint.port)
    assert runner.endpoint(app, APP_PORT) == endpoint  # one listener per (pod, port)

    response, data = request(address, "GET", "/echo/a%20b/c?x=1&y=%20&x=2",
                             headers={"Host": f"localhost:{APP_PORT}", "Authorization": "Basic bGVhcm5lcg==",
                                      "Impersonate-User": "system:admin", "X-Lab": "yes"})
    assert response.status == 200 and response.getheader("Connection") == "close", (
        data, runner.exec(app, ["cat", "/tmp/app.log"]).stdout)
    seen = json.loads(data)
    assert seen["method"] == "GET" and seen["target"] == "/echo/a%20b/c?x=1&y=%20&x=2"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["host"] == f"localhost:{APP_PORT}" and headers["x-lab"] == "yes"
    # The API server consumed the Authorization (ours, not the app's); impersonation never left.
    assert "authorization" not in headers and "impersonate-user" not in headers
    assert headers["x-forwarded-uri"] == f"/api/v1/namespaces/{NS}/pods/{app['pod']}:{APP_PORT}/proxy/echo/a b/c"
    # The API server's proxy removes the app's CORS headers.
    assert response.getheader("Access-Control-Allow-Origin") is None

    payload = bytes(range(256)) * 400  # 100 kB
    response, data = request(address, "POST", "/echo?upload=1", body=payload,
                             headers={"Content-Type": "application/octet-stream"})
    seen = json.loads(data)
    assert (seen["method"], seen["length"], seen["sha256"]) == ("POST", len(payload),
                                                                 hashlib.sha256(payload).hexdigest())
    chunks = [b"first,", b"second,", b"x" * 70000]
    response, data = request(address, "PUT", "/echo", body=iter(chunks), encode_chunked=True)
    seen = json.loads(data)
    assert seen["method"] == "PUT" and seen["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    response, data = request(address, "HEAD", "/page.html")
    assert response.status == 200 and data == b""

    calls = proxy_calls(k8s_api)
    assert {(c.verb, c.name) for c in calls} >= {("get", f"{app['pod']}:{APP_PORT}"),
                                                 ("create", f"{app['pod']}:{APP_PORT}"),
                                                 ("update", f"{app['pod']}:{APP_PORT}")}
    assert all(c.namespace == NS and c.code == 200 for c in calls)


@pytest.mark.docker
def test_the_api_servers_url_rewriting_is_undone(runners, app, k8s_api):
    prefix = f"/api/v1/namespaces/{NS}/pods/{app['pod']}:{APP_PORT}/proxy"
    # What the API server itself answers: the app's absolute URLs moved under the proxy path.
    status, headers, direct = api_get(k8s_api, f"{prefix}/page.html")
    assert status == 200
    assert f'href="{prefix}/static/site.css"'.encode() in direct
    assert f'src="{prefix}/img/logo.png?v=2"'.encode() in direct and f'action="{prefix}/submit"'.encode() in direct
    assert b'href="relative/x"' in direct and b'href="https://example.org/x"' in direct
    status, headers, _ = api_get(k8s_api, f"{prefix}/go")
    assert status == 302 and headers["location"] == f"{prefix}/target?y=1"

    endpoint = runners["proxy"].endpoint(app, APP_PORT)
    address = (endpoint.host, endpoint.port)
    response, data = request(address, "GET", "/page.html")
    assert response.status == 200 and data == PAGE
    response, data = request(address, "GET", "/page.html?gzip=1", headers={"Accept-Encoding": "gzip"})
    assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(data) == PAGE
    response, _ = request(address, "GET", "/go")
    assert response.status == 302 and response.getheader("Location") == "/target?y=1"


@pytest.mark.docker
def test_a_websocket_goes_through_the_upgrade_and_both_modes_reach_the_same_app(runners, app, k8s_api):
    proxy = runners["proxy"].endpoint(app, APP_PORT)
    with ws_connect(f"ws://{proxy.host}:{proxy.port}/ws?token=abc", open_timeout=20, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=20))
        # As kube-apiserver does (kubernetes#77142): an upgrade reaches the pod without its query.
        assert hello == {"request": "GET /ws HTTP/1.1", "authorization": ""}
        ws.send("hello")
        assert ws.recv(timeout=20) == "hello"
        blob = bytes(range(256)) * 800
        ws.send(blob)
        assert ws.recv(timeout=20) == blob
    assert ("get", f"{app['pod']}:{APP_PORT}", 101) in {(c.verb, c.name, c.code) for c in proxy_calls(k8s_api)}

    direct = runners["pod-ip"].endpoint(app, APP_PORT)
    pod = k8s_api.get("pods", NS, app["pod"])
    assert (direct.host, direct.port) == (pod["status"]["podIP"], APP_PORT)
    _, data = request((direct.host, direct.port), "GET", "/echo?x=1")
    assert json.loads(data)["target"] == "/echo?x=1"
    with ws_connect(f"ws://{direct.host}:{direct.port}/ws?token=abc", open_timeout=20) as ws:
        assert json.loads(ws.recv(timeout=20))["request"] == "GET /ws?token=abc HTTP/1.1"
        ws.send("same app")
        assert ws.recv(timeout=20) == "same app"


@pytest.mark.docker
def test_garbage_and_pipelined_requests_never_reach_the_api_server(runners, app, k8s_api):
    endpoint = runners["proxy"].endpoint(app, APP_PORT)
    address = (endpoint.host, endpoint.port)
    before = len(proxy_calls(k8s_api))
    assert raw_exchange(address, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(address, b"GET http://169.254.169.254/ HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    assert raw_exchange(address, b"GET /%2e%2e/%2e%2e/secrets HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    assert raw_exchange(address, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431 ")
    assert len(proxy_calls(k8s_api)) == before
    # Two requests on one connection: the first is answered (Connection: close), the second never sent.
    marker = uuid.uuid4().hex
    answer = raw_exchange(address, f"GET /echo?first={marker} HTTP/1.1\r\nHost: a\r\n\r\n"
                                   f"GET /echo?second={marker} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert answer.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in answer
    _, seen = request(address, "GET", "/seen")
    assert f"GET /echo?first={marker} HTTP/1.1" in json.loads(seen)
    assert not any(marker in line and "second" in line for line in json.loads(seen))
    assert len(proxy_calls(k8s_api)) == before + 2  # the first request and /seen


@pytest.mark.docker
def test_stop_closes_the_sessions_listeners(runners, k8s_api):
    runner = runners["proxy"]
    state = start_app(runner)
    endpoint = runner.endpoint(state, APP_PORT)
    assert request((endpoint.host, endpoint.port), "GET", "/echo")[0].status == 200
    assert runner._forwarder.listeners()
    runner.stop(state, timeout=1)
    assert runner._forwarder.listeners() == {}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((endpoint.host, endpoint.port), timeout=5).close()
    with pytest.raises(RunnerError, match="no IP address"):
        runner.endpoint(state, APP_PORT)


# the double's pods/proxy, as kube-apiserver answers ----------------------------------------------------------------
@pytest.mark.docker
def test_the_doubles_pod_proxy_answers_like_kube_apiserver(runners, app, k8s_api):
    pod = app["pod"]
    base = f"/api/v1/namespaces/{NS}/pods"
    status, _, body = api_get(k8s_api, f"{base}/{pod}:{APP_PORT}/proxy/echo", token="wrong")
    assert status == 401
    status, _, body = api_get(k8s_api, f"{base}/no-such-pod:{APP_PORT}/proxy/")
    assert status == 404 and json.loads(body)["reason"] == "NotFound"
    assert json.loads(body)["message"] == 'pods "no-such-pod" not found'
    status, _, body = api_get(k8s_api, f"{base}/{pod}:9999/proxy/")
    ip = k8s_api.get("pods", NS, pod)["status"]["podIP"]
    assert status == 503 and json.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 503,
        "reason": "ServiceUnavailable",
        "message": f"error trying to reach service: dial tcp {ip}:9999: connect: connection refused"}
    status, headers, _ = api_get(k8s_api, f"{base}/{pod}:{APP_PORT}/proxy?x=1")
    assert status == 301 and headers["location"] == f"{base}/{pod}:{APP_PORT}/proxy/?x=1"
    status, _, body = api_get(k8s_api, f"{base}/{pod}:{APP_PORT}/proxy/echo?q=1")
    assert status == 200 and json.loads(body)["target"] == "/echo?q=1"
    status, _, body = api_get(k8s_api, f"{base}/a:b:c:d/proxy/")
    assert status == 400 and json.loads(body)["message"] == 'invalid pod request "a:b:c:d"'
    k8s_api.deny("get", "pods/proxy")
    status, _, body = api_get(k8s_api, f"{base}/{pod}:{APP_PORT}/proxy/echo")
    assert status == 403 and json.loads(body)["reason"] == "Forbidden"


@pytest.mark.docker
def test_a_pending_pod_has_no_address_to_proxy_to(k8s_api):
    name = f"held-{uuid.uuid4().hex[:8]}"
    release = k8s_api.hold(name)
    try:
        k8s_api.create("pods", NS, {"metadata": {"name": name},
                                    "spec": {"containers": [{"name": "main", "image": TINY}]}})
        status, _, body = api_get(k8s_api, f"/api/v1/namespaces/{NS}/pods/{name}:{APP_PORT}/proxy/")
        assert status == 400 and json.loads(body)["message"] == "address not allowed"
    finally:
        release()


# the web preview, with a session on the Kubernetes runner in proxy mode ----------------------------------------
@pytest.mark.docker
def test_the_preview_reaches_a_kubernetes_session_through_the_api_server(daphne, owner, lab, kubeconfig, settings,
                                                                        k8s_api):
    import httpx2 as httpx
    from django.utils import timezone

    from preview.tests.test_preview_support import preview_url, session_cookie
    from runners import get_runner, reset_cache
    from sessions_app.models import Session, State

    alias = "kubernetes-proxy-test"
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, alias: {
        "BACKEND": "runners.kubernetes.KubernetesRunner",
        "OPTIONS": {"kubeconfig": str(kubeconfig), "namespace": NS, "instance": f"labstest{uuid.uuid4().hex[:6]}",
                    "agent_image": TINY, "api_timeout": 20, "endpoint_mode": "proxy"}}}
    reset_cache()
    runner = get_runner(alias)
    state = start_app(runner)
    try:
        lab.exposed_ports = [APP_PORT]
        lab.save(update_fields=["exposed_ports"])
        session = Session.objects.create(user=owner, lab=lab, runner_name=alias, state=State.PROVISIONING)
        now = timezone.now()
        session.transition(State.RUNNING, runner_state=state, endpoints={}, started_at=now,
                           expires_at=now + timedelta(hours=1))
        cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_cookie(owner)}"}

        response = httpx.get(preview_url(daphne, session, APP_PORT, "echo/x?y=1"), headers=cookie, timeout=30)
        assert response.status_code == 200, response.text
        seen = response.json()
        headers = {name.lower(): value for name, value in seen["headers"]}
        assert seen["target"] == "/echo/x?y=1" and headers["host"] == f"localhost:{APP_PORT}"
        assert headers["x-forwarded-prefix"] == f"/sessions/{session.pk}/preview/{APP_PORT}"
        payload = b"form=1&" + b"z" * 50000
        response = httpx.post(preview_url(daphne, session, APP_PORT, "echo"), content=payload, headers=cookie,
                              timeout=30)
        assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()
        response = httpx.get(preview_url(daphne, session, APP_PORT, "page.html"), headers=cookie, timeout=30)
        assert response.status_code == 200 and response.content == PAGE
        response = httpx.get(preview_url(daphne, session, APP_PORT, "go"), headers=cookie, timeout=30)
        assert response.status_code == 302
        assert response.headers["location"] == f"/sessions/{session.pk}/preview/{APP_PORT}/target?y=1"

        url = f"ws://127.0.0.1:{daphne.port}/sessions/{session.pk}/preview/{APP_PORT}/ws"
        with ws_connect(url, origin=daphne.url, additional_headers=cookie, open_timeout=20, proxy=None) as ws:
            assert json.loads(ws.recv(timeout=20))["request"] == "GET /ws HTTP/1.1"
            ws.send("through daphne, the forwarder and the API server")
            assert ws.recv(timeout=20) == "through daphne, the forwarder and the API server"
        assert {c.verb for c in proxy_calls(k8s_api)} == {"get", "create"}
    finally:
        runner.stop(state, timeout=1)
        runner._forwarder.close()
        reset_cache()
