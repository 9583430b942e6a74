"""A VM's serial console log: the file QEMU appends everything the guest prints on ttyS0 to (the
chardev's `logfile`, opened with O_APPEND), whether or not a terminal is attached. Staff follow it
through Runner.output; nothing in the guest can write anywhere else with it.

The cursor is a byte offset into the file. The file is kept under a cap: past it, `trim` cuts the
oldest part and keeps the newest quarter after a notice line. A reader whose cursor then lies past
the end starts again from the beginning of what was kept (and may see some lines twice, below the
notice); a reader that looks only after the file has grown past its cursor again misses the cut part.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

TRIM_NOTICE = b"\r\n--- [serial log trimmed: older output removed] ---\r\n"


def read(path: Path, since: float | None, max_bytes: int) -> tuple[bytes, float | None]:
    """The bytes after offset `since` (the newest `max_bytes` when None), at most `max_bytes`, and
    the offset after them. No file yet: nothing, and the cursor unchanged. OSError if unreadable."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if since is None:
                start = max(0, size - max_bytes)
            else:
                start = int(since)
                if start > size:
                    start = 0  # cut since the last read (trim): what is left is all new to this reader
            handle.seek(start)
            data = handle.read(min(max_bytes, size - start))
    except FileNotFoundError:
        return b"", since
    return data, float(start + len(data))


def trim(path: Path, limit: int) -> bool:
    """Keep the file under `limit` bytes: once past it, only its newest quarter stays, after
    TRIM_NOTICE. Whether it cut anything. QEMU keeps appending through its own descriptor; a few
    bytes the guest prints during the cut may be lost or land before the kept part."""
    try:
        if path.stat().st_size <= limit:
            return False
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two readers trimming at once would cut twice
        size = os.fstat(fd).st_size
        if size <= limit:
            return False
        keep = max(limit // 4, 0)
        tail = os.pread(fd, keep, size - keep) if keep else b""
        os.ftruncate(fd, 0)
        os.write(fd, TRIM_NOTICE + tail)  # O_APPEND: after anything QEMU wrote since the truncate
        return True
    finally:
        os.close(fd)
