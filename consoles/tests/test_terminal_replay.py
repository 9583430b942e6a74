"""Staff replay recorded terminals in the admin; learners reach neither the page nor the cast."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from consoles.models import TerminalRecording
from labs.models import Image, Lab
from sessions_app.models import Session, State

CAST = (
    '{"version": 2, "width": 80, "height": 24, "timestamp": 1700000000, "env": {"TERM": "xterm-256color"}}\n'
    '[0.1, "o", "$ echo secret-output\\r\\n"]\n'
)


@pytest.fixture
def recording(owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    name = "recordings/2025/01/test.cast"
    (settings.MEDIA_ROOT / "recordings/2025/01").mkdir(parents=True)
    (settings.MEDIA_ROOT / name).write_text(CAST)
    image = Image.objects.create(name="img", reference="labs/busybox:latest")
    lab = Lab.objects.create(slug="rec", title="Recorded lab", image=image, runner="fake", record_terminal=True)
    session = Session.objects.create(user=owner, lab=lab, state=State.STOPPED)
    return TerminalRecording.objects.create(session=session, terminal_name="1", file=name, size_bytes=len(CAST))


@pytest.mark.django_db
def test_staff_can_open_the_replay_page_with_the_vendored_player(client, staff_user, recording):
    client.force_login(staff_user)
    page = client.get(reverse("sessions:recording_replay", args=[recording.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "vendor/asciinema-player/asciinema-player.min.js" in html
    assert "vendor/asciinema-player/asciinema-player.css" in html
    assert reverse("sessions:recording_cast", args=[recording.pk]) in html
    assert "Recorded lab" in html and "olivia" in html
    cast = client.get(reverse("sessions:recording_cast", args=[recording.pk]))
    assert cast.status_code == 200
    assert cast["Content-Type"] == "application/x-asciicast"
    assert b"".join(cast.streaming_content).decode() == CAST


@pytest.mark.django_db
def test_the_admin_lists_recordings_with_a_replay_link(client, staff_user, recording):
    client.force_login(staff_user)
    listing = client.get(reverse("admin:consoles_terminalrecording_changelist"))
    assert listing.status_code == 200
    assert reverse("sessions:recording_replay", args=[recording.pk]) in listing.content.decode()
    detail = client.get(reverse("admin:consoles_terminalrecording_change", args=[recording.pk]))
    assert detail.status_code == 200
    assert "/media/" not in detail.content.decode()  # no public link to the file


@pytest.mark.django_db
def test_a_learner_reaches_neither_the_replay_page_nor_the_cast(client, owner, recording):
    client.force_login(owner)  # even the learner whose session was recorded
    for name in ("sessions:recording_replay", "sessions:recording_cast"):
        response = client.get(reverse(name, args=[recording.pk]))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_db
def test_an_anonymous_visitor_reaches_neither_the_replay_page_nor_the_cast(client, recording):
    for name in ("sessions:recording_replay", "sessions:recording_cast"):
        response = client.get(reverse(name, args=[recording.pk]))
        assert response.status_code == 302
        assert b"secret-output" not in response.content


@pytest.mark.django_db
def test_a_recording_whose_file_is_gone_is_a_404(client, staff_user, recording):
    Path(recording.file.path).unlink()
    client.force_login(staff_user)
    assert client.get(reverse("sessions:recording_cast", args=[recording.pk])).status_code == 404
