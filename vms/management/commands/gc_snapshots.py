"""`manage.py gc_snapshots`: expire old snapshots and bring files, rows and quota counters back in line."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from vms.snapshots import collect_garbage


class Command(BaseCommand):
    help = (
        "Garbage-collect VM snapshots: fail snapshots whose job died, delete expired ones "
        "(LAB_SNAPSHOT_MAX_AGE_DAYS) and those beyond LAB_SNAPSHOT_KEEP_PER_USER, drop rows whose files are "
        "gone and files that have no row, and set every user's stored bytes to what their snapshots hold. "
        "Snapshots a live session boots from are kept. Idempotent; safe to run while the site is up."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", type=int, default=0, metavar="SECONDS", help="Repeat every SECONDS.")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            report = collect_garbage()
            self.stdout.write(report.summary())
            for line in report.counters_fixed:
                self.stdout.write(f"  counter fixed: {line}")
            if not options["loop"]:
                return
            time.sleep(options["loop"])
