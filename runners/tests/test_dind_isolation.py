"""A learner in a Docker-in-Docker session cannot reach the host, whatever they ask their engine.

The session is the demo lab `dockerfile-1-health` as the Docker runner starts it by default (a
rootless engine in a container that runs as the learner). Each attack is tried as the learner in
the session and as root of an inner container started with every privilege the inner engine
accepts. The same attacks run once against the legacy root mode (`dind_mode: capabilities`,
opt-in only) as a control: there they work, which shows the probes do detect an escape.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from runners.base import RunnerError, SessionSpec
from runners.docker import DockerRunner

pytestmark = pytest.mark.docker

DEMO_LAB = Path(settings.BASE_DIR) / "labs" / "demo_catalog" / "dockerfile-1-health"
BUSYBOX = "labs/busybox:latest"
# Everything the inner engine will grant an inner container (but SYS_RESOURCE, which this host's
# bounding set lacks; --privileged cannot even start in a rootless engine: it needs a writable /sys).
ALL_PRIVILEGES = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                  "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
                  "--device-cgroup-rule", "b *:* rwm", "--device-cgroup-rule", "c *:* rwm"]


def _host_root_device() -> tuple[int, int]:
    device = os.stat("/").st_dev
    return os.major(device), os.minor(device)


def _spec_of_demo_lab() -> SessionSpec:
    """The session spec the demo lab asks for, read from its lab.yaml."""
    lab = yaml.safe_load((DEMO_LAB / "lab.yaml").read_text())
    resources = lab.get("resources", {})
    return SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="mallory", lab_slug=lab["slug"],
                       image=lab["image"]["reference"], cpu=float(resources.get("cpu", 1)),
                       memory_mb=int(resources.get("memory_mb", 512)), pids_limit=int(resources.get("pids_limit", 256)),
                       disk_mb=int(resources.get("disk_mb", 2048)), network_mode=lab.get("network_mode", "bridge"),
                       docker_access=bool(lab["docker_access"]), dind_images=tuple(lab.get("dind_images", ())))


@pytest.fixture(scope="module")
def session():
    spec = _spec_of_demo_lab()
    runner = DockerRunner("docker", {"instance": f"labst{uuid.uuid4().hex[:6]}",
                                     "preload_cache": str(Path(settings.DATA_DIR) / "preload")})
    state = runner.start(spec, timeout=240).state
    try:
        yield runner, state
    finally:
        runner.stop(state, timeout=2)


def as_learner(session, script: str, timeout: float = 60):
    runner, state = session
    return runner.exec(state, ["sh", "-c", script], timeout=timeout)


def as_inner_root(session, script: str, *extra: str):
    return as_learner(session, " ".join(["docker", "run", "--rm", *[_quote(a) for a in ALL_PRIVILEGES], *extra,
                                         BUSYBOX, "sh", "-c", _quote(script)]), timeout=90)


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_the_session_runs_as_the_learner_with_no_capabilities_and_root_nowhere(session):
    runner, state = session
    assert state["dind_mode"] == "rootless"
    who = as_learner(session, "id -u; grep CapEff /proc/self/status; ps -o user= -e | sort -u")
    assert who.ok, who.stderr
    lines = who.stdout.decode().split()
    assert lines[0] == "1000"
    assert lines[1:3] == ["CapEff:", "0000000000000000"]
    assert set(lines[3:]) == {"learner"}, "every process of the session belongs to the learner"
    with pytest.raises(RunnerError, match="root"):
        runner.exec(state, ["id"], user="root")
    # Root of an inner container is the learner's uid on the host.
    mapping = as_inner_root(session, "cat /proc/self/uid_map")
    assert mapping.ok, mapping.stderr
    assert mapping.stdout.split()[:3] == [b"0", b"1000", b"1"]


def test_the_host_root_filesystem_cannot_be_written_through_a_bind_mount(session):
    attempt = as_learner(session, f"docker run --rm -v /:/outer {BUSYBOX} sh -c "
                                  "'echo owned >> /outer/etc/passwd; cat /outer/etc/shadow'")
    assert not attempt.ok
    assert b"Permission denied" in attempt.stderr
    assert b"owned" not in as_learner(session, "cat /etc/passwd").stdout


def test_a_host_block_device_cannot_be_made_or_mounted(session):
    major, minor = _host_root_device()
    script = f"mknod /tmp/hostdisk b {major} {minor} && mkdir -p /h && mount -t ext4 /tmp/hostdisk /h && ls /h"
    inner = as_inner_root(session, script)
    assert not inner.ok
    assert b"mknod" in inner.stderr and b"not permitted" in inner.stderr, inner.stderr  # the kernel refused
    learner = as_learner(session, f"mknod /tmp/hostdisk b {major} {minor}")
    assert not learner.ok


def test_kernel_settings_sysrq_and_modules_are_out_of_reach(session):
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    for attempt in (as_learner(session, "echo '|/tmp/x' > /proc/sys/kernel/core_pattern"),
                    as_inner_root(session, "echo '|/tmp/x' > /proc/sys/kernel/core_pattern")):
        assert not attempt.ok
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    # /proc/sysrq-trigger only exists on kernels built with it; where it does, it must refuse too.
    for attempt in (as_learner(session, "echo h > /proc/sysrq-trigger"),
                    as_inner_root(session, "echo h > /proc/sysrq-trigger")):
        assert not attempt.ok
    # The kernel's module loader, called directly: refused (by seccomp, and by the kernel for
    # anyone without CAP_SYS_MODULE on the host).
    module = as_learner(session, "python3 -c \"import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
                                 "r = libc.syscall(313, 0, b'', 0); print(r, os.strerror(ctypes.get_errno()))\"")
    assert module.ok, module.stderr
    assert module.stdout.split()[0] == b"-1"


def test_no_cgroup_release_agent_can_be_set(session):
    inner = as_inner_root(session, "mkdir -p /cg && mount -t cgroup -o memory cgroup /cg && "
                                   "echo /tmp/x > /cg/release_agent")
    assert not inner.ok
    learner = as_learner(session, "for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/release_agent; do "
                                  "[ -e \"$f\" ] && echo /tmp/x > \"$f\" && echo WROTE $f; done; true")
    assert b"WROTE" not in learner.stdout


def test_the_engine_in_the_session_is_its_own_rootless_engine_not_the_hosts(session, engine):
    _, state = session
    info = as_learner(session, "docker info --format '{{json .SecurityOptions}}'; docker ps -aq | wc -l")
    assert info.ok, info.stderr
    assert b"rootless" in info.stdout
    # The host engine's containers (this session's own among them) are not visible from inside.
    assert state["container_id"][:12] not in as_learner(session, "docker ps -a").stdout.decode()
    socket_path = as_learner(session, "readlink -f /var/run/docker.sock")
    assert socket_path.stdout.strip() == b"/run/labs-docker/docker.sock"
    # Nor is the host engine reachable over the network from the session.
    gateway = next(iter(engine.containers.get(state["container_id"]).attrs["NetworkSettings"]["Networks"]
                        .values()))["Gateway"]
    for port in (2375, 2376):
        assert not as_learner(session, f"curl -s -m 3 http://{gateway}:{port}/version", timeout=10).ok


def test_docker_build_and_run_of_the_labs_images_still_work(session):
    build = as_learner(session, """mkdir -p /tmp/app && cd /tmp/app && cat > Dockerfile <<'EOF'
