"""The terminal part of the hint context, read from the session's asciinema recordings."""

from __future__ import annotations

from judge.hints.answers import terminal_context
from judge.tests.hint_fixtures import record_terminal, session  # noqa: F401


def test_typed_lines_are_used_when_the_cast_has_input(session, settings, tmp_path):  # noqa: F811
    events = [[0.1, "o", "$ "]]
    events += [[0.2 + i, "i", f"echo {i}\r"] for i in range(25)]
    events += [[30.0, "i", "lsx\x7f\r"], [31.0, "i", "\x1b[A\r"]]
    record_terminal(session, events, settings, tmp_path)
    context = terminal_context(session)
    assert context["kind"] == "commands"
    lines = context["text"].splitlines()
    assert len(lines) == 20
    assert lines[-2:] == ["echo 24", "ls"]  # the backspace is applied; the arrow key is dropped


def test_the_output_tail_is_used_when_only_output_was_recorded(session, settings, tmp_path):  # noqa: F811
    events = [[0.1 * i, "o", f"\x1b[32mline {i}\x1b[0m\r\n"] for i in range(100)]
    events.append([20.0, "o", "progress 10%\rprogress 100%\r\n"])
    record_terminal(session, events, settings, tmp_path)
    context = terminal_context(session)
    assert context["kind"] == "output"
    lines = context["text"].splitlines()
    assert lines[-1] == "progress 100%" and lines[-2] == "line 99"
    assert "\x1b" not in context["text"] and len(lines) == 40


def test_no_recording_means_no_terminal_context(session):  # noqa: F811
    assert terminal_context(session) is None
