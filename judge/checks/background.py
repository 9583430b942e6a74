"""Run a long command in the session and stream its output, with nothing but ``runner.exec``.

The runner contract has no streaming exec. So the command is started detached (its own
session via setsid, output to a log file in a fresh private directory under /tmp), and the
platform polls: each poll is one short exec that says whether the command has finished and
returns the log bytes written since the last poll.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable

from judge.checks.base import CheckContext, JudgeError, text_of

# $1: workdir; the rest: the command. Prints the private directory's path.
START = r"""
d=$(mktemp -d /tmp/labs-judge-run.XXXXXX) || exit 90
cd "$1" || { echo "cannot enter $1" >&2; exit 91; }
shift
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=; fi
$detach sh -c 'echo $$ > "$0/pid"; "$@" > "$0/log" 2>&1; echo $? > "$0/rc.tmp"; mv "$0/rc.tmp" "$0/rc"' \
    "$d" "$@" < /dev/null > /dev/null 2>&1 &
echo "$d"
"""
# $1: directory, $2: bytes already read. First line: "done RC" or "running"; then new log bytes.
POLL = r"""
if [ -f "$1/rc" ]; then echo "done $(cat "$1/rc")"; else echo running; fi
tail -c +$(($2 + 1)) "$1/log" 2>/dev/null | head -c 1048576
"""
STOP = r"""
if [ ! -f "$1/rc" ] && pid=$(cat "$1/pid" 2>/dev/null); then
    kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"
"""


class BackgroundResult:
    def __init__(self, exit_code: int | None, output: str, elapsed: float, timed_out: bool) -> None:
        self.exit_code = exit_code
        self.output = output
        self.elapsed = elapsed
        self.timed_out = timed_out


def run_streaming(ctx: CheckContext, command: list[str], *, user: str | None, workdir: str, timeout: float,
                  on_output: Callable[[str], None], environment: dict[str, str] | None = None,
                  interval: float = 0.5) -> BackgroundResult:
    """Run ``command`` (as the exec user ``user``) and feed its output to ``on_output`` as it comes."""
    started = time.monotonic()
    result = ctx.exec(["sh", "-c", START, "sh", workdir, *command], timeout=15, user=user, resolved=True,
                      environment=environment)
    directory = text_of(result.stdout).strip()
    # A path inside the session, made by its mktemp (not a file on this machine).
    if not result.ok or not directory.startswith("/tmp/labs-judge-run."):  # noqa: S108
        raise JudgeError(f"cannot start a command in the session: {text_of(result.stderr).strip()}")
    offset = 0
    chunks: list[str] = []
    # Decode across polls: one may end in the middle of a UTF-8 sequence.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    exit_code: int | None = None
    timed_out = False
    try:
        while True:
            poll = ctx.exec(["sh", "-c", POLL, "sh", directory, str(offset)], timeout=15, user=user, resolved=True)
            head, _, data = poll.stdout.partition(b"\n")
            offset += len(data)
            text = decoder.decode(data)
            if text:
                chunks.append(text)
                on_output(text)
            status = head.decode(errors="replace").split()
            if status[:1] == ["done"]:
                exit_code = int(status[1]) if len(status) > 1 and status[1].lstrip("-").isdigit() else 1
                break
            if time.monotonic() - started > timeout:
                timed_out = True
                break
            time.sleep(interval)
    finally:
        try:
            ctx.exec(["sh", "-c", STOP, "sh", directory], timeout=15, user=user, resolved=True)
        except JudgeError:
            pass
    return BackgroundResult(exit_code, "".join(chunks), time.monotonic() - started, timed_out)
