"""/labs/<slug>/start/ opened directly (a link, a bookmark, the page signing in leads back to):
the lab page with its Start button and a word on what to do, never a blank 405, and nothing started."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from sessions_app.models import Session

pytestmark = pytest.mark.django_db


def test_opening_the_start_address_shows_the_lab_page_with_its_start_button(owner_client, lab):
    response = owner_client.get(reverse("labs:start", args=[lab.slug]), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(lab.get_absolute_url(), 302)]
    page = response.content.decode()
    assert "To start this lab, press Start lab." in page
    assert f'action="{reverse("labs:start", args=[lab.slug])}"' in page and "Start lab" in page
    assert Session.objects.count() == 0


def test_signing_in_from_the_start_address_leads_to_the_lab_page(lab, owner, password):
    client = Client()
    start = reverse("labs:start", args=[lab.slug])
    to_sign_in = client.get(start)
    assert to_sign_in.status_code == 302 and to_sign_in["Location"].startswith(reverse("account_login"))

    signed_in = client.post(reverse("account_login"), {"login": owner.username, "password": password,
                                                       "next": start}, follow=True)

    assert signed_in.status_code == 200
    assert signed_in.redirect_chain[-1][0] == lab.get_absolute_url()
    assert Session.objects.count() == 0


def test_an_unknown_lab_is_still_a_404(owner_client):
    assert owner_client.get(reverse("labs:start", args=["no-such-lab"])).status_code == 404
