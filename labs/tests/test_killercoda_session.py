"""A Killercoda scenario run for real: imported, started on the Docker engine, worked through.

Proves assets (with their modes), background scripts (first step at start, the next one when a
step passes), verify scripts run as root against /root, and the finish text once all steps
passed. The path-mapping tests at the end need no engine.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from django.urls import reverse

from judge import actions as judge_actions
from judge.models import Attempt, StepRun
from labs.assets import (
    AssetPathError,
    AssetUnsupported,
    asset_destination,
    expand_assets,
    workspace_directory,
)
from labs.labformat import LabImportError, import_labs
from labs.models import Image, Lab
from labs.templatetags.lab_markdown import foreground_block
from sessions_app import actions
from sessions_app.models import Session, State
from sessions_app.runners import get_runner
from sessions_app.runners.docker import LABEL_SESSION

SCENARIO = Path(__file__).resolve().parent / "killercoda_scenarios" / "tool-report"


@pytest.fixture
def scenario(tmp_path) -> Path:
    target = tmp_path / "tool-report"
    shutil.copytree(SCENARIO, target)
    return target


@pytest.fixture
def kc_lab(db, settings, scenario) -> Lab:
    Image.objects.get_or_create(name="labs-base", defaults={"reference": "labs/base:bookworm"})
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    [outcome] = import_labs([scenario])
    # On the tests' own Docker runner (conftest: LAB_TEST_DOCKER_INSTANCE), not "default".
    Lab.objects.filter(pk=outcome.lab_id).update(runner="docker", memory_mb=256)
    return Lab.objects.get(pk=outcome.lab_id)


@pytest.fixture
def sessions_to_remove(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    started: list[Session] = []
    yield started
    runner = get_runner("docker")
    ids = {str(session.pk) for session in started}
    for env in runner.list_managed():
        if env.session_id in ids:
            runner.remove_managed(env)


def _check(session, step, user, capture) -> Attempt:
    with capture(execute=True):
        attempt = judge_actions.request_check(session, step, user)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.DONE, (attempt.result, attempt.log)
    return attempt


@pytest.mark.docker
def test_a_killercoda_scenario_works_in_a_real_docker_session(
    engine, kc_lab, owner, owner_client, sessions_to_remove, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first, second = kc_lab.steps.order_by("order")
    with capture(execute=True):
        session = actions.start_session(owner, kc_lab)
    sessions_to_remove.append(session)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    runner = get_runner(session.runner_name)
    state = session.runner_state

    def sh(command: str):
        return runner.exec(state, ["sh", "-c", command], timeout=20)  # as the learner, in the workspace

    # Assets: in the workspace (/root and ~ map there), with their modes, owned by the learner.
    stat = sh("stat -c '%a %U %n' /workspace/tool.sh /workspace/docs/notes.txt")
    assert stat.ok, stat.stderr
    assert stat.stdout.decode().splitlines() == ["755 learner /workspace/tool.sh",
                                                 "600 learner /workspace/docs/notes.txt"]
    assert runner.read_file(state, "docs/notes.txt") == (SCENARIO / "assets" / "notes.txt").read_bytes()
    assert sh("readlink /root").stdout == b"/workspace\n"  # Killercoda's home is the workspace

    # The first step's background script ran at start, as root, and is on the record.
    run = StepRun.objects.get(session=session, step=first)
    assert run.status == StepRun.Status.DONE and run.exit_code == 0, run.output
    assert "step 1 background done" in run.output
    assert runner.read_file(state, "welcome.txt") == b"prepared by step 1 as root\n"
    # Root's file, in the learner's group and writable by it: the learner can change it.
    assert sh("stat -c '%U %G %a' /workspace/welcome.txt").stdout == b"root learner 664\n"
    assert sh("echo 'and read by the learner' >> welcome.txt").ok
    assert not sh("cat /var/lib/kc-setup/step1").ok  # root's marker: the learner cannot read it
    messages = list(session.events.values_list("message", flat=True))
    assert "Copied 2 lab files into the workspace." in messages
    assert messages.index("Ready.") < messages.index("Step 1: setup script started.") \
        < messages.index("Step 1: setup script finished.")
    # The second step has not started: its script has not run.
    assert not StepRun.objects.filter(session=session, step=second).exists()
    assert sh("test -e /workspace/reports").exit_code == 1

    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert "data-step-foreground" in page and 'data-action="exec"' in page and "cd /root" in page
    assert "every step passed" not in page and 'id="lab-finish"' not in page

    # Step 1's verify (run as root, reading /root and a root-only file) fails before the work ...
    attempt = _check(session, first, owner, capture)
    assert attempt.passed is False
    assert [f["code"] for f in attempt.result["failures"]] == ["script_failed"]
    # ... and passes after it, which starts step 2: its background script runs.
    work = sh("./tool.sh > output.txt")
    assert work.ok, work.stderr
    attempt = _check(session, first, owner, capture)
    assert attempt.passed is True, attempt.result
    second_run = StepRun.objects.get(session=session, step=second)
    assert second_run.status == StepRun.Status.DONE, second_run.output
    assert runner.read_file(state, "reports/template.md") == b"# Summary\n"
    assert session.events.filter(message="Step 2: setup script finished.").exists()
    assert StepRun.objects.filter(session=session).count() == 2  # step 1's script did not run again

    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert "every step passed" not in page

    assert _check(session, second, owner, capture).passed is False
    work = sh("cp reports/template.md reports/summary.md")  # the learner may write where root's script made
    assert work.ok, work.stderr
    assert _check(session, second, owner, capture).passed is True

    # Every step passed: the finish text shows, rendered, on the page and in the refreshed box.
    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert 'id="lab-finish"' in page and "<strong>every step passed</strong>" in page
    assert "✓ Lab complete" in page
    box = owner_client.get(reverse("judge:final", args=[session.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "<strong>every step passed</strong>" in box

    with capture(execute=True):
        actions.stop_session(session)
    session.refresh_from_db()
    assert session.state == State.STOPPED


@pytest.mark.docker
def test_a_lab_whose_asset_is_gone_fails_cleanly(engine, kc_lab, owner, sessions_to_remove,
                                                  django_capture_on_commit_callbacks):
    (Path(kc_lab.source_path) / "assets" / "tool.sh").unlink()
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, kc_lab)
    sessions_to_remove.append(session)
    session.refresh_from_db()
    assert session.state == State.FAILED
    assert "missing from the lab directory" in session.error
    assert not StepRun.objects.filter(session=session).exists()
    assert engine.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={session.pk}"}) == []


# ---- path mapping: no engine needed ----------------------------------------------------------------

@pytest.mark.parametrize(("target", "directory"), [
    ("/root", ""), ("/root/", ""), ("~", ""), ("~/", ""), ("~/docs", "docs"), ("/root/site", "site"),
    ("/root/a/./b//c", "a/b/c"),
])
def test_home_targets_map_into_the_workspace(target, directory):
    assert workspace_directory(target) == directory


@pytest.mark.parametrize("target", [
    "/root/../etc", "/root/site/../../etc", "~/../../etc", "~/..", "/root/..", "/etc/../root",
    "relative/dir", "", "..", "~user", "~root/x", "/root/\x00x", "/root\\..\\etc", "root",
])
def test_hostile_targets_are_refused(target):
    with pytest.raises(AssetPathError):
        workspace_directory(target)


@pytest.mark.parametrize("target", ["/etc", "/usr/local/bin", "/rootkit", "/tmp", "/", "/home/learner"])
def test_targets_outside_the_home_are_not_supported(target):
    with pytest.raises(AssetUnsupported):
        workspace_directory(target)


@pytest.mark.parametrize("filename", ["", ".", "..", "a/b", "../x", "a\\b", "x\x00"])
def test_asset_file_names_must_be_plain(filename):
    with pytest.raises(AssetPathError):
        asset_destination("/root", filename)


def test_an_asset_linking_out_of_the_lab_directory_is_refused(tmp_path):
    (tmp_path / "assets").mkdir()
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("not for sessions")
    (tmp_path / "assets" / "link.txt").symlink_to(secret)
    lab = Lab(source_path=str(tmp_path), assets=[{"file": "assets/link.txt", "target": "/root", "chmod": ""}])
    with pytest.raises(AssetPathError, match="outside the lab directory"):
        expand_assets(lab)
    lab.assets = [{"file": "../secret.txt", "target": "/root", "chmod": ""}]
    with pytest.raises(AssetPathError):
        expand_assets(lab)
    lab.assets = [{"file": "assets/link.txt", "target": "/root", "chmod": "+x; rm -rf /"}]
    with pytest.raises(AssetPathError, match="not a chmod mode"):
        expand_assets(lab)


def _with_assets(scenario: Path, assets: list[dict[str, str]]) -> Path:
    index = scenario / "index.json"
    data = json.loads(index.read_text())
    data["details"]["assets"] = {"host01": assets}
    index.write_text(json.dumps(data))
    return scenario


def test_the_importer_refuses_hostile_targets_and_modes(db, settings, scenario):
    Image.objects.create(name="labs-base", reference="labs/base:bookworm")
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    _with_assets(scenario, [{"file": "tool.sh", "target": "/root/../etc"},
                            {"file": "notes.txt", "target": "/root", "chmod": "$(reboot)"}])
    with pytest.raises(LabImportError) as caught:
        import_labs([scenario])
    problems = [str(problem) for problem in caught.value.problems]
    assert any("details.assets.host01[0].target" in p and "'..'" in p for p in problems), problems
    assert any("details.assets.host01[1].chmod" in p for p in problems), problems
    assert not Lab.objects.exists()


def test_the_importer_skips_targets_outside_the_home_with_a_warning(db, settings, scenario, caplog):
    Image.objects.create(name="labs-base", reference="labs/base:bookworm")
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    _with_assets(scenario, [{"file": "tool.sh", "target": "/usr/local/bin", "chmod": "+x"},
                            {"file": "notes.txt", "target": "~/docs"}])
    with caplog.at_level(logging.WARNING, logger="labs.killercoda"):
        [outcome] = import_labs([scenario])
    assert Lab.objects.get(pk=outcome.lab_id).assets == [
        {"file": "assets/notes.txt", "target": "~/docs", "chmod": ""}]
    assert any("details.assets.host01[0].target" in r.getMessage() and "not copied" in r.getMessage()
               for r in caplog.records)


def test_a_foreground_script_becomes_a_click_to_run_block():
    html = str(foreground_block("#!/bin/bash\ncd /root\necho ```\n"))
    assert 'data-action="exec"' in html
    assert "cd /root" in html and "#!/bin/bash" not in html
    assert str(foreground_block("#!/bin/sh\n")) == ""
