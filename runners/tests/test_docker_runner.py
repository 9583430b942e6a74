"""The Docker runner against the real engine (no doubles): limits, isolation, exec, files, cleanup."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
import uuid

import docker
import pytest
from docker.models.containers import ContainerCollection

from runners.base import PollStatus, RunnerError, SessionSpec
from runners.docker import LABEL_MANAGED, LABEL_SESSION, DockerRunner

pytestmark = pytest.mark.docker
TINY = "labs/busybox:latest"


@pytest.fixture(scope="module")
def engine():
    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:  # a missing engine must fail the run, not skip it
        pytest.fail(f"the Docker engine is required for these tests: {exc}")
    try:
        client.images.get(TINY)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{TINY} is missing: run deploy/scripts/build-images.sh")
    return client


@pytest.fixture
def runner(engine, tmp_path, settings):
    settings.DATA_DIR = tmp_path
    return DockerRunner("docker-test", {"instance": f"labstest{uuid.uuid4().hex[:6]}"})


@pytest.fixture
def started(runner):
    """Start sessions on the real engine and remove them all afterwards."""
    states = []

    def _start(**overrides):
        fields = {
            "session_id": str(uuid.uuid4()),
            "user_id": 7,
            "username": "olivia",
            "lab_slug": "tiny",
            "image": TINY,
            "cpu": 0.5,
            "memory_mb": 64,
            "pids_limit": 64,
            "network_mode": "bridge",
        }
        fields.update(overrides)
        spec = SessionSpec(**fields)
        result = runner.start(spec)
        states.append(result.state)
        return spec, result

    yield _start
    for state in states:
        runner.stop(state, timeout=1)


def test_limits_are_visible_in_docker_inspect(engine, started):
    spec, result = started(cpu=0.5, memory_mb=64, pids_limit=64)
    attrs = engine.containers.get(result.state["container_id"]).attrs
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]  # no swap
    assert host["PidsLimit"] == 64
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not host["Privileged"]
    assert not host.get("PortBindings")  # session ports are never published on the host
    assert attrs["Config"]["Labels"][LABEL_SESSION] == spec.session_id


def test_exec_returns_exit_code_and_both_streams(runner, started):
    _, result = started()
    out = runner.exec(result.state, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (out.exit_code, out.stdout, out.stderr, out.timed_out) == (3, b"out\n", b"err\n", False)


def test_exec_passes_stdin(runner, started):
    _, result = started()
    out = runner.exec(result.state, ["sh", "-c", "tr a-z A-Z"], stdin=b"hello")
    assert out.stdout == b"HELLO"


def test_a_command_that_stops_reading_its_input_early_still_reports_promptly(runner, started):
    _, result = started()
    began = time.monotonic()
    out = runner.exec(result.state, ["sh", "-c", "head -c 10 >/dev/null; echo early; echo why >&2; exit 3"],
                      stdin=b"x" * (8 * 1024 * 1024), timeout=20)
    assert (out.exit_code, out.stdout, out.stderr) == (3, b"early\n", b"why\n")
    assert time.monotonic() - began < 10, "the unread input never blocks the exchange"


def test_exec_is_killed_at_its_timeout(runner, started):
    _, result = started()
    began = time.monotonic()
    out = runner.exec(result.state, ["sleep", "30"], timeout=1)
    assert out.timed_out
    assert time.monotonic() - began < 10


def test_starting_twice_adopts_the_same_container(runner, started, engine):
    spec, first = started()
    again = runner.start(spec)
    assert again.state["container_id"] == first.state["container_id"]
    assert len(engine.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={spec.session_id}"})) == 1


# The session's pids cgroup: its limit, then how many forks it refused ("max N"); cgroup v1 or v2.
PIDS_CGROUP = "d=/sys/fs/cgroup/pids; [ -e $d/pids.max ] || d=/sys/fs/cgroup; cat $d/pids.max $d/pids.events"


def _answer(runner, state, command, attempts=20):
    """Run `command` in the session, retrying while stray bomb processes may still hold every pid."""
    for _ in range(attempts):
        out = runner.exec(state, command, timeout=5)
        if out.exit_code == 0:
            return out
        time.sleep(0.5)
    return out


def test_a_fork_bomb_stops_at_the_pids_limit_and_the_host_keeps_serving(runner, started, engine):
    _, result = started(pids_limit=32)
    bomb = runner.exec(result.state, ["sh", "-c", "b() { b | b & }; b; sleep 2; echo survived"], timeout=8)
    # The shell ran into the limit: the kernel refused its forks and it said so.
    assert b"can't fork: Resource temporarily unavailable" in bomb.stderr
    # The session's own cgroup enforced it: limit 32, forks refused at that limit.
    cgroup = _answer(runner, result.state, ["sh", "-c", PIDS_CGROUP])
    assert cgroup.exit_code == 0, cgroup.stderr
    limit, events = cgroup.stdout.decode().splitlines()[:2]
    assert limit == "32"
    assert events.startswith("max ") and int(events.split()[1]) > 0
    container = engine.containers.get(result.state["container_id"])
    assert container.stats(stream=False)["pids_stats"]["current"] <= 32
    # The session itself still answers once the bomb has burnt out...
    assert runner.poll(result.state) is PollStatus.RUNNING
    assert _answer(runner, result.state, ["echo", "still here"]).stdout == b"still here\n"
    # ...and the platform still serves: another session starts and answers.
    _, other = started()
    assert runner.exec(other.state, ["echo", "alive"]).stdout == b"alive\n"


def test_a_memory_hog_is_killed_inside_the_session_only(runner, started, engine):
    _, result = started(memory_mb=32)
    hog = runner.exec(result.state, ["sh", "-c", "head -c 200m /dev/zero | tail"], timeout=20)
    assert hog.exit_code == 137 and not hog.timed_out  # SIGKILLed by the OOM killer, well before the timeout
    assert runner.poll(result.state) is PollStatus.RUNNING
    assert runner.exec(result.state, ["echo", "still here"]).stdout == b"still here\n"
    # What the platform starts is offered to the OOM killer before the container's init.
    adj = runner.exec(result.state, ["sh", "-c", "cat /proc/1/oom_score_adj /proc/self/oom_score_adj"])
    assert adj.stdout.split() == [b"0", b"500"]


def _host_listener() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen(8)
    server.settimeout(0.5)

    def accept_forever():
        while True:
            try:
                conn, _ = server.accept()
                conn.sendall(b"host-service\n")
                conn.close()
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    return server, server.getsockname()[1]


SERVE_HI = "mkdir -p /tmp/www && echo hi > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"


def _can_connect(runner, state, host: str, port: int) -> bool:
    probe = runner.exec(state, ["sh", "-c", f"echo | nc -w 2 {host} {port}"], timeout=6)
    return probe.exit_code == 0


def _gateway(engine, state) -> str:
    attrs = engine.containers.get(state["container_id"]).attrs
    networks = attrs["NetworkSettings"]["Networks"]
    return next(iter(networks.values()))["Gateway"]


def _network_of(engine, state) -> dict:
    """`docker network inspect` of the network the session's container is attached to."""
    attrs = engine.containers.get(state["container_id"]).attrs
    (name,) = attrs["NetworkSettings"]["Networks"]
    return engine.api.inspect_network(name)


