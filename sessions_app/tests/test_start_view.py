"""Pressing Start: a session is queued, or the quota refusal says why and links the running session."""

from django.urls import reverse

from sessions_app.models import Session, State


def test_start_creates_a_session_and_shows_it(owner_client, lab, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("labs:start", args=[lab.slug]))
    session = Session.objects.get()
    assert response.status_code == 302
    assert response["Location"] == session.get_absolute_url()
    session.refresh_from_db()
    assert session.state == State.RUNNING


def test_a_second_start_is_refused_with_a_message_and_a_link_to_the_running_session(
    owner_client, lab, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("labs:start", args=[lab.slug]))
    running = Session.objects.get()
    response = owner_client.post(reverse("labs:start", args=[lab.slug]), follow=True)
    assert Session.objects.count() == 1
    assert response.redirect_chain[-1][0] == running.get_absolute_url()
    page = response.content.decode()
    assert "You already have 1 running session(s) (limit 1)" in page


def test_start_needs_a_signed_in_user_and_a_post(owner_client, lab):
    from django.test import Client

    anonymous = Client().post(reverse("labs:start", args=[lab.slug]))
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert Session.objects.count() == 0
    opened = owner_client.get(reverse("labs:start", args=[lab.slug]))  # a GET starts nothing
    assert opened.status_code == 302 and opened["Location"] == lab.get_absolute_url()
    assert Session.objects.count() == 0


def test_a_disabled_image_is_refused_clearly(owner_client, lab):
    lab.image.active = False
    lab.image.save()
    page = owner_client.post(reverse("labs:start", args=[lab.slug]), follow=True).content.decode()
    assert "disabled" in page
    assert Session.objects.count() == 0
