"""deploy/compose.yaml driven from a test: its images (built once per set of inputs), a project of
its own with free ports and its own session label, and everything removed afterwards.

Images are tagged with a hash of what goes into them (the build context as .dockerignore leaves
it, the Dockerfile, the base image's id), so a second run with the same code starts at once and a
changed file rebuilds only what changed (Docker's layer cache keeps the Debian and pip steps).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from judge.checks.dockerignore import is_excluded, parse_dockerignore

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
BASE_IMAGE = "labs/base-rootfs:bookworm"
MANAGED_LABEL = "labs.managed-by"
PASSED = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR"}


def run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited with {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def image_id(reference: str) -> str | None:
    result = run(["docker", "image", "inspect", "-f", "{{.Id}}", reference], check=False, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


# ---- input hashes ------------------------------------------------------------------------------

def context_files(context: Path) -> Iterator[Path]:
    """The regular files `docker build` sends from `context`, by its .dockerignore (Docker's rules,
    judge/checks/dockerignore.py); excluded directories are not walked unless an exception reaches
    inside (var/ holds gigabytes of session disks, var/platform-wheels is sent)."""
    ignore = context / ".dockerignore"
    patterns = parse_dockerignore(ignore.read_text()) if ignore.exists() else []
    exceptions = [p.pattern.cleaned_pattern for p in patterns if p.exclusion]
    for dirpath, dirnames, filenames in os.walk(context):
        base = Path(dirpath).relative_to(context).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = sorted(
            name for name in dirnames
            if not is_excluded(prefix + name, patterns)
            or any(exception.startswith(prefix + name + "/") for exception in exceptions)
        )
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and not is_excluded(prefix + name, patterns):
                yield path


def inputs_hash(context: Path, *extra: str) -> str:
    digest = hashlib.sha256()
    for item in extra:
        digest.update(item.encode() + b"\0")
    for path in context_files(context):
        digest.update(f"{path.relative_to(context).as_posix()} {path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@dataclass
class Images:
    platform: str
    postgres: str
    redis: str
    build_seconds: float = 0.0  # 0: every image was there already

    def env(self) -> dict[str, str]:
        return {"LAB_IMAGE": self.platform, "LAB_POSTGRES_IMAGE": self.postgres, "LAB_REDIS_IMAGE": self.redis}


def build_images(compose_env: dict[str, str]) -> Images:
    """The three images compose.yaml names, tagged by the hash of their inputs; built when missing."""
    base = image_id(BASE_IMAGE)
    assert base, f"{BASE_IMAGE} is missing: build it with deploy/scripts/build-images.sh base"
    # The wheels the platform image installs from (fetched once per requirements.txt).
    run(["sh", "deploy/compose/wheels.sh"], timeout=900)
    recipe = [(ROOT / name).read_text() for name in (".dockerignore", "deploy/Dockerfile")]
    platform_hash = inputs_hash(ROOT, base, *recipe)
    services_hash = inputs_hash(ROOT / "deploy" / "compose", base)
    images = Images(platform=f"labs/platform:test-{platform_hash}",
                    postgres=f"labs/compose-postgres:test-{services_hash}",
                    redis=f"labs/compose-redis:test-{services_hash}")
    missing = [service for service, tag in (("migrate", images.platform), ("postgres", images.postgres),
                                             ("redis", images.redis)) if image_id(tag) is None]
    if missing:
        started = time.monotonic()
        # One platform service builds the image every platform service runs.
        compose(["build", *missing], env={**compose_env, **images.env()}, timeout=1800)
        images.build_seconds = time.monotonic() - started
        for repository, keep in (("labs/platform", images.platform), ("labs/compose-postgres", images.postgres),
                                 ("labs/compose-redis", images.redis)):
            _drop_older_test_tags(repository, keep)
    return images


def _drop_older_test_tags(repository: str, keep: str) -> None:
    """Earlier test builds of this image (their layers stay while another tag uses them)."""
    listed = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository], check=False)
    for tag in listed.stdout.split():
        if tag != keep and tag.startswith(f"{repository}:test-"):
            run(["docker", "image", "rm", tag], check=False)  # in use by a concurrent run: it stays


def compose(args: list[str], *, env: dict[str, str], timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is needed (apt-get install docker-compose; test.sh installs it)"
    return run([executable, "-f", str(COMPOSE_FILE), *args], env=env, timeout=timeout, check=check)


# ---- a project -----------------------------------------------------------------------------------

@dataclass
class Stack:
    """One compose project: its name, ports and session label, and how to reach it."""

    name: str = field(default_factory=lambda: f"labscmp{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    preview_port: int = field(default_factory=free_port)
    postgres_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    images: Images | None = None
    # The platform's data directory (bound at the same path: the runner binds files of it by path).
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="labs-compose-test-", dir="/var/tmp")))
    _env: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._env = self.env()

    @property
    def instance(self) -> str:
        return f"labs-{self.name}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        socket_gid = os.stat("/var/run/docker.sock").st_gid
        # Only what docker-compose itself needs from this process: a variable of the suite's own
        # environment (DJANGO_ALLOWED_HOSTS, LAB_LOG_LEVEL...) must not reach compose.yaml.
        variables = {
            **{name: value for name, value in os.environ.items() if name in PASSED or name.startswith("DOCKER_")},
            "COMPOSE_PROJECT_NAME": self.name,
            "DOCKER_BUILDKIT": "0",  # the classic builder needs no registry for FROM a local image
            "COMPOSE_DOCKER_CLI_BUILD": "0",
            "LAB_DOCKER_GID": str(socket_gid),
            "LAB_PORT": str(self.port),
            "LAB_PREVIEW_PORT": str(self.preview_port),
            "LAB_POSTGRES_PORT": str(self.postgres_port),
            "LAB_REDIS_PORT": str(self.redis_port),
            "LAB_INSTANCE": self.instance,
            "LAB_HOST_DATA_DIR": str(self.data_dir),
            "LAB_BIND": "127.0.0.1",
            "BASE_IMAGE": BASE_IMAGE,
            "LAB_POSTGRES_PASSWORD": uuid.uuid4().hex,
            "DJANGO_SECRET_KEY": uuid.uuid4().hex * 2,
        }
        if self.images is not None:
            variables.update(self.images.env())
        return variables

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return compose(["-p", self.name, *args], env=self._env, timeout=timeout, check=check)

    def manage(self, *args: str, timeout: float = 300) -> str:
        """`manage.py ARGS` in the running web container; its output. (Not `run --rm web`: compose
        1.29 links a one-off container to the services it depends on, and the engine refuses links
        with host networking.)"""
        return self.compose("exec", "-T", "web", "python", "manage.py", *args, timeout=timeout).stdout

    def prepare(self) -> None:
        """The images, built unless there already."""
        self.images = build_images(self._env)
        self._env = self.env()

    def up(self) -> float:
        """`up -d`, then wait for /readyz to say ready; the seconds it took."""
        started = time.monotonic()
        self.compose("up", "-d", timeout=600)
        deadline = time.monotonic() + 180
        last = ""
        while time.monotonic() < deadline:
            try:
                response = requests.get(f"{self.url}/readyz", timeout=10)
                if response.status_code == 200:
                    return time.monotonic() - started
                last = f"{response.status_code} {response.text[:500]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(1)
        raise AssertionError(f"/readyz did not answer 200 within 180 s (last: {last})\n{self.logs()}")

    def logs(self, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", f"--tail={tail}", timeout=120, check=False)
        return result.stdout[-20000:]

    def session_containers(self) -> list[str]:
        listed = run(["docker", "ps", "-aq", "--filter", f"label={MANAGED_LABEL}={self.instance}"], check=False)
        return listed.stdout.split()

    def down(self) -> None:
        """Everything the project and its runner made: containers, networks, volumes."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        label = f"label={MANAGED_LABEL}={self.instance}"
        containers = self.session_containers()
        if containers:
            run(["docker", "rm", "-f", "-v", *containers], check=False)
        for kind in ("network", "volume"):
            listed = run(["docker", kind, "ls", "-q", "--filter", label], check=False).stdout.split()
            if listed:
                run(["docker", kind, "rm", *listed], check=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)


ADMIN_PASSWORD = re.compile(r"Admin account: (\S+) / (\S+)")
