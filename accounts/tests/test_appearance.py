"""SiteAppearance is a singleton, in the model and in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import SiteAppearance

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:accounts_siteappearance_changelist")
ADD = reverse("admin:accounts_siteappearance_add")


def change_url(appearance: SiteAppearance) -> str:
    return reverse("admin:accounts_siteappearance_change", args=[appearance.pk])


def test_saving_two_appearances_keeps_one_row():
    SiteAppearance(site_name="First").save()
    SiteAppearance(site_name="Second").save()

    assert SiteAppearance.objects.count() == 1
    assert SiteAppearance.objects.get().site_name == "Second"


def test_load_creates_the_row_with_defaults_once():
    first = SiteAppearance.load()
    second = SiteAppearance.load()

    assert first.pk == second.pk == SiteAppearance.SINGLETON_PK
    assert first.site_name == "Browser Labs"
    assert SiteAppearance.objects.count() == 1


def test_the_admin_list_opens_the_single_appearance(admin_client):
    response = admin_client.get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"] == change_url(SiteAppearance.load())


def test_the_admin_refuses_to_add_a_second_appearance(admin_client):
    SiteAppearance.load()

    assert admin_client.get(ADD).status_code == 403
    assert admin_client.post(ADD, {"site_name": "Another", "accent_color": "#000000"}).status_code == 403
    assert SiteAppearance.objects.count() == 1


def test_the_admin_never_deletes_the_appearance(admin_client):
    appearance = SiteAppearance.load()

    delete_url = reverse("admin:accounts_siteappearance_delete", args=[appearance.pk])
    response = admin_client.post(delete_url, {"post": "yes"})

    assert response.status_code == 403
    assert SiteAppearance.objects.exists()


def test_staff_can_rename_the_site_in_the_admin(admin_client):
    appearance = SiteAppearance.load()

    response = admin_client.post(
        change_url(appearance),
        {"site_name": "Acme Labs", "tagline": "Learn by doing", "accent_color": "#10b981"},
    )

    assert response.status_code == 302
    appearance.refresh_from_db()
    assert (appearance.site_name, appearance.accent_color) == ("Acme Labs", "#10b981")


def test_the_admin_rejects_an_accent_that_is_not_a_hex_colour(admin_client):
    appearance = SiteAppearance.load()

    response = admin_client.post(change_url(appearance), {"site_name": "Acme", "accent_color": "red"})

    assert response.status_code == 200
    assert "accent_color" in response.context["adminform"].form.errors


def test_a_staff_member_without_permission_is_not_redirected_to_the_appearance(client, django_user_model, password):
    helper = django_user_model.objects.create_user("hugo", "hugo@example.com", password, is_staff=True)
    client.force_login(helper)

    assert client.get(CHANGELIST).status_code == 403
