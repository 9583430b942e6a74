"""Follow a lab's steps as written, as its learner, and hold each step's check to its word.

For each step, in order: press Check and see it fail (the step is not done yet), do what the
step's text says, press Check and see it pass. What the learner does comes from the step's
markdown (step_text.py): shell blocks are typed into the terminal line by line, and every
other block is either put into a file through the editor, the way the step's prose says, or
only read. A `Walkthrough` holds just that knowledge about a lab's blocks, plus the commands
the text itself says will fail; every block must be accounted for, so a new block in a step
cannot slip past the test unread.

A step without checks must say so in its text (NO_CHECK), and Check must refuse it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from judge.models import Attempt
from labs.models import Lab, LabStep
from tests.e2e.learner_client import LearnerClient, verdict
from tests.e2e.step_text import blocks
from tests.learner_terminal import LearnerTerminal

NO_CHECK = "This step has no check"


@dataclass(frozen=True)
class Edit:
    """Put a block into `path` through the editor: `change(file text, block text)` is the new text."""

    path: str
    change: Callable[[str, str], str]


@dataclass(frozen=True)
class ReadOnly:
    """A block the learner only reads (expected output, an example not to type)."""

    why: str


@dataclass
class Walkthrough:
    blocks: dict[tuple[int, int], Edit | ReadOnly] = field(default_factory=dict)  # (step order, block index)
    failing: dict[str, str] = field(default_factory=dict)  # command -> where the text says it fails
    # (step order, block index, command) -> a regular expression for what the text says it prints,
    # searched in the command line's echo and output with every run of whitespace made one space
    outputs: dict[tuple[int, int, str], str] = field(default_factory=dict)
    timeouts: dict[str, float] = field(default_factory=dict)  # command prefix -> seconds
    last_command: str = ""  # a command that ends the session (the machine powers off): typed, not awaited

    def timeout_for(self, command: str) -> float:
        return max([seconds for prefix, seconds in self.timeouts.items() if command.startswith(prefix)],
                   default=120.0)


# ---- edits the steps describe ---------------------------------------------------------------------


def whole_file(text: str, block: str) -> str:
    return block


def append(text: str, block: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text.strip() else "") + block


def append_line(text: str, block: str) -> str:
    return (text if not text or text.endswith("\n") else text + "\n") + block


def insert_before(line: str) -> Callable[[str, str], str]:
    """Insert the block before the first line matching the regular expression `line`."""
    def change(text: str, block: str) -> str:
        found = re.search(line, text, re.MULTILINE)
        assert found, f"no line /{line}/ to insert before in:\n{text}"
        return text[:found.start()] + block + text[found.start():]
    return change


def insert_after(line: str) -> Callable[[str, str], str]:
    def change(text: str, block: str) -> str:
        found = re.search(line + r".*\n", text, re.MULTILINE)
        assert found, f"no line /{line}/ to insert after in:\n{text}"
        return text[:found.end()] + block + text[found.end():]
    return change


def replace_lines(first: str, last: str) -> Callable[[str, str], str]:
    """Replace the lines from the first matching `first` through the next matching `last`."""
    def change(text: str, block: str) -> str:
        start = re.search(first, text, re.MULTILINE)
        assert start, f"no line /{first}/ in:\n{text}"
        end = re.compile(last + r".*\n", re.MULTILINE).search(text, start.start())
        assert end, f"no line /{last}/ after /{first}/ in:\n{text}"
        return text[:start.start()] + block + text[end.end():]
    return change


def then(*changes: Callable[[str, str], str]) -> Callable[[str, str], str]:
    def change(text: str, block: str) -> str:
        for each in changes:
            text = each(text, block)
        return text
    return change


def replace_text(old: str, new: str) -> Callable[[str, str], str]:
    """An edit the prose describes without a block of its own."""
    def change(text: str, block: str) -> str:
        assert old in text, f"{old!r} is not in:\n{text}"
        return text.replace(old, new, 1)
    return change


# ---- following the steps -----------------------------------------------------------------------


@dataclass
class Learner:
    client: LearnerClient
    terminal: LearnerTerminal
    session_id: str
    walkthrough: Walkthrough
    used: set[object] = field(default_factory=set)  # the walkthrough's entries met in the text

    def follow(self, step: LabStep) -> None:
        """Do what the step's text says, block by block."""
        step_blocks = blocks(step.body)
        assert step_blocks, f"step {step.order} has nothing to do"
        for block in step_blocks:
            action = self.walkthrough.blocks.get((step.order, block.index))
            self.used.add((step.order, block.index))
            where = f"step {step.order} ({step.title}), block {block.index} ({block.language})"
            if isinstance(action, ReadOnly):
                continue
            if isinstance(action, Edit):
                self.client.edit_file(self.session_id, action.path,
                                      lambda text, a=action, b=block: a.change(text, b.text))
                continue
            assert block.is_shell, f"{where}: the test does not know what the learner does with it:\n{block.text}"
            for command in block.commands():
                self.type(command, where, expected=self.walkthrough.outputs.get((step.order, block.index, command)))
                self.used.add((step.order, block.index, command))

    def type(self, command: str, where: str, expected: str | None = None) -> None:
        if command == self.walkthrough.last_command:
            self.used.add(command)
            self.terminal.type(command + "\n")
            return
        self.used.add(command)
        result = self.terminal.run(command, timeout=self.walkthrough.timeout_for(command))
        if command in self.walkthrough.failing:
            assert result.status != 0, f"{where}: `{command}` should fail ({self.walkthrough.failing[command]}):\n" \
                                       f"{result.output}"
        else:
            assert result.status == 0, f"{where}: `{command}` exited with {result.status}:\n{result.output}"
        # Compared with its whitespace collapsed: how a screen redraw splits lines is not the command's doing.
        if expected is not None:
            assert re.search(expected, " ".join(result.output.split())), \
                f"{where}: `{command}` did not print what the text says (/{expected}/):\n{result.output}"

    def check(self, step: LabStep) -> tuple[str, Attempt]:
        box, attempt = self.client.check_step(self.session_id, step.pk)
        assert attempt is not None, f"step {step.order}: Check made no attempt:\n{box[:2000]}"
        assert attempt.status == Attempt.Status.DONE, (step.order, verdict(attempt))
        return box, attempt


