"""manage.py ensure_admin: creates the superuser once, prints its password once."""

from __future__ import annotations

import re
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db

PRINTED = re.compile(r"^Admin account: (\S+) / (\S+)$", re.MULTILINE)


def ensure_admin(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def printed_password(output: str) -> str | None:
    match = PRINTED.search(output)
    return match.group(2) if match else None


def test_it_creates_a_superuser_and_prints_a_strong_password(django_user_model):
    output = ensure_admin("--username", "admin", "--email", "admin@example.com")

    password = printed_password(output)
    assert password is not None
    assert len(password) >= 20
    user = django_user_model.objects.get(username="admin")
    assert user.is_superuser and user.is_staff and user.is_active
    assert user.email == "admin@example.com"
    assert user.check_password(password)
    assert f"Admin account: admin / {password}" in output


def test_the_printed_password_signs_in_to_the_admin(client):
    password = printed_password(ensure_admin("--username", "admin"))

    assert client.login(username="admin", password=password)
    assert client.get("/admin/").status_code == 200


def test_a_second_run_changes_nothing_and_prints_no_password(django_user_model):
    ensure_admin("--username", "admin")
    hashed = django_user_model.objects.get(username="admin").password

    output = ensure_admin("--username", "admin")

    assert printed_password(output) is None
    assert "already exists" in output
    assert django_user_model.objects.filter(username="admin").count() == 1
    assert django_user_model.objects.get(username="admin").password == hashed


def test_reset_sets_and_prints_a_new_password(django_user_model):
    first = printed_password(ensure_admin("--username", "admin"))

    second = printed_password(ensure_admin("--username", "admin", "--reset"))

    assert second is not None and second != first
    user = django_user_model.objects.get(username="admin")
    assert user.check_password(second)
    assert not user.check_password(first)


def test_each_install_gets_a_different_password(django_user_model):
    first = printed_password(ensure_admin("--username", "admin"))
    second = printed_password(ensure_admin("--username", "root"))

    assert first != second


def test_it_refuses_to_promote_an_existing_ordinary_account(django_user_model, password):
    learner = django_user_model.objects.create_user("admin", "a@example.com", password)

    with pytest.raises(CommandError, match="not a superuser"):
        ensure_admin("--username", "admin", "--reset")

    learner.refresh_from_db()
    assert not learner.is_superuser and not learner.is_staff
    assert learner.check_password(password)


def test_it_finds_an_existing_admin_whatever_the_case(django_user_model):
    ensure_admin("--username", "Admin")

    output = ensure_admin("--username", "admin")

    assert printed_password(output) is None
    assert django_user_model.objects.count() == 1


def test_a_missing_password_file_receives_the_generated_password(tmp_path: Path, django_user_model):
    secret = tmp_path / "secrets" / "admin-password"

    output = ensure_admin("--username", "admin", "--password-file", str(secret))

    password = printed_password(output)
    assert secret.read_text().strip() == password
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert django_user_model.objects.get(username="admin").check_password(password)


def test_an_existing_password_file_supplies_the_password_and_it_is_not_printed(tmp_path: Path, django_user_model):
    secret = tmp_path / "admin-password"
    secret.write_text("operator-chosen-secret-77\n")

    output = ensure_admin("--username", "admin", "--password-file", str(secret))

    assert printed_password(output) is None
    assert "operator-chosen-secret-77" not in output
    assert f"password from {secret}" in output
    assert django_user_model.objects.get(username="admin").check_password("operator-chosen-secret-77")


def test_an_empty_username_is_refused():
    with pytest.raises(CommandError):
        ensure_admin("--username", "  ")
