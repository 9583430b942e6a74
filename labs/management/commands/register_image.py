"""`manage.py register_image NAME PATH`: register a VM disk or ISO that is already on the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labs.vm_images import ALLOWED_FORMATS, ImageRejected, register_file


class Command(BaseCommand):
    help = (
        "Register a VM image file already on the server (for images too large to upload). The file is "
        "copied into LAB_VM_IMAGE_DIR/NAME-SHA/ while being hashed (or hard-linked with --link), checked exactly "
        "like an admin upload, stored read-only and activated. A disk named disk.qcow2, disk.raw or disk.img "
        "brings the vmlinuz, initrd.img and cmdline beside it along (booted with that kernel by the QEMU runner). "
        "Running it again with the same name and file changes nothing; a taken name with different contents is "
        "refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Image name (a slug), as labs refer to it.")
        parser.add_argument("path", type=Path, help="The qcow2, raw or ISO file.")
        parser.add_argument(
            "--format", choices=ALLOWED_FORMATS, dest="disk_format",
            help="Declared format; the file must really be in it. Default: what the file's header says.",
        )
        parser.add_argument("--description", default=None, help="Shown to staff in the admin.")
        parser.add_argument(
            "--link", action="store_true",
            help="Hard-link instead of copying (same filesystem only). Only for a file owned by the platform's "
                 "user and writable by nobody else (anyone who could write it could change the base after it is "
                 "checked). The link shares the original's inode, so the original becomes read-only too.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            outcome = register_file(
                options["name"], options["path"], options["disk_format"], options["description"], link=options["link"]
            )
        except ImageRejected as exc:
            raise CommandError(f"{options['path']}: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(outcome.message))
