"""Load the real settings module in a fresh interpreter under a controlled environment.

Settings are read once per process, so every variation needs its own interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _run(code: str, unset: Iterable[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    removed = set(unset)
    environment = {k: v for k, v in os.environ.items() if k not in removed}
    environment.update({"DJANGO_SETTINGS_MODULE": "labsite.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, cwd=BASE_DIR,
        capture_output=True, text=True, timeout=60, check=False,
    )


def settings_value(name: str, *, unset: Iterable[str] = (), **env: str) -> subprocess.CompletedProcess[str]:
    """Print one setting (`name` may index into it: "DATABASES['default']") with `env` set and
    the variables in `unset` removed from this process's environment."""
    return _run(f"from django.conf import settings; print(settings.{name})", unset, env)


def settings_values(*names: str, unset: Iterable[str] = (), **env: str) -> dict[str, object]:
    """Several settings at once, as JSON values; fails with the child's stderr if loading failed."""
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {list(names)!r}}}, default=str))"
    )
    result = _run(code, unset, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
