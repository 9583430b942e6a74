"""What a session's network reaches, by mode, with the host firewall of firewall.py in place.

- bridge: the internet, never private networks, link-local addresses (the cloud metadata service)
  or the host's own services;
- unrestricted: private networks too, but still never link-local addresses or the host;
- isolated: nothing outside the session.

The other machines are real hosts in a network namespace (tests/netns.py); the sessions are real
containers, and a Docker-in-Docker session's inner containers are tried as well.
"""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from runners import firewall
from runners.base import SessionSpec
from runners.docker import DockerRunner
from tests.netns import remote_hosts

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def hosts():
    with remote_hosts() as found:
        yield found


@pytest.fixture(scope="module")
def runner():
    return DockerRunner("docker", {"instance": f"labst{uuid.uuid4().hex[:6]}",
                                   "preload_cache": str(Path(settings.DATA_DIR) / "preload")})


@pytest.fixture(scope="module")
def sessions(runner):
    """One labs/base session per network mode."""
    started = {}
    try:
        for mode in ("bridge", "unrestricted", "isolated"):
            spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="net",
                               image="labs/base:bookworm", memory_mb=128, disk_mb=64, network_mode=mode)
            started[mode] = runner.start(spec).state
        yield started
    finally:
        for state in started.values():
            runner.stop(state, timeout=1)


def reaches(runner, state, url: str) -> bool:
    result = runner.exec(state, ["curl", "-q", "-s", "-m", "3", url], timeout=10)
    return result.ok and result.stdout.startswith(b"reached ")


@pytest.mark.parametrize(("mode", "metadata", "private", "public"), [
    ("bridge", False, False, True),
    ("unrestricted", False, True, True),
    ("isolated", False, False, False),
])
def test_each_mode_reaches_what_it_should(runner, sessions, hosts, mode, metadata, private, public):
    state = sessions[mode]
    assert reaches(runner, state, hosts.url(hosts.public)) is public
    assert reaches(runner, state, hosts.url(hosts.private)) is private
    assert reaches(runner, state, hosts.url(hosts.metadata)) is metadata


def test_no_mode_reaches_the_hosts_own_services(runner, sessions, engine):
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"host-service\n")
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        for mode, state in sessions.items():
            networks = engine.containers.get(state["container_id"]).attrs["NetworkSettings"]["Networks"]
            gateway = next(iter(networks.values()))["Gateway"]
            for address in {gateway, "172.17.0.1"} - {""}:
                probe = runner.exec(state, ["sh", "-c", f"echo | nc -w 2 {address} {port}"], timeout=6)
                assert b"host-service" not in probe.stdout, (mode, address)
    finally:
        server.close()


def test_a_docker_in_docker_sessions_containers_are_held_to_the_same_rules(runner, hosts):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="net",
                       image="labs/dind:bookworm", memory_mb=768, pids_limit=1024, disk_mb=512,
                       network_mode="bridge", docker_access=True, dind_images=("labs/busybox:latest",))
    state = runner.start(spec, timeout=120).state
    try:
        for address, expected in ((hosts.public, True), (hosts.private, False), (hosts.metadata, False)):
            # (busybox-static's wget crashes on a network; nc speaks the HTTP request instead)
            get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {hosts.port}"
            inner = runner.exec(state, ["docker", "run", "--rm", "labs/busybox:latest", "sh", "-c", get], timeout=60)
            assert (b"reached " in inner.stdout) is expected, (address, inner.stdout, inner.stderr)
    finally:
        runner.stop(state, timeout=1)


def test_the_rules_are_in_the_hosts_firewall():
    for rule in firewall.docker_session_rules("DOCKER-USER"):
        assert firewall.chain_exists(rule[0])
        assert firewall.rule_present(rule), rule
