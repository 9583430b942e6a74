"""A session's container output as the engine logged it (`docker logs --timestamps`), read after a
cursor: what Runner.output returns for the Docker runner (its containers) and the Docker-VM runner
(QEMU's container).

The cursor is the engine's timestamp of the last line returned, in seconds since the epoch. It is a
float, so lines less than about a quarter of a microsecond apart share one, and a read that ends
between two such lines skips the second. Every read is bounded: at most `max_bytes` per call (one
longer line is returned whole), so a chatty container is read in pieces, never all at once. The
engine stores lines, so a prompt without a newline shows once its line ends.
"""

from __future__ import annotations

import calendar
import math
import time
from typing import Any

# How far back a first read (no cursor) looks, per container; then trimmed to max_bytes.
TAIL_LINES = 1000

Line = tuple[float, bytes]


def stamp_seconds(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp as the engine writes it
    ("2024-05-01T12:34:56.123456789Z", trailing zeros of the fraction dropped, maybe no fraction)."""
    if not stamp.endswith("Z"):
        raise ValueError(f"not a UTC timestamp: {stamp!r}")
    whole, _, fraction = stamp[:-1].partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    if fraction and not fraction.isdigit():
        raise ValueError(f"not a timestamp: {stamp!r}")
    return seconds + (int(fraction[:9].ljust(9, "0")) / 1e9 if fraction else 0.0)


def parse_line(raw: bytes) -> Line | None:
    """(timestamp, text with its newline) of one logged line; None for anything else (an empty
    fragment between two newlines)."""
    stamp, sep, text = raw.partition(b" ")
    if not sep:
        return None
    try:
        return stamp_seconds(stamp.decode("ascii")), text + b"\n"
    except (UnicodeDecodeError, ValueError):
        return None


def _lines(chunks: Any) -> Any:
    """Logged lines from the engine's chunks (frames of a non-TTY container, raw bytes of a TTY one)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = parse_line(raw)
            if line is not None:
                yield line
    if pending:
        line = parse_line(pending)
        if line is not None:
            yield line


def container_lines(api: Any, container_id: str, since: float | None, max_bytes: int) -> tuple[list[Line], bool]:
    """One container's lines after `since` (its newest TAIL_LINES when None), and whether more were
    left unread because `max_bytes` was reached. Raises what the Docker SDK raises."""
    if since is None:
        raw = api.logs(container_id, stdout=True, stderr=True, timestamps=True, tail=TAIL_LINES)
        return list(_lines([raw])), False
    # The engine includes lines stamped exactly `since` (the last one already returned): skipped below.
    stream = api.logs(container_id, stdout=True, stderr=True, timestamps=True, since=since, stream=True,
                      follow=False)
    lines: list[Line] = []
    size = 0
    try:
        for line in _lines(stream):
            if line[0] <= since:
                continue
            if size >= max_bytes:
                return lines, True
            lines.append(line)
            size += len(line[1])
    finally:
        stream.close()
    return lines, False


def session_output(
    api: Any, sources: list[tuple[str, str]], since: float | None, max_bytes: int
) -> tuple[bytes, float | None]:
    """The lines of several containers after `since`, in time order, each but the first source's
    marked "[label] "; `sources` are (label, container id), the learner's container first with label
    "". Returns the bytes and the new cursor (Runner.output)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    merged: list[Line] = []
    # A container read only in part bounds what may be returned: its unread lines come after it.
    bound = math.inf
    for label, container_id in sources:
        lines, more = container_lines(api, container_id, since, max_bytes)
        if more:
            bound = min(bound, lines[-1][0])
        mark = f"[{label}] ".encode() if label else b""
        merged += [(stamp, mark + text) for stamp, text in lines]
    merged = sorted((line for line in merged if line[0] <= bound), key=lambda line: line[0])
    picked: list[Line] = []
    size = 0
    # First read: the newest lines that fit. Later reads: the oldest after the cursor.
    for line in reversed(merged) if since is None else merged:
        if picked and size + len(line[1]) > max_bytes:
            break
        picked.append(line)
        size += len(line[1])
    if since is None:
        picked.reverse()
    if not picked:
        return b"", since
    return b"".join(text for _, text in picked), picked[-1][0]
