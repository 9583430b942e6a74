"""The .dockerignore matcher follows Docker's rules: cleaned patterns, **, parents, ! exceptions."""

from __future__ import annotations

from judge.checks.dockerignore import is_excluded, parse_dockerignore

LAB_IGNORE = """
# comments and blank lines are ignored
.git
**/__pycache__
*.env
notes/
/.venv
*.md
!README.md
"""


def excluded(path: str, text: str = LAB_IGNORE) -> bool:
    return is_excluded(path, parse_dockerignore(text))


def test_a_directory_pattern_excludes_everything_below_it():
    assert excluded(".git/config")
    assert excluded("notes/todo.md")
    assert excluded(".venv/bin/python")


def test_double_star_matches_any_depth_including_none():
    assert excluded("__pycache__/app.cpython-311.pyc")
    assert excluded("pkg/sub/__pycache__/x.pyc")


def test_a_single_star_stays_within_one_directory():
    assert excluded("local.env")
    assert not excluded("config/local.env")


def test_a_later_exception_re_includes_a_file():
    assert excluded("CHANGES.md")
    assert not excluded("README.md")


def test_files_no_pattern_names_stay_in_the_context():
    assert not excluded("app.py")
    assert not excluded("requirements.txt")


def test_an_allow_list_excludes_everything_but_its_exceptions():
    allow = "*\n!app.py\n!requirements.txt\n"
    assert excluded("local.env", allow)
    assert not excluded("app.py", allow)


def test_character_classes_and_escapes_work():
    assert excluded("data1.csv", "data[0-9].csv")
    assert not excluded("dataX.csv", "data[0-9].csv")
    assert excluded("star*.txt", "star\\*.txt")
    assert not excluded("starry.txt", "star\\*.txt")
