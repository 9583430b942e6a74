"""Make sure a superuser exists; safe to run at every start.

    manage.py ensure_admin --username admin [--email E] [--password-file PATH] [--reset]

The first run creates the account with a random password and prints
`Admin account: admin / <password>`. Later runs leave the account alone and print no password,
unless --reset is given. With --password-file, an existing non-empty file supplies the password
(a mounted secret, say); a missing or empty one receives the generated password, readable by
the owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

PASSWORD_BYTES = 18  # 24 URL-safe characters, about 144 bits


class Command(BaseCommand):
    help = "Create the superuser if it is missing (printing its generated password once); idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="Superuser to ensure (default: admin).")
        parser.add_argument("--email", default="", help="Email address for a newly created superuser.")
        parser.add_argument(
            "--password-file",
            type=Path,
            help="Read the password from this file; a missing or empty file receives the generated one.",
        )
        parser.add_argument(
            "--reset", action="store_true", help="Set a new password even if the account already exists."
        )

    def handle(self, *args: Any, username: str, email: str, password_file: Path | None, reset: bool,
               **options: Any) -> None:
        username = username.strip()
        if not username:
            raise CommandError("--username must not be empty.")
        user_model = get_user_model()
        with transaction.atomic():
            existing = (
                user_model._default_manager.select_for_update()
                .filter(**{f"{user_model.USERNAME_FIELD}__iexact": username})
                .first()
            )
            if existing is not None and not (existing.is_superuser and existing.is_staff):
                # Never promote an account someone else may have signed up with.
                raise CommandError(
                    f"User {existing.get_username()!r} exists but is not a superuser; "
                    "choose another --username or promote that account yourself."
                )
            if existing is not None and not reset:
                self.stdout.write(
                    f"Admin account: {existing.get_username()} already exists; password unchanged "
                    "(use --reset to set a new one)."
                )
                return
            password, source = self._password(password_file)
            if existing is None:
                user = user_model._default_manager.create_superuser(username, email or "", password)
                verb = "Created"
            else:
                user = existing
                user.set_password(password)
                user.save(update_fields=["password"])
                verb = "Reset the password of"
        name = user.get_username()
        self.stdout.write(self.style.SUCCESS(f"{verb} superuser {name}."))
        if source is None:
            self.stdout.write(f"Admin account: {name} / {password}")
            if password_file is not None:
                self.stdout.write(f"The password is also saved in {password_file}.")
        else:
            self.stdout.write(f"Admin account: {name} / (password from {source})")

    def _password(self, password_file: Path | None) -> tuple[str, Path | None]:
        """The password to set, and the file it came from (None when it was generated)."""
        if password_file is not None and password_file.is_file():
            password = password_file.read_text().rstrip("\r\n")
            if password:
                return password, password_file
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        if password_file is not None:
            self._write_secret(password_file, password)
        return password, None

    def _write_secret(self, path: Path, password: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password + "\n")
            path.chmod(0o600)
        except OSError as exc:
            raise CommandError(f"Cannot write the password to {path}: {exc}") from None
