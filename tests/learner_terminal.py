"""A learner's terminal tab, driven over the real WebSocket of a running daphne.

    with LearnerTerminal.open(server_url, session_id, cookie) as terminal:
        result = terminal.run("ls -l")       # types the line, waits for it to finish
        assert result.status == 0, result.output

It speaks the page's protocol (consoles/consumers.py): waits for `ready`, sends
keystrokes as binary frames and acknowledges the output it reads, as the browser does. To know
when a command has finished and how it ended, `run` types one more line after it,
`echo "@@$?:<n>@@"`, and reads until the shell prints that marker with the command's exit status
(the typed line echoes as `@@$?:<n>@@`, which the pattern does not match). That works in bash
and in busybox's sh, on a container's tmux and on a VM's serial line alike.

Commands that open a pager (`less`) get the key the instructions name for leaving it (`q`) once
it has drawn; the marker is typed only after that, so the pager never reads it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")
PAGER = re.compile(r"(^|[|;&]\s*)less\b")


@dataclass
class CommandResult:
    command: str
    status: int
    output: str  # everything the terminal showed from the command line to the marker, escapes removed


class TerminalClosed(AssertionError):
    pass


class LearnerTerminal:
    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.transcript = bytearray()  # everything read, for failure messages
        self._count = 0

    @classmethod
    def open(cls, server_url: str, session_id: str, cookie: str, *, name: str = "1", cols: int = 200,
             rows: int = 50, timeout: float = 60.0) -> LearnerTerminal:
        ws_url = server_url.replace("http://", "ws://", 1)
        socket = connect(f"{ws_url}/ws/sessions/{session_id}/terminal/?name={name}&cols={cols}&rows={rows}",
                         additional_headers={"Cookie": cookie}, origin=server_url, open_timeout=timeout,
                         max_size=None)
        terminal = cls(socket.__enter__())  # the connection is closed by close(), as its context would
        deadline = time.monotonic() + timeout
        while True:
            message = terminal._receive(deadline)
            if isinstance(message, str):
                data = json.loads(message)
                if data.get("type") == "ready":
                    return terminal
                raise AssertionError(f"the terminal answered {data} instead of ready")

    def __enter__(self) -> LearnerTerminal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    # ---- reading -------------------------------------------------------------------------------
    def _receive(self, deadline: float) -> str | bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            message = self.socket.recv(timeout=remaining)
        except ConnectionClosed as exc:
            raise TerminalClosed(f"the terminal closed ({exc}); last output:\n{self.tail()}") from None
        if isinstance(message, bytes):
            self.transcript += message
            # Acknowledge what was read, as the page does once it has rendered it: the server stops
            # reading the shell when too much is unacknowledged.
            self.socket.send(json.dumps({"type": "ack", "bytes": len(message)}))
        return message

    def read_until(self, pattern: re.Pattern[bytes], timeout: float) -> tuple[bytes, re.Match[bytes]]:
        """Read output until `pattern` matches it (escape sequences removed); return all of it."""
        deadline = time.monotonic() + timeout
        seen = b""
        while True:
            found = pattern.search(ANSI.sub(b"", seen))
            if found:
                return seen, found
            try:
                message = self._receive(deadline)
            except TimeoutError:
                raise AssertionError(f"{pattern.pattern!r} did not appear within {timeout:g} s; "
                                     f"last output:\n{self.tail()}") from None
            if isinstance(message, bytes):
                seen += message

    def read_quiet(self, quiet: float, timeout: float) -> bytes:
        """Read until nothing has arrived for `quiet` seconds (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            try:
                message = self._receive(min(deadline, time.monotonic() + quiet))
            except TimeoutError:
                if seen:
                    return seen
                continue
            if isinstance(message, bytes):
                seen += message
        return seen

    def tail(self, size: int = 2000) -> str:
        return ANSI.sub(b"", bytes(self.transcript[-size:])).decode(errors="replace")

    # ---- typing --------------------------------------------------------------------------------
    def type(self, text: str) -> None:
        self.socket.send(text.encode())

    def run(self, command: str, timeout: float = 120.0) -> CommandResult:
        """Type `command` (one line, or lines joined by trailing backslashes) and wait for it to end."""
        self._count += 1
        number = self._count
        self.type(command + "\n")
        output = b""
        if PAGER.search(command):
            output += self.read_quiet(quiet=1.0, timeout=15)  # the pager has drawn its first screen
            self.type("q")
        self.type(f'echo "@@$?:{number}@@"\n')
        seen, found = self.read_until(re.compile(rb"@@(\d+):" + str(number).encode() + rb"@@"), timeout)
        output += seen
        text = ANSI.sub(b"", output).decode(errors="replace")
        return CommandResult(command=command, status=int(found.group(1)), output=text)

    def wait_for(self, text: str, timeout: float = 120.0, *, every: float = 2.0, send: str = "\n") -> str:
        """Until `text` appears, press Enter every `every` seconds (a console that printed its prompt
        before we connected shows a fresh one only when asked, as the lab's text tells the learner)."""
        deadline = time.monotonic() + timeout
        seen = b""
        needle = text.encode()
        while needle not in ANSI.sub(b"", seen):
            if time.monotonic() >= deadline:
                raise AssertionError(f"{text!r} did not appear within {timeout:g} s; last output:\n{self.tail()}")
            self.type(send)
            seen += self.read_quiet(quiet=every, timeout=every)
        return ANSI.sub(b"", seen).decode(errors="replace")