def test_an_isolated_session_reaches_neither_the_host_nor_other_sessions(runner, started, engine):
    server, port = _host_listener()
    try:
        _, bridged = started(network_mode="bridge")
        isolated_spec, isolated = started(network_mode="isolated")
        _, neighbour = started(network_mode="bridge")
        _, unrestricted = started(network_mode="unrestricted")
        for session in (neighbour, isolated):
            runner.exec(session.state, ["sh", "-c", SERVE_HI])
        time.sleep(0.3)
        neighbour_ip = neighbour.endpoints["host"]
        # The engine itself enforces "no egress" for isolated: its network is Docker-internal (no
        # route out, no NAT), each session on a network of its own; bridge sessions keep egress.
        isolated_net, bridged_net = _network_of(engine, isolated.state), _network_of(engine, bridged.state)
        assert isolated_net["Internal"] is True
        assert bridged_net["Internal"] is False
        assert _network_of(engine, neighbour.state)["Internal"] is False
        # Unrestricted sessions get a guarded network of their own too, never Docker's default bridge
        # (docker0 is not covered by the host guard).
        unrestricted_net = _network_of(engine, unrestricted.state)
        assert unrestricted_net["Name"] != "bridge" and unrestricted_net["Internal"] is False
        assert unrestricted_net["Options"]["com.docker.network.bridge.name"].startswith("labu")
        assert len({isolated_net["Id"], bridged_net["Id"], _network_of(engine, neighbour.state)["Id"],
                    unrestricted_net["Id"]}) == 4
        assert isolated_net["Labels"][LABEL_SESSION] == isolated_spec.session_id  # found again and removed with it
        # Control: the probe does detect an open port (a session reaches itself).
        assert _can_connect(runner, isolated.state, "127.0.0.1", 8080)
        for session in (isolated, bridged, unrestricted):
            for target in (_gateway(engine, session.state), "172.17.0.1"):
                assert not _can_connect(runner, session.state, target, port)
                assert not _can_connect(runner, session.state, target, 5432)  # the host's PostgreSQL port
            assert not _can_connect(runner, session.state, neighbour_ip, 8080)  # sessions are apart
        # The platform itself can still reach the isolated session (the web preview's path).
        endpoint = runner.endpoint(isolated.state, 8080)
        with socket.create_connection((endpoint.host, endpoint.port), timeout=3) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.") and reply.endswith(b"hi\n")
    finally:
        server.close()


