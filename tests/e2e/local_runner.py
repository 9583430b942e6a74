"""The local (bubblewrap) runner for a live server: a real shell and workspace without a container.

Its sessions mount a disk image each (runners/disks.py), so every one of them is
removed when the test ends, whatever the test did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners.local import LocalRunner


@contextlib.contextmanager
def local_runner_for_server(root: Path) -> Iterator[dict[str, Any]]:
    """LAB_RUNNERS entries naming the runner "local", its sessions under `root`."""
    options = {"root": str(root)}
    try:
        yield {"local": {"BACKEND": "runners.local.LocalRunner", "OPTIONS": options}}
    finally:
        runner = LocalRunner("local", options)
        for env in runner.list_managed():
            runner.remove_managed(env)
