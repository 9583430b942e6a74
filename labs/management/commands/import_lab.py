"""`manage.py import_lab PATH...`: create or update labs from lab directories (labs as code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labs.labformat import LabImportError, import_labs


class Command(BaseCommand):
    help = (
        "Create or update labs from lab directories (lab.yaml plus step markdown; see labs/LAB_FORMAT.md). "
        "A path may be a lab directory or a catalog whose subdirectories are labs. Everything is checked "
        "before anything is written, and all labs are imported in one transaction or not at all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="Lab directory or catalog directory.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and report what would change, then roll everything back."
        )
        parser.add_argument(
            "--allow-privileged", action="store_true",
            help="Accept what only staff may grant (network_mode unrestricted, runners outside LAB_IMPORT_RUNNERS, "
                 "resources over LAB_IMPORT_RESOURCE_LIMITS, VM disk paths): say so only after reviewing the labs. "
                 "See labs/LAB_FORMAT.md, \"Privileged settings\".",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run: bool = options["dry_run"]
        try:
            outcomes = import_labs(options["paths"], dry_run=dry_run, allow_privileged=options["allow_privileged"])
        except LabImportError as exc:
            raise CommandError(str(exc)) from exc
        for outcome in outcomes:
            line = outcome.describe()
            self.stdout.write(self.style.SUCCESS(f"{line} [dry run]" if dry_run else line))
            for note in outcome.notes:
                self.stdout.write(self.style.WARNING(f"  {note}"))