def test_no_network_mode_has_only_loopback(runner, started):
    _, result = started(network_mode="none")
    out = runner.exec(result.state, ["cat", "/proc/net/dev"])
    interfaces = [line.split(":")[0].strip() for line in out.stdout.decode().splitlines()[2:]]
    assert interfaces == ["lo"]
    with pytest.raises(RunnerError):
        runner.endpoint(result.state, 8080)


def test_stop_removes_container_network_and_volumes(runner, engine):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="t", image=TINY,
                       memory_mb=64, network_mode="isolated")
    result = runner.start(spec)
    runner.stop(result.state, timeout=1)
    label = f"{LABEL_SESSION}={spec.session_id}"
    assert engine.containers.list(all=True, filters={"label": label}) == []
    assert engine.networks.list(filters={"label": label}) == []
    assert engine.volumes.list(filters={"label": label}) == []
    runner.stop(result.state)  # idempotent


def test_a_missing_image_fails_permanently_and_creates_nothing(runner, engine):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="t",
                       image="labs/does-not-exist:1")
    with pytest.raises(RunnerError) as failure:
        runner.start(spec)
    assert failure.value.permanent
    assert "image" in str(failure.value)
    assert engine.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={spec.session_id}"}) == []


def test_an_unreachable_engine_is_a_clear_error():
    runner = DockerRunner("down", {"base_url": "unix:///nonexistent/docker.sock", "api_timeout": 2})
    assert runner.available() is False
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="t", image=TINY)
    with pytest.raises(RunnerError, match="unreachable"):
        runner.start(spec)


def test_files_round_trip_and_stay_inside_the_workspace(runner, started):
    _, result = started()
    runner.write_file(result.state, "app/main.py", b"print('hi')\n")
    assert runner.read_file(result.state, "app/main.py") == b"print('hi')\n"
    names = [(entry.path, entry.is_dir) for entry in runner.list_files(result.state)]
    assert ("app", True) in names
    runner.exec(result.state, ["ln", "-s", "/etc/passwd", "/workspace/escape"])
    for hostile in ("../etc/passwd", "/etc/passwd", "escape"):
        with pytest.raises(RunnerError):
            runner.read_file(result.state, hostile)
    with pytest.raises(RunnerError):
        runner.write_file(result.state, "escape", b"x")
    with pytest.raises(RunnerError, match="larger than"):
        runner.write_file(result.state, "big.bin", b"x" * 2048)
        runner.read_file(result.state, "big.bin", max_bytes=1024)


def test_saving_a_file_keeps_its_mode(runner, started):
    _, result = started()
    runner.write_file(result.state, "run.sh", b"#!/bin/sh\necho one\n")
    runner.exec(result.state, ["chmod", "755", "/workspace/run.sh"])
    runner.write_file(result.state, "run.sh", b"#!/bin/sh\necho two\n")
    assert runner.exec(result.state, ["stat", "-c", "%a", "/workspace/run.sh"]).stdout == b"755\n"
    assert runner.exec(result.state, ["/workspace/run.sh"]).stdout == b"two\n"


def test_list_managed_finds_sessions_and_remove_managed_cleans_them(runner, engine):
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="t", image=TINY,
                       memory_mb=64)
    runner.start(spec)
    managed = [env for env in runner.list_managed() if env.session_id == spec.session_id]
    assert len(managed) == 1 and managed[0].running
    runner.remove_managed(managed[0])
    assert [env for env in runner.list_managed() if env.session_id == spec.session_id] == []
    assert engine.networks.list(filters={"label": f"{LABEL_SESSION}={spec.session_id}"}) == []


