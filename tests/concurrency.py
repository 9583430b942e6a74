"""Running one piece of code in several threads at the same instant, for race tests on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def at_once(func: Callable[[], Any], count: int = 2, timeout: float = 60) -> list[Any]:
    """Call `func` in `count` threads released together; return what the calls returned (in the
    order they finished). Each thread closes its own database connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(func())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results
