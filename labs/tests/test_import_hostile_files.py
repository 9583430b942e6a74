"""Hostile lab directories: every one is refused with a clear problem (file, line, why), never a traceback.

From issue 9: deeply nested YAML crashed import_lab with a RecursionError and a 50 MB step file
was accepted. Each case runs through import_labs and the command, and the database stays empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from labs.labformat import LabImportError, import_labs
from labs.models import Lab
from labs.tests.test_import_lab import MINIMAL, write_lab

pytestmark = pytest.mark.django_db

LAB = MINIMAL.format(slug="hostile")
STEP = "# Step one\n\nRun `true`.\n"


def make_lab(root: Path, yaml_text: str | bytes = LAB, files: dict[str, str | bytes] | None = None) -> Path:
    """A lab directory whose lab.yaml and files may hold any bytes."""
    directory = write_lab(root, "hostile", LAB)
    for name, content in ({"lab.yaml": yaml_text} | (files or {})).items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def refused(directory: Path) -> list[str]:
    """The problems import_labs reports; the command reports them too, as a CommandError, and writes nothing."""
    with pytest.raises(LabImportError) as caught:
        import_labs([directory])
    with pytest.raises(CommandError) as command:
        call_command("import_lab", str(directory))
    problems = [str(problem) for problem in caught.value.problems]
    assert all(problem in str(command.value) for problem in problems)
    assert not Lab.objects.exists()
    return problems


def alias_bomb(levels: int = 9) -> str:
    """'Billion laughs': each anchor lists the previous one nine times (9**levels strings)."""
    lines = ["    - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"    - &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_yaml_nested_thousands_of_levels_deep_in_flow_style_is_refused_at_its_line(tmp_path):
    lab = make_lab(tmp_path, LAB + "judge: " + "[" * 5000 + "]" * 5000 + "\n")
    assert refused(lab) == [f"{lab / 'lab.yaml'}:10: the YAML nests more than 40 levels deep"]


def test_yaml_nested_deeply_in_block_style_is_refused_at_its_line(tmp_path):
    block = "".join("  " * depth + "-\n" for depth in range(800))
    [problem] = refused(make_lab(tmp_path, LAB + "judge:\n" + block))
    assert problem.endswith("the YAML nests more than 40 levels deep")
    assert ":50: " in problem  # line 11 holds level 2 (the judge list), line 50 level 41


def test_a_billion_laughs_alias_bomb_is_refused_before_anything_walks_it(tmp_path):
    lab = make_lab(tmp_path, LAB.replace("    file: step1.md\n", "    file: step1.md\n    hints:\n" + alias_bomb()))
    [problem] = refused(lab)
    assert problem.startswith(f"{lab / 'lab.yaml'}:")
    assert problem.endswith("the YAML holds more than 100000 values once its aliases are expanded")


def test_a_bomb_inside_a_check_is_refused_too(tmp_path):
    bomb = alias_bomb().replace("    - ", "      ")
    text = LAB + "judge:\n  - kind: command\n    run: 'true'\n    env:\n" + "".join(
        f"      k{n}: {line.strip()}\n" for n, line in enumerate(bomb.splitlines())
    )
    [problem] = refused(make_lab(tmp_path, text))
    assert "holds more than 100000 values once its aliases are expanded" in problem


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    lab = make_lab(tmp_path, LAB + "judge: &loop [{kind: command, run: 'true', env: *loop}]\n")
    assert refused(lab) == [f"{lab / 'lab.yaml'}:10: this anchored node contains an alias to itself"]


def test_a_chain_of_aliases_nesting_deeper_than_the_limit_is_refused(tmp_path):
    chain = "\n".join(f"    - &c{n} [*c{n - 1}]" for n in range(1, 60))
    lab = make_lab(tmp_path, LAB.replace("    file: step1.md\n", "    file: step1.md\n    hints:\n    - &c0 x\n"
                                         + chain + "\n"))
    [problem] = refused(lab)
    assert problem.endswith("the YAML nests more than 40 levels deep once its aliases are expanded")


def test_a_50_mb_step_file_is_refused_with_the_limit(tmp_path, settings):
    lab = make_lab(tmp_path, files={"step1.md": "x" * (50 * 1024 * 1024)})
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:9: steps[0].file: {lab / 'step1.md'} is 52428800 bytes; lab files may be at most "
        f"1048576 bytes (LAB_IMPORT_MAX_FILE_BYTES)"
    ]
    settings.LAB_IMPORT_MAX_FILE_BYTES = 60 * 1024 * 1024  # operators may raise it
    [outcome] = import_labs([lab])
    assert len(Lab.objects.get(pk=outcome.lab_id).steps.get().body) == 50 * 1024 * 1024


def test_every_file_the_importer_reads_is_held_to_the_limit(tmp_path, settings):
    settings.LAB_IMPORT_MAX_FILE_BYTES = 2048
    big = "# big\n" + "x" * 3000
    text = LAB.replace("steps:", "description_file: overview.md\nsteps:") + (
        "    solution_file: solution.txt\n"
        "    verify:\n"
        "      - kind: script\n"
        "        file: check.sh\n"
    )
    lab = make_lab(tmp_path, text, files={"overview.md": big, "solution.txt": big, "check.sh": big})
    problems = refused(lab)
    assert [problem.split(": ")[1] for problem in problems] == [
        "description_file", "steps[0].solution_file", "steps[0].verify[0].file",
    ]
    assert all("is 3006 bytes; lab files may be at most 2048 bytes" in problem for problem in problems)
    padded = text + "#" * 3000 + "\n"
    (lab / "lab.yaml").write_text(padded)
    assert refused(lab) == [f"{lab / 'lab.yaml'}: the file is {len(padded)} bytes; lab files may be at most 2048 "
                            f"bytes (LAB_IMPORT_MAX_FILE_BYTES)"]


def test_files_that_are_not_utf8_are_refused_with_their_line(tmp_path):
    lab = make_lab(tmp_path, LAB.encode().replace(b"A small lab", b"Caf\xe9"),
                   files={"step1.md": b"# One\n\nna\xefve\n"})
    assert refused(lab) == [f"{lab / 'lab.yaml'}:2: the file is not UTF-8 text (invalid continuation byte at line 2)"]
    (lab / "lab.yaml").write_text(LAB)
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:9: steps[0].file: {lab / 'step1.md'} is not UTF-8 text (invalid continuation byte "
        f"at line 3)"
    ]


def test_nul_characters_are_refused_in_files_and_in_escapes(tmp_path):
    lab = make_lab(tmp_path, files={"step1.md": "# One\n\nbefore\x00after\n"})
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:9: steps[0].file: {lab / 'step1.md'} contains a NUL character (line 3); lab files are text"
    ]
    (lab / "step1.md").write_text(STEP)
    (lab / "lab.yaml").write_text(LAB.replace("title: A small lab", 'title: "A \\0 lab"')
                                  + '    hints: ["\\x00"]\n')
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:2: title: contains a NUL character, which cannot be stored",
        f"{lab / 'lab.yaml'}:10: steps[0].hints: contains a NUL character, which cannot be stored",
    ]


def test_lone_surrogate_escapes_are_refused(tmp_path):
    lab = make_lab(tmp_path, LAB.replace("title: First step", 'title: "First \\ud800 step"'))
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:8: steps[0].title: contains a lone surrogate (an escape such as \\ud800), "
        f"which is not text"
    ]


def test_symbolic_links_out_of_the_lab_directory_are_refused(tmp_path):
    outside = tmp_path / "secret.md"
    outside.write_text("# the operator's secret\n")
    lab = make_lab(tmp_path)
    (lab / "step1.md").unlink()
    (lab / "step1.md").symlink_to(outside)
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:9: steps[0].file: must be a path inside the lab directory (got 'step1.md')"
    ]
    (lab / "step1.md").unlink()
    (lab / "step1.md").write_text(STEP)
    real_yaml = tmp_path / "elsewhere.yaml"
    real_yaml.write_text(LAB)
    (lab / "lab.yaml").unlink()
    (lab / "lab.yaml").symlink_to(real_yaml)
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}: the file leads outside the lab directory (through a symbolic link)"
    ]


def test_a_fifo_or_a_link_loop_as_a_step_file_is_refused_without_hanging(tmp_path):
    lab = make_lab(tmp_path)
    (lab / "step1.md").unlink()
    os.mkfifo(lab / "step1.md")
    assert refused(lab) == [f"{lab / 'lab.yaml'}:9: steps[0].file: file not found: {lab / 'step1.md'}"]
    (lab / "step1.md").unlink()
    (lab / "step1.md").symlink_to(lab / "loop.md")
    (lab / "loop.md").symlink_to(lab / "step1.md")
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:9: steps[0].file: must be a path inside the lab directory (got 'step1.md')"
    ]


def test_a_step_file_name_with_a_nul_byte_is_a_problem_not_a_crash(tmp_path):
    lab = make_lab(tmp_path, LAB.replace("file: step1.md", 'file: "step1.md\\0"'))
    assert refused(lab) == [
        f"{lab / 'lab.yaml'}:9: steps[0].file: must be a path inside the lab directory (got 'step1.md\\x00')"
    ]
