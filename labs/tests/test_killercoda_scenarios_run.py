"""Killercoda scenarios run as they do on Killercoda: imported unchanged, started on the Docker runner.

The scenarios in killercoda_scenarios/ were written for these tests in Killercoda's format:
- root-and-assets: the intro's background script (as root, at start) makes a file the first step
  verifies; its foreground script runs in the learner's first terminal; assets land anywhere
  (/ks, /var/run/kc-internal, /root, /opt/tool) with their modes, owned by root; a listed asset
  missing from the folder is a warning; the learner is root and writes a root-only path;
- docker-engine: the "ubuntu" host has a Docker engine: build, run, and a published port that
  answers on localhost;
- two-hosts: "kubernetes-kubeadm-2nodes" gives controlplane and node01 on one private network,
  host02's assets on node01, and `ssh node01` from the first.
Every step's verify fails before its solution and passes after; a failing verify shows its output.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest
from django.urls import reverse

from consoles.tests.terminal_harness import attach, hang_up, read_until
from judge import actions as judge_actions
from judge.models import Attempt, StepRun
from labs.labformat import import_labs
from labs.models import Lab
from runners import get_runner
from sessions_app import actions
from sessions_app.models import Session, State

pytestmark = pytest.mark.docker
pytest_plugins = ["consoles.tests.terminal_harness"]  # ws_app: the production WebSocket stack

SCENARIOS = Path(__file__).resolve().parent / "killercoda_scenarios"


@pytest.fixture
def imported(db, settings, tmp_path, caplog):
    """Import a scenario unchanged (a copy, as a folder of its own) with the default image mapping."""

    def load(name: str) -> tuple[Lab, list[str]]:
        target = tmp_path / name
        shutil.copytree(SCENARIOS / name, target)
        with caplog.at_level(logging.WARNING, logger="labs.killercoda"):
            [outcome] = import_labs([target])
        # The tests' own Docker runner (conftest: LAB_TEST_DOCKER_INSTANCE), not "default".
        Lab.objects.filter(pk=outcome.lab_id).update(runner="docker")
        return Lab.objects.get(pk=outcome.lab_id), [r.getMessage() for r in caplog.records]

    return load


@pytest.fixture
def started(settings, tmp_path, django_capture_on_commit_callbacks):
    settings.DATA_DIR = tmp_path
    sessions: list[Session] = []

    def start(owner, lab: Lab) -> Session:
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        sessions.append(session)
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        return session

    yield start
    runner = get_runner("docker")
    ids = {str(session.pk) for session in sessions}
    for env in runner.list_managed():
        if env.session_id in ids:
            runner.remove_managed(env)


def as_learner(session: Session, script: str, timeout: float = 60):
    """A command as the learner (root here), in the workspace, as the terminal would run it."""
    return get_runner(session.runner_name).exec(session.runner_state, ["bash", "-lc", script], timeout=timeout)


def check(session: Session, step, user, capture) -> Attempt:
    with capture(execute=True):
        attempt = judge_actions.request_check(session, step, user)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.DONE, (attempt.result, attempt.log)
    return attempt


def test_root_intro_scripts_and_assets_anywhere(imported, started, owner, owner_client,
                                                django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab, warnings = imported("root-and-assets")
    assert lab.shell_user == "root" and lab.docker_access and lab.image.reference == "labs/killercoda:bookworm"
    assert any("not-in-the-folder.txt" in w and "not copied" in w for w in warnings), warnings
    first, second = lab.steps.order_by("order")
    session = started(owner, lab)

    # The learner is root, at home in /root, which is the workspace the editor shows.
    who = as_learner(session, "id -un; pwd; echo $HOME")
    assert who.stdout.decode().split() == ["root", "/workspace", "/root"]
    assert as_learner(session, "stat -L -c %i /root /workspace | uniq | wc -l").stdout.strip() == b"1"
    # Assets: anywhere, with their modes, owned by root; the hidden one is not in the workspace.
    listing = as_learner(session, "stat -c '%a %U %n' /ks/wait-background.sh /var/run/kc-internal/solution.sh "
                                  "/root/given.txt /opt/tool/tool.sh")
    assert listing.stdout.decode().splitlines() == [
        "755 root /ks/wait-background.sh", "700 root /var/run/kc-internal/solution.sh",
        "644 root /root/given.txt", "755 root /opt/tool/tool.sh"]
    names = {entry.path for entry in get_runner("docker").list_files(session.runner_state)}
    assert "given.txt" in names and "solution.sh" not in names
    assert not any("not-in-the-folder" in name for name in names)

    # The intro's background script ran as root at start, before step 1's; both are on the record.
    intro = StepRun.objects.get(session=session, step=None)
    assert intro.status == StepRun.Status.DONE, intro.output
    assert StepRun.objects.get(session=session, step=first).status == StepRun.Status.DONE
    assert as_learner(session, "cat /root/intro-made.txt").stdout == b"made by the intro\n"
    assert as_learner(session, "cat /var/tmp/step1-background.txt").stdout == b"step 1 background ran as root\n"
    events = list(session.events.values_list("message", flat=True))
    assert events.index("Intro: setup script finished.") < events.index("Step 1: setup script finished.")

    # The intro renders its <details> block as Markdown.
    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert "<summary>How the intro works</summary>" in page and "<strong>as root</strong>" in page

    # Step 1 fails first, and the learner sees what the verify script printed ...
    attempt = check(session, first, owner, capture)
    assert attempt.passed is False
    [failure] = attempt.result["failures"]
    assert failure["code"] == "script_failed"
    assert failure["detail"] == "/root/answer.txt does not hold the intro's text yet."
    assert "does not hold the intro" in owner_client.get(
        reverse("judge:attempt", args=[session.pk, attempt.pk])).content.decode()
    # ... then passes once the learner does what the step says.
    assert not as_learner(session, "test -e /var/tmp/step2-background.txt").ok  # step 2 has not started
    assert as_learner(session, "cp /root/intro-made.txt /root/answer.txt").ok
    assert check(session, first, owner, capture).passed is True
    # Passing step 1 starts step 2: its background script ran (once).
    assert as_learner(session, "cat /var/tmp/step2-background.txt").stdout == b"step 2 started\n"
    assert StepRun.objects.filter(session=session).count() == 3

    # Step 2: a path only root may write.
    attempt = check(session, second, owner, capture)
    assert attempt.passed is False
    assert "settings.conf must say 'configured'" in attempt.result["failures"][0]["detail"]
    assert as_learner(session, "echo configured > /etc/kc-lab/settings.conf").ok
    assert check(session, second, owner, capture).passed is True
    assert "<strong>every</strong> part" in owner_client.get(session.get_absolute_url()).content.decode()


@pytest.mark.django_db(transaction=True)
async def test_foreground_scripts_run_in_the_first_terminal(imported, started, owner, ws_app):
    from asgiref.sync import sync_to_async

    lab, _ = await sync_to_async(imported)("root-and-assets")
    session = await sync_to_async(started)(owner, lab)
    terminal, _ready = await attach(ws_app, session, owner)
    try:
        # The intro's foreground script, then step 1's, typed into the terminal as the session starts.
        output = await read_until(terminal, b"Setup finished.", timeout=60)
        assert b". /tmp/.labs-foreground." in output
        # A script's `echo ... > file` makes the file before it writes to it: read until both are
        # complete (or the time is up, and the assertion below says what was there).
        deadline = time.monotonic() + 30
        found = await sync_to_async(as_learner)(session, "cat /tmp/intro-foreground.txt /tmp/step1-foreground.txt")
        while not (found.ok and found.stdout.endswith(b"step 1 foreground ran\n")) and time.monotonic() < deadline:
            found = await sync_to_async(as_learner)(session, "sleep 0.2; cat /tmp/intro-foreground.txt "
                                                             "/tmp/step1-foreground.txt")
        assert found.stdout == b"the intro's foreground ran in /root\nstep 1 foreground ran\n"
    finally:
        await hang_up(terminal)
    await sync_to_async(session.refresh_from_db)()
    assert session.foreground_queue == []  # each script runs once


def test_the_ubuntu_host_has_a_docker_engine_beside_it(imported, started, owner, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab, _ = imported("docker-engine")
    first, second = lab.steps.order_by("order")
    session = started(owner, lab)
    assert session.runner_state.get("engine_container_id")
    assert check(session, first, owner, capture).passed is False
    built = as_learner(session, "cd /root/app && docker build -q -t kc-app:1 .", timeout=120)
    assert built.ok, built.stderr
    assert check(session, first, owner, capture).passed is True
    assert check(session, second, owner, capture).passed is False
    served = as_learner(session, "docker run -d --name web -p 8080:80 labs/busybox:latest httpd -f -p 80 -h /etc "
                                 "&& sleep 1", timeout=60)
    assert served.ok, served.stderr
    assert check(session, second, owner, capture).passed is True
    # Root in the learner's container, but the engine's own root is not root on the host.
    mapping = as_learner(session, "docker run --rm labs/busybox:latest cat /proc/self/uid_map")
    assert mapping.stdout.split()[:3] == [b"0", b"1000", b"1"]


def test_two_hosts_reach_each_other_by_name_and_over_ssh(imported, started, owner,
                                                         django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab, warnings = imported("two-hosts")
    assert lab.hosts == ["controlplane", "node01"]
    assert any("Kubernetes itself is not installed" in w for w in warnings), warnings
    [step] = lab.steps.all()
    session = started(owner, lab)
    assert as_learner(session, "hostname").stdout == b"controlplane\n"
    assert as_learner(session, "cat /root/on-controlplane.txt").ok
    assert not as_learner(session, "test -e /root/on-node01.txt").ok  # host02's asset is on node01 only
    assert check(session, step, owner, capture).passed is False
    reached = as_learner(session, "ssh node01 hostname")
    assert reached.stdout == b"node01\n", reached.stderr
    assert as_learner(session, "ssh node01 touch /root/done").ok
    assert check(session, step, owner, capture).passed is True


def test_reimporting_keeps_what_staff_changed_unless_the_scenario_changed_it(imported, tmp_path):
    lab, _ = imported("docker-engine")
    Lab.objects.filter(pk=lab.pk).update(memory_mb=3072, ttl_minutes=90, title="Renamed by staff")
    scenario = tmp_path / "docker-engine"
    data = json.loads((scenario / "index.json").read_text())
    data["title"] = "Docker, second edition"
    (scenario / "index.json").write_text(json.dumps(data))
    [outcome] = import_labs([scenario])
    lab.refresh_from_db()
    # Staff's values stay where the scenario said the same as last time; its new title wins.
    assert (lab.memory_mb, lab.ttl_minutes, lab.title) == (3072, 90, "Docker, second edition")
    assert "kept memory_mb as staff set it in the admin (the scenario did not change it)" in outcome.notes
