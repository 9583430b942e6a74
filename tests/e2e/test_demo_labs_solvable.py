"""Every demo lab can be solved by following its own text, as its learner (never root).

One session per lab, started with the Start button of the lab's page on a real daphne and the
real runner (Docker for the containers, Docker-in-Docker with its rootless engine for the
Dockerfile course, QEMU for the VM). Then, for every step in order (lab_walkthrough.py): the
step's Check fails, the learner does what the step's markdown says (its shell blocks typed into
the terminal over the real WebSocket, its file blocks saved through the editor's endpoint),
and the Check passes; a step without checks says so. The labs' final checks must pass at the end.

What the test knows about a lab beyond its text is only where its non-shell blocks go (the
WALKTHROUGHS below, each following a sentence of the step) and which commands the text itself
says will fail.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from labs.labformat import import_labs
from labs.models import Lab
from labs.vm_images import register_file
from runners.qemu import QemuRunner
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.lab_walkthrough import (
    Edit,
    Learner,
    ReadOnly,
    Walkthrough,
    append,
    append_line,
    insert_after,
    insert_before,
    replace_lines,
    replace_text,
    then,
    walk,
    whole_file,
)
from tests.e2e.learner_client import LearnerClient
from tests.e2e.live_server import docker_runner_for_server
from tests.learner_terminal import LearnerTerminal
from tests.vm_image import vm_image  # noqa: F401 - a fixture

DEMO = Path(settings.BASE_DIR) / "labs" / "demo_catalog"

LINUX_SHELL_BASICS = Walkthrough(
    blocks={
        (2, 2): Edit("notes/todo.txt", append_line),  # "Open notes/todo.txt, add this line at the end, and save"
        (3, 1): ReadOnly("a line of the log, to explain its fields"),
        (4, 1): ReadOnly("what a line of ls -l looks like"),
    },
    failing={
        "ls does-not-exist 2> errors.txt  # stderr into a file": "a name that does not exist",
        "ls projects does-not-exist > out.txt 2>&1   # both into the same file": "a name that does not exist",
        "./scripts/backup.sh          # Permission denied": "the comment says so",
        "chmod 666 /etc/passwd        # Operation not permitted": "the comment says so",
    },
    outputs={
        (1, 5, "type -a ls"): r"aliased to .ls --color=auto' ls is /usr/bin/ls",
        (1, 7, "cat where.txt"): r"/workspace/projects/website/css",
        (2, 3, "tail -n 2 notes/todo.txt"): r"- tidy up the archive",
        (3, 5, "cat top-ips.txt"): r"29 203\.0\.113\.7",
        (4, 0, "id"): r"uid=1000\(learner\)",
        (4, 2, "./scripts/backup.sh          # Permission denied"): r"Permission denied",
        (4, 2, "./scripts/backup.sh"): r"Backup written to /home/learner/backups/website-",
        (4, 5, "chmod 666 /etc/passwd        # Operation not permitted"): r"Operation not permitted",
    },
)

DOCKER_TIMEOUTS = {"docker build": 300.0, "time docker build": 300.0, "printf": 300.0}

DOCKERFILE_1_HEALTH = Walkthrough(
    blocks={
        # "add a branch to do_GET, before the final else that answers 404 ... While you are there,
        # add "/health" to the list of routes that / returns"
        (2, 0): Edit("app.py", then(insert_before(r"^        else:"),
                                    replace_text('"routes": ["/", "/quote"]', '"routes": ["/", "/quote", "/health"]'))),
        (2, 2): ReadOnly("the expected answer"),
        (3, 1): Edit(".dockerignore", whole_file),  # "Create a file named .dockerignore next to app.py"
        (4, 0): Edit("Dockerfile", whole_file),  # "Create a file named Dockerfile next to app.py"
        (5, 0): Edit("Dockerfile", insert_before(r"^CMD ")),  # "Add this to the Dockerfile, just before CMD"
    },
    outputs={
        (1, 1, "curl -i http://localhost:8080/health"): r"HTTP/1\.0 404 Not Found",
        (2, 1, "curl -i http://localhost:8080/health"): r"HTTP/1\.0 200 OK",
        (2, 3, "curl -s -o /dev/null -w '%{http_code}\\n' http://localhost:8080/nope"): r"\b404\b",
        (4, 2, "curl -s http://localhost:8080/health"): r'"status": "ok"',
        (4, 3, "docker run --rm quotes:1 ls -la /app"): r"\A(?![\s\S]*local\.env)[\s\S]*app\.py",
        (5, 1, 'docker ps            # ... and now "(healthy)"'): r"\(healthy\)",
        (5, 2, "docker inspect --format '{{.State.Health.Status}}' broken"): r"\bunhealthy\b",
    },
    timeouts=DOCKER_TIMEOUTS,
)

DOCKERFILE_2_LAYERS = Walkthrough(
    blocks={
        (1, 3): ReadOnly("the expected build output"),
        (2, 0): Edit("Dockerfile", replace_lines(r"^WORKDIR /app", r"^USER quotes")),  # "Change the middle ... to"
        (2, 2): ReadOnly("the expected build output"),
        # "Tell pip not to keep a cache, and silence its version check": the ENV and the install
        (3, 1): Edit("Dockerfile", replace_lines(r"^ENV ", r"^\s+PORT=8080")),
        (3, 2): Edit("Dockerfile", replace_lines(r"^COPY requirements.txt", r"^RUN pip install")),
        (3, 4): ReadOnly("going further: a BuildKit cache mount, not part of the solution"),
        (4, 4): Edit("Dockerfile", insert_after(r"^FROM ")),  # "Add a label ... on the line right after FROM"
    },
    outputs={  # what the cache did, as the text says
        (1, 1, "time docker build -t quotes:before ."): r"COPY \. \. ---> Using cache",
        (1, 2, "time docker build -t quotes:before ."): r"RUN pip install -r requirements\.txt ---> Running in",
        (2, 1, "time docker build -t quotes:layers ."): r"RUN pip install -r requirements\.txt ---> Using cache",
        (2, 3, "curl -s http://localhost:8080/health"): r'"uptime"',
        (3, 0, "docker run --rm --user root quotes:layers sh -c 'du -sh /root/.cache/pip || echo \"no pip cache in "
               "this image\"'"): r'(?<!")no pip cache in this image',
        (4, 2, "docker build -t quotes:layers ."): r"COPY \. \. ---> Using cache",
        (4, 3, "docker build -t quotes:layers ."):
            r"RUN useradd [^>]* ---> Using cache .* RUN pip install --no-cache-dir [^>]* ---> Running in",
        (4, 5, "docker image inspect --format '{{json .Config.Labels}}' quotes:layers"):
            r'"org\.opencontainers\.image\.title":"quotes"',
    },
    timeouts=DOCKER_TIMEOUTS,
)

DOCKERFILE_3_MULTISTAGE = Walkthrough(
    blocks={
        (2, 1): Edit("Dockerfile", whole_file),  # "Then create Dockerfile with the first stage"
        (3, 0): Edit("Dockerfile", append),  # "Append to your Dockerfile"
    },
    failing={"sh check-size.sh quotes:fat 250": "It prints TOO BIG and exits with status 1."},
    outputs={
        (1, 1, "sh check-size.sh quotes:fat 250"): r"TOO BIG: quotes:fat is [0-9]+ MB",
        (2, 2, "docker run --rm quotes:build ls /opt/venv/lib/python3.11/site-packages"): r"\bhumanize\b",
        (3, 2, 'docker run --rm quotes:slim python -c "import humanize, sys; print(sys.executable, '
               'humanize.__version__)"'): r"/opt/venv/bin/python 4\.12\.3",
        (3, 2, "docker run --rm quotes:slim sh -c 'command -v gcc || echo \"no gcc here\"'"): r'(?<!")no gcc here',
        (4, 0, "sh check-size.sh quotes:slim 250 | tee proof.txt"): r"OK: quotes:slim is [0-9]+ MB",
        (4, 2, "docker ps --filter name=quotes        # STATUS should say (healthy)"): r"\(healthy\)",
    },
    timeouts=DOCKER_TIMEOUTS,
)

TINY_LINUX_VM = Walkthrough(
    blocks={(2, 1): ReadOnly("what the entries of /bin look like")},
    outputs={
        (1, 1, "tty"): r"/dev/ttyS0",
        (1, 2, "cat /proc/cmdline"): r"console=ttyS0 console=tty0 quiet panic=10",
        (2, 3, "busybox --list | wc -l"): r"\b2[0-9][0-9]\b",
        (3, 1, "cat /proc/1/cmdline | tr '\\0' ' '; echo"): r"/bin/sh /init",
        (3, 4, "cat /sys/class/net/lo/operstate"): r"\bdown\b",
        (4, 0, "grep ' / ' /proc/mounts"): r"rootfs / rootfs",
        (4, 0, "stat -f /"): r"Type: tmpfs",
        (4, 1, 'mount | grep vda || echo "vda is not mounted"'): r'(?<!")vda is not mounted',
    },
    last_command="poweroff -f",  # the machine turns off: no prompt comes back
)


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def extra_lab_runners(docker_instance) -> Iterator[dict[str, Any]]:
    """The server's runners: Docker under the test's own label and QEMU (TCG) in a directory of
    its own; whatever they started is removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ldemo-"))  # short: QEMU's unix sockets live in it
    qemu_options = {"root": str(root), "accel": "tcg", "powerdown_timeout": 1}
    try:
        with docker_runner_for_server(docker_instance) as runners:
            yield {**runners, "qemu": {"BACKEND": "runners.qemu.QemuRunner", "OPTIONS": qemu_options}}
    finally:
        qemu = QemuRunner("qemu", qemu_options)
        for env in qemu.list_managed():
            qemu.remove_managed(env)
        shutil.rmtree(root, ignore_errors=True)


