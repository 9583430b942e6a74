"""The code blocks of a step's markdown, in the order a learner meets them.

Shell blocks (`bash`, `sh`, `shell`, and the click-to-run `exec` blocks) are what the learner
types: each becomes a list of command lines (a line ending in a backslash continues on the next;
blank lines and whole-line comments are left out). Every other block (`dockerfile`, `python`,
`text`, ...) is something to read or to put into a file, which only the lab's own test can tell.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "exec", "exec-interrupt"})
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<language>[\w+#.-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    index: int  # position among the step's blocks, from 0
    language: str
    text: str

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    def commands(self) -> list[str]:
        assert self.is_shell, f"block {self.index} is {self.language!r}, not a shell block"
        commands: list[str] = []
        pending = ""
        for line in self.text.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line + "\n"
            if not line.endswith("\\"):
                commands.append(pending.rstrip("\n"))
                pending = ""
        assert not pending, f"block {self.index} ends in a continued line"
        return commands


def blocks(markdown: str) -> list[Block]:
    return [Block(index, match["language"].lower(), match["body"])
            for index, match in enumerate(FENCE.finditer(markdown))]
