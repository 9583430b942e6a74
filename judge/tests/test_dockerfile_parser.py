"""The Dockerfile parser: lines, continuations, comments, forms, flags and stages."""

from __future__ import annotations

from judge.checks.dockerfile_parser import copy_sources, env_pairs, parse, shell_commands

MULTI_STAGE = """\
# syntax=docker/dockerfile:1
ARG PY=3.11
FROM labs/python:${PY} AS build
RUN python -m venv /opt/venv \\
    # a comment inside a continuation is dropped
    && /opt/venv/bin/pip install --no-cache-dir \\

       -r requirements.txt
COPY --chown=1000:1000 requirements.txt ./

FROM labs/python:${PY}-slim as Runtime
COPY --from=build /opt/venv /opt/venv
CMD ["python", "app.py"]
"""


def test_stages_are_found_with_names_bases_and_argument_substitution():
    dockerfile = parse(MULTI_STAGE)
    assert dockerfile.errors == []
    assert [(s.base, s.name) for s in dockerfile.stages] == [("labs/python:3.11", "build"),
                                                             ("labs/python:3.11-slim", "Runtime")]
    assert dockerfile.final_stage is dockerfile.stages[1]
    assert dockerfile.stage_named("runtime") is dockerfile.stages[1]
    assert dockerfile.stage_named("0") is dockerfile.stages[0]


def test_continuations_join_lines_and_skip_comments_and_blank_lines():
    run = parse(MULTI_STAGE).stages[0].instructions[0]
    assert run.keyword == "RUN"
    assert (run.line, run.end_line) == (4, 8)
    assert run.args == ("python -m venv /opt/venv     && /opt/venv/bin/pip install --no-cache-dir "
                        "       -r requirements.txt")


def test_flags_and_the_exec_form_are_separated_from_the_arguments():
    build, runtime = parse(MULTI_STAGE).stages
    copy = build.instructions[1]
    assert copy.flag("chown") == "1000:1000"
    assert copy_sources(copy) == (["requirements.txt"], "./")
    assert runtime.instructions[0].flag("from") == "build"
    cmd = runtime.instructions[1]
    assert cmd.exec_form and cmd.json_args == ["python", "app.py"]


def test_the_shell_form_stays_a_string_and_broken_json_falls_back_to_it():
    dockerfile = parse('FROM x\nCMD python app.py\nENTRYPOINT ["python", app.py]\n')
    cmd, entrypoint = dockerfile.stages[0].instructions
    assert not cmd.exec_form and cmd.args == "python app.py"
    assert not entrypoint.exec_form


def test_a_stage_built_from_an_earlier_stage_knows_its_parent():
    dockerfile = parse("FROM labs/python:3.11 AS base\nUSER app\nFROM base AS test\nRUN true\nFROM base\n")
    assert [s.parent for s in dockerfile.stages] == [None, 0, 0]
    assert dockerfile.root_base(dockerfile.stages[2]) == "labs/python:3.11"
    assert [s.index for s in dockerfile.final_chain()] == [0, 2]


def test_the_escape_directive_changes_the_continuation_character():
    dockerfile = parse("# escape=`\nFROM x\nRUN echo a `\n    b\n")
    assert dockerfile.escape == "`"
    assert dockerfile.stages[0].instructions[0].args == "echo a     b"


def test_heredocs_are_collected_with_their_instruction():
    dockerfile = parse("FROM x\nRUN <<EOF\npip install flask\nEOF\nUSER app\n")
    run, user = dockerfile.stages[0].instructions
    assert run.heredocs == [("EOF", "pip install flask")]
    assert "pip install flask" in run.command_text()
    assert (user.keyword, user.line) == ("USER", 5)


def test_problems_are_reported_with_their_lines_instead_of_raised():
    dockerfile = parse("RUN echo early\nFRUM x\n")
    messages = [str(error) for error in dockerfile.errors]
    assert messages == ["line 2: unknown instruction 'FRUM'",
                        "line 1: RUN before the first FROM (only ARG may come before it)",
                        "line 1: no FROM instruction: a Dockerfile must start from an image"]


def test_env_is_read_in_both_forms():
    dockerfile = parse('FROM x\nENV A=1 B="two words"\nENV LEGACY value with spaces\n')
    modern, legacy = dockerfile.stages[0].instructions
    assert env_pairs(modern) == {"A": "1", "B": "two words"}
    assert env_pairs(legacy) == {"LEGACY": "value with spaces"}


def test_shell_text_is_split_into_simple_commands():
    assert shell_commands("apt-get update && pip install -r r.txt; rm -rf /root/.cache | cat") == [
        ["apt-get", "update"], ["pip", "install", "-r", "r.txt"], ["rm", "-rf", "/root/.cache"], ["cat"],
    ]