def test_list_managed_for_one_session_asks_the_engine_for_that_session_only(runner, engine, monkeypatch):
    # Teardown lists one session's environments; with N sessions torn down in a pass, listing every
    # managed container each time was O(N²) engine work.
    specs = [SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="t", image=TINY,
                         memory_mb=64) for _ in range(2)]
    mine, other = specs
    try:
        for spec in specs:
            runner.start(spec)
        whole = [env for env in runner.list_managed() if env.session_id == mine.session_id]
        asked: list[object] = []
        listing = ContainerCollection.list  # client.containers is a new collection at each access
        monkeypatch.setattr(ContainerCollection, "list",
                            lambda self, **kwargs: asked.append(kwargs["filters"]) or listing(self, **kwargs))
        assert runner.list_managed_for(mine.session_id) == whole and len(whole) == 1
        assert asked == [{"label": [f"labs.managed-by={runner.instance}", f"{LABEL_SESSION}={mine.session_id}"]}]
        assert [env.session_id for env in runner.list_managed_for(other.session_id)] == [other.session_id]
    finally:
        monkeypatch.undo()
        for spec in specs:
            for env in runner.list_managed_for(spec.session_id):
                runner.remove_managed(env)
    assert runner.list_managed_for(mine.session_id) == []


@pytest.mark.parametrize(("image", "network_mode"), [("labs/dind:bookworm", "none"), ("labs/dind:bookworm", "bridge"),
                                                     (TINY, "unrestricted")])
def test_a_failed_docker_in_docker_start_leaves_nothing_behind(runner, engine, image, network_mode):
    # The session's disk, volumes and network (and, for a root learner, the container beside which
    # the engine would run) are made before the preload images are looked up; a missing one fails
    # the start there, and the runner removes everything it made, as the contract asks.
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="t", image=image,
                       memory_mb=64, network_mode=network_mode, docker_access=True,
                       dind_images=("labs/no-such-preload:latest",))
    label = f"{LABEL_SESSION}={spec.session_id}"
    try:
        with pytest.raises(RunnerError, match="no-such-preload"):
            runner.start(spec)
        assert engine.containers.list(all=True, filters={"label": label}) == []
        assert engine.volumes.list(filters={"label": label}) == []
        assert engine.networks.list(filters={"label": label}) == []
        assert not runner.disks.exists(f"{runner.instance}-{spec.session_id}")
        assert [env for env in runner.list_managed() if env.session_id == spec.session_id] == []
    finally:
        runner._remove_session_resources(spec.session_id)


def test_a_lone_managed_volume_without_a_session_label_is_found_and_removed(runner, engine):
    volume = engine.volumes.create(name=f"{runner.instance}-stray", labels={LABEL_MANAGED: runner.instance})
    try:
        managed = [env for env in runner.list_managed() if env.ref == f"volume:{volume.name}"]
        assert [(env.session_id, env.running) for env in managed] == [("", False)]
        runner.remove_managed(managed[0])
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(volume.name)
    finally:
        try:
            engine.volumes.get(volume.name).remove(force=True)
        except docker.errors.NotFound:
            pass


def test_a_volume_of_a_session_with_a_container_is_not_listed_on_its_own(runner, started):
    spec, _ = started()
    runner.client.volumes.create(name=f"{runner.instance}-{spec.session_id}-extra", labels=runner.labels_for(spec))
    managed = [env for env in runner.list_managed() if env.session_id == spec.session_id]
    assert len(managed) == 1 and managed[0].running  # the container; stopping it removes the volume too


def test_stats_report_memory_use(runner, started):
    _, result = started()
    stats = runner.stats(result.state)
    assert 0 < stats.memory_bytes <= stats.memory_limit_bytes
    assert stats.pids >= 1


def test_commands_and_terminals_work_with_more_than_1024_descriptors_open(runner, started):
    # A busy daphne holds two descriptors per terminal: select() stops at descriptor 1,023
    # ("filedescriptor out of range"), poll and selectors do not.
    _, result = started()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        assert hard >= 1300, f"the hard descriptor limit ({hard}) is too low for this test"
        resource.setrlimit(resource.RLIMIT_NOFILE, (1300, hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        assert max(held) > 1024
        assert runner.exec(result.state, ["sh", "-c", "echo $((6*7))"]).stdout == b"42\n"
        terminal = runner.open_terminal(result.state)
        try:
            terminal.write(b"echo $((6*7))\n")
            seen = b""
            deadline = time.monotonic() + 10
            while b"42\r\n" not in seen:
                assert time.monotonic() < deadline, seen
                seen += terminal.read(4096)
        finally:
            terminal.close()
    finally:
        for descriptor in held:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_terminal_runs_commands_and_resizes(runner, started):
    _, result = started()
    terminal = runner.open_terminal(result.state, cols=100, rows=30)
    try:
        terminal.write(b"echo $((6*7)); stty size\n")
        seen = b""
        deadline = time.monotonic() + 10
        while b"42" not in seen or b"30 100" not in seen:
            assert time.monotonic() < deadline, seen
            seen += terminal.read(4096)
    finally:
        terminal.close()
