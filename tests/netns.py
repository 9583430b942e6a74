"""Machines elsewhere on the network, for tests of what a session may reach.

`remote_hosts()` starts one network namespace behind a veth pair and gives it several addresses,
each routed from the host through the veth like a machine on another network: a stand-in for the
cloud metadata service (169.254.169.254), a host on a private network (10.x), and one on the
public internet (198.18.0.0/15, reserved for such tests). An HTTP server there answers every
address with "reached <address>". Sessions' traffic to them leaves the host the way real traffic
would (forwarded, NAT), so the host firewall's rules apply to it.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

METADATA = "169.254.169.254"

SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("reached " + self.connection.getsockname()[0]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
S(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


@dataclass(frozen=True)
class RemoteHosts:
    metadata: str
    private: str
    public: str
    port: int

    def url(self, address: str) -> str:
        return f"http://{address}:{self.port}/"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def remote_hosts(port: int = 8080) -> Iterator[RemoteHosts]:
    tag = uuid.uuid4().hex[:6]
    namespace, outer, inner = f"labs-rh-{tag}", f"lrh{tag}a", f"lrh{tag}b"
    link = f"198.19.{random.randrange(256)}.{random.randrange(64) * 4}"  # the veth pair's own /30
    prefix, last = link.rsplit(".", 1)[0], int(link.rsplit(".", 1)[1])
    host_side, far_side = f"{prefix}.{last + 1}", f"{prefix}.{last + 2}"
    hosts = RemoteHosts(metadata=METADATA, private=f"10.254.{random.randrange(256)}.{random.randrange(1, 255)}",
                        public=f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}", port=port)
    _ip("netns", "add", namespace)
    server = None
    routes: list[str] = []
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", namespace)
        _ip("addr", "add", f"{host_side}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{far_side}/30", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "route", "add", "default", "via", host_side)
        for address in (hosts.metadata, hosts.private, hosts.public):
            _ip("-n", namespace, "addr", "add", f"{address}/32", "dev", "lo")
            _ip("route", "add", f"{address}/32", "via", far_side, "dev", outer)
            routes.append(address)
        server = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER, str(port)])
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((hosts.public, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() >= deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield hosts
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for address in routes:
            subprocess.run(["ip", "route", "del", f"{address}/32"], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)  # takes the veth pair along
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