FROM labs/python:3.11-slim
RUN python3 -c "open('/ok', 'w')"
CMD ["python3", "-c", "print(open('/ok').name)"]
EOF
docker build -q -t mine . >/dev/null && docker run --rm mine""", timeout=180)
    assert build.ok, build.stderr
    assert build.stdout.strip() == b"/ok"
    served = as_learner(session, f"docker run -d --name web -p 8080:80 {BUSYBOX} httpd -f -p 80 -h /etc && "
                                 "sleep 1 && curl -s http://127.0.0.1:8080/hostname && docker rm -f web >/dev/null",
                        timeout=60)
    assert served.ok, served.stderr
    assert served.stdout.strip(), "a published port answers on the session's loopback"


@pytest.fixture(scope="module")
def legacy_session():
    """The unsafe legacy mode, allowed here only to show that the probes above detect an escape."""
    spec = _spec_of_demo_lab()
    spec = dataclasses.replace(spec, session_id=str(uuid.uuid4()), dind_images=(BUSYBOX,))
    runner = DockerRunner("docker", {"instance": f"labst{uuid.uuid4().hex[:6]}", "dind_mode": "capabilities",
                                     "preload_cache": str(Path(settings.DATA_DIR) / "preload")})
    previous = settings.LAB_ALLOW_UNSAFE_DIND
    settings.LAB_ALLOW_UNSAFE_DIND = True
    try:
        state = runner.start(spec, timeout=240).state
    finally:
        settings.LAB_ALLOW_UNSAFE_DIND = previous
    try:
        yield runner, state
    finally:
        runner.stop(state, timeout=2)


def test_control_the_legacy_root_mode_does_let_inner_root_reach_the_host(legacy_session):
    major, minor = _host_root_device()
    # (Read-only would be refused as "busy": the host has it mounted read-write. Only read, then unmount.)
    mounted = as_inner_root(legacy_session, f"mknod /tmp/hostdisk b {major} {minor} && mkdir -p /h && "
                                            "mount -t ext4 /tmp/hostdisk /h && ls /h/etc/hostname; umount /h")
    assert mounted.ok and b"/h/etc/hostname" in mounted.stdout, mounted.stderr
    # Writing the same value back proves the host's kernel settings are writable, and changes nothing.
    current = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    rewrite = as_inner_root(legacy_session, f"printf '%s\\n' {_quote(current)} > /proc/sys/kernel/core_pattern")
    assert rewrite.ok, rewrite.stderr


def test_the_legacy_modes_are_refused_unless_the_operator_opts_in(settings):
    settings.LAB_ALLOW_UNSAFE_DIND = False
    runner = DockerRunner("docker", {"instance": "labsunused", "dind_mode": "privileged"})
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="u", lab_slug="x",
                       image="labs/dind:bookworm", docker_access=True)
    with pytest.raises(RunnerError, match="LAB_ALLOW_UNSAFE_DIND"):
        runner.start(spec)
    assert runner.list_managed() == []
