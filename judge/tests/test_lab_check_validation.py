"""Malformed checks are refused when a lab is imported, with file:line: field: message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from judge.tests.judge_env import DEMO
from labs.labformat import LabImportError, import_labs

LAB = """\
slug: checked
title: Checked
image: {name: tiny, kind: container, reference: "labs/busybox:latest"}
judge:
  - kind: docker_build
    max_size_mb: big
    colour: red
  - kind: http
    image: built
    port: 8080
    body: "(["
steps:
  - title: One
    file: one.md
    verify:
      - kind: comand
        run: "true"
      - kind: script
      - kind: file
        path: ../outside
        mode: 644
      - kind: http
        image: built
        port: 8080
"""


def lab_dir(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "checked"
    directory.mkdir()
    (directory / "lab.yaml").write_text(text)
    (directory / "one.md").write_text("# One\n")
    return directory


@pytest.mark.django_db
def test_every_problem_of_every_check_is_reported_with_its_line(tmp_path):
    directory = lab_dir(tmp_path, LAB)
    with pytest.raises(LabImportError) as caught:
        import_labs([directory])
    where = f"{directory}/lab.yaml"
    assert [str(p) for p in caught.value.problems] == [
        f"{where}:6: judge[0].max_size_mb: must be a number ≥ 0.1 (got 'big')",
        f"{where}:7: judge[0].colour: unknown key; allowed keys are build_args, codes, context, dockerfile, hint, "
        "kind, max_seconds, max_size_mb, min_size_mb, no_cache, target, timeout, title",
        f"{where}:11: judge[1].body: is not a valid regular expression: unterminated character set at position 1",
        f"{where}:16: steps[0].verify[0].kind: unknown check kind 'comand'; the kinds are command, docker_build, "
        "dockerfile, file, http, script",
        f"{where}:18: steps[0].verify[1].script: give either script (the text) or file (a path in the lab directory)",
        f"{where}:21: steps[0].verify[2].mode: must be an octal mode as a quoted string, e.g. \"0644\" (got 644)",
        f"{where}:23: steps[0].verify[3].image: `built` needs a docker_build check earlier in the same list",
    ]


@pytest.mark.django_db
def test_a_script_check_must_name_a_file_inside_the_lab(tmp_path):
    text = LAB.split("judge:")[0] + ("steps:\n  - title: One\n    file: one.md\n    verify:\n"
                                     "      - {kind: script, file: ../../etc/passwd}\n"
                                     "      - {kind: script, file: checks/missing.sh}\n")
    with pytest.raises(LabImportError) as caught:
        import_labs([lab_dir(tmp_path, text)])
    messages = [p.message for p in caught.value.problems]
    assert messages[0] == "must be a path inside the lab directory (got '../../etc/passwd')"
    assert messages[1].startswith("file not found: ")


@pytest.mark.django_db
def test_the_demo_docker_labs_import_with_their_judges(tmp_path):
    for slug in ("dockerfile-1-health", "dockerfile-2-layers", "dockerfile-3-multistage"):
        shutil.copytree(DEMO / slug, tmp_path / slug)
    outcomes = import_labs([tmp_path])
    assert sorted(o.slug for o in outcomes) == ["dockerfile-1-health", "dockerfile-2-layers",
                                                "dockerfile-3-multistage"]
    from labs.models import Lab

    for lab in Lab.objects.all():
        assert [check["kind"] for check in lab.judge] == ["dockerfile", "docker_build", "http"]
        assert any(step.verify for step in lab.steps.all())