def walk(lab: Lab, learner: Learner) -> None:
    """Every step in order: its check fails, the learner follows the text, its check passes."""
    steps = list(lab.steps.order_by("order"))
    assert steps
    for step in steps:
        if step.verify:
            box, attempt = learner.check(step)
            assert attempt.passed is False, f"step {step.order} passes before the learner did it: {verdict(attempt)}"
            assert "Not yet." in box
            for failure in attempt.result["failures"]:
                assert failure["message"] and failure["hint"], (step.order, failure)
        else:
            assert NO_CHECK in step.body, f"step {step.order} has no check and does not say so"
            box, attempt = learner.client.check_step(learner.session_id, step.pk)
            assert attempt is None and "Check this step" not in box, box
        learner.follow(step)
        if step.verify:
            box, attempt = learner.check(step)
            assert attempt.passed is True, f"step {step.order} ({step.title}) fails as written: {verdict(attempt)}"
            assert "Passed." in box and "✓ Step passed" in box
    walkthrough = learner.walkthrough
    named = {*walkthrough.blocks, *walkthrough.failing, *walkthrough.outputs, walkthrough.last_command} - {""}
    stale = named - learner.used
    assert not stale, f"the walkthrough names blocks or commands the steps no longer have: {stale}"
    if lab.judge:
        box, attempt = learner.client.check_final(learner.session_id)
        assert attempt is not None, box
        assert attempt.passed is True, f"the final check fails: {verdict(attempt)}"
        assert "Passed." in box
