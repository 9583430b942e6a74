"""A Killercoda scenario run for real: imported, started on the Docker engine, worked through.

Proves assets (with their modes), background scripts (first step at start, the next one when a
step passes), verify scripts run as root against /root, and the finish text once all steps
passed. The path-mapping tests at the end need no engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from judge.models import StepRun
from labs.assets import AssetPathError, apply_chmod, asset_destination, asset_directory, expand_assets
from labs.labformat import LabImportError, import_labs
from labs.models import Image, Lab
from runners import get_runner
from runners.docker import LABEL_SESSION
from sessions_app import actions
from sessions_app.models import Session, State

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
    ("/root", "/root"), ("/root/", "/root"), ("~", "~"), ("~/", "~"), ("~/docs", "~/docs"), ("/ks", "/ks"),
    ("/var/run/kc-internal", "/var/run/kc-internal"), ("/opt/a/./b//c", "/opt/a/b/c"), ("/", "/"),
])
def test_targets_are_absolute_directories_or_the_home(target, directory):
    assert asset_directory(target) == directory


@pytest.mark.parametrize("target", [
    "/root/../etc", "/root/site/../../etc", "~/../../etc", "~/..", "/root/..", "/etc/../root",
    "relative/dir", "", "..", "~user", "~root/x", "/root/\x00x", "/root\\..\\etc", "root",
])
def test_hostile_targets_are_refused(target):
    with pytest.raises(AssetPathError):
        asset_directory(target)


@pytest.mark.parametrize("filename", ["", ".", "..", "a/b", "../x", "a\\b", "x\x00"])
def test_asset_file_names_must_be_plain(filename):
    with pytest.raises(AssetPathError):
        asset_destination("/root", filename)


@pytest.mark.parametrize(("mode", "expected"), [
    ("", 0o644), ("+x", 0o755), ("0700", 0o700), ("600", 0o600), ("u+x", 0o744), ("go-r", 0o600),
    ("a=r", 0o444), ("u=rwx,g=rx,o=", 0o750), ("+X", 0o644), ("u+s,+x", 0o4755),
])
def test_chmod_modes_apply_as_chmod_does(mode, expected):
    assert apply_chmod(mode) == expected


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


def test_the_importer_keeps_targets_anywhere(db, settings, scenario):
    Image.objects.create(name="labs-base", reference="labs/base:bookworm")
    settings.LAB_KILLERCODA_IMAGES = {"ubuntu": "labs-base"}
    _with_assets(scenario, [{"file": "tool.sh", "target": "/usr/local/bin", "chmod": "+x"},
                            {"file": "notes.txt", "target": "~/docs"}])
    [outcome] = import_labs([scenario])
    assert Lab.objects.get(pk=outcome.lab_id).assets == [
        {"file": "assets/tool.sh", "target": "/usr/local/bin", "chmod": "+x", "host": "host01"},
        {"file": "assets/notes.txt", "target": "~/docs", "chmod": "", "host": "host01"}]