def import_demo(slug: str) -> Lab:
    import_labs([DEMO / slug])
    return Lab.objects.get(slug=slug)


def start(server: Any, learner: Any, password: str, lab: Lab) -> tuple[LearnerClient, str]:
    """Sign in and press Start on the lab's page, as the learner."""
    client = LearnerClient(server.url)
    client.sign_in(learner.username, password)
    session_id = client.start_lab(lab.slug)
    session = Session.objects.get(pk=session_id)
    assert session.state == State.RUNNING, session.error
    page = client.session_page(session_id)
    for step in lab.steps.all():
        assert step.title in page
    return client, session_id


def walk_in_container(server: Any, client: LearnerClient, session_id: str, lab: Lab,
                      walkthrough: Walkthrough) -> None:
    with LearnerTerminal.open(server.url, session_id, client.cookie_header) as terminal:
        user = terminal.run("id -un")
        assert user.status == 0 and "root" not in user.output.split(), f"the terminal is root's:\n{user.output}"
        with kept_on_failure(terminal, lab.slug):
            walk(lab, Learner(client, terminal, session_id, walkthrough))


@contextmanager
def kept_on_failure(terminal: LearnerTerminal, name: str) -> Iterator[None]:
    """Keep what the terminal showed next to the other artifacts when the walk fails."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"{name}-terminal.txt").write_text(terminal.tail(10**7))
        raise


# ---- the labs ------------------------------------------------------------------------------------


@pytest.mark.docker
def test_linux_shell_basics_can_be_solved_as_written(asgi_live_server, learner, password):
    lab = import_demo("linux-shell-basics")
    client, session_id = start(asgi_live_server, learner, password, lab)
    walk_in_container(asgi_live_server, client, session_id, lab, LINUX_SHELL_BASICS)


@pytest.mark.docker
@pytest.mark.parametrize(("slug", "walkthrough"), [
    pytest.param("dockerfile-1-health", DOCKERFILE_1_HEALTH, id="dockerfile-1-health"),
    pytest.param("dockerfile-2-layers", DOCKERFILE_2_LAYERS, id="dockerfile-2-layers"),
    pytest.param("dockerfile-3-multistage", DOCKERFILE_3_MULTISTAGE, id="dockerfile-3-multistage"),
])
def test_the_dockerfile_course_can_be_solved_as_written(asgi_live_server, learner, password, slug, walkthrough):
    lab = import_demo(slug)
    client, session_id = start(asgi_live_server, learner, password, lab)
    walk_in_container(asgi_live_server, client, session_id, lab, walkthrough)


def test_tiny_linux_vm_can_be_followed_as_written_and_says_it_has_no_checks(
    asgi_live_server, learner, password, vm_image, settings, tmp_path  # noqa: F811 - the fixture
):
    lab = import_demo("tiny-linux-vm")
    # As run.sh does: the disk the lab's image names, built by deploy/images/vm/build-test-vm.sh.
    settings.LAB_VM_IMAGE_DIR = tmp_path / "vm-images"
    register_file("tiny-linux-vm", vm_image.disk)
    client, session_id = start(asgi_live_server, learner, password, lab)
    with LearnerTerminal.open(asgi_live_server.url, session_id, client.cookie_header) as terminal, \
            kept_on_failure(terminal, lab.slug):
        # "switch to the Terminal tab and press Enter": the prompt was printed before we connected.
        terminal.wait_for("labvm#", timeout=240)
        walk(lab, Learner(client, terminal, session_id, TINY_LINUX_VM))
        terminal.read_until(re.compile(rb"reboot: Power down"), timeout=60)
    client.stop_session(session_id)
    assert Session.objects.get(pk=session_id).state in (State.STOPPING, State.STOPPED)
