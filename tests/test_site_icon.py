"""Every page names the site icon, so browsers never ask for /favicon.ico (a 404 and a console error)."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_site_pages_name_the_icon(client: Client) -> None:
    assert 'rel="icon"' in client.get("/").content.decode()


def test_admin_pages_name_the_icon(client: Client, django_user_model) -> None:  # type: ignore[no-untyped-def]
    staff = django_user_model.objects.create_user("staffer", password="pw-123456789", is_staff=True,
                                                  is_superuser=True)
    client.force_login(staff)
    assert 'rel="icon"' in client.get("/admin/").content.decode()
    client.logout()
    assert 'rel="icon"' in client.get("/admin/login/").content.decode()
