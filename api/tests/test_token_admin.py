"""Staff see and revoke anyone's API tokens in the admin, but never the token or its hash, and make none."""

from __future__ import annotations

from django.urls import reverse

from api.models import ApiToken


def test_staff_see_tokens_without_their_hash_and_revoke_them(client, staff_user, owner):
    row, _ = ApiToken.issue(owner, "lms", ApiToken.Scope.WRITE)
    client.force_login(staff_user)
    listing = client.get(reverse("admin:api_apitoken_changelist")).content.decode()
    assert row.prefix in listing and "lms" in listing
    change = client.get(reverse("admin:api_apitoken_change", args=[row.pk])).content.decode()
    assert row.digest not in change
    assert client.get(reverse("admin:api_apitoken_add")).status_code == 403
    client.post(reverse("admin:api_apitoken_delete", args=[row.pk]), {"post": "yes"})
    assert not ApiToken.objects.exists()
