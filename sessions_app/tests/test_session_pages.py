"""The learner's session pages: the list, the session page and its live status region."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from labs.models import LabStep
from sessions_app.models import EndReason, Session, State

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "session-status"}




@pytest.fixture
def session(owner, lab) -> Session:  # type: ignore[no-untyped-def]
    session = Session.objects.create(user=owner, lab=lab, state=State.PROVISIONING)
    session.log("Queued: waiting for a worker to provision your environment.")
    session.log("Pulling image labs/tiny:test")
    return session


def running(session: Session, minutes_left: float = 20) -> Session:
    now = timezone.now()
    Session.objects.filter(pk=session.pk).update(
        state=State.RUNNING, started_at=now, expires_at=now + timedelta(minutes=minutes_left), last_active_at=now
    )
    session.refresh_from_db()
    return session


def status_region(html: str) -> str:
    match = re.search(r'<section id="session-status".*?</section>', html, re.S)
    assert match, "no status region"
    return match.group(0)


# ---- access ----------------------------------------------------------------------------


def test_owner_sees_the_session_page(owner_client, session) -> None:
    response = owner_client.get(session.get_absolute_url())
    assert response.status_code == 200
    assert "<h1>Hello shell</h1>" in response.content.decode()


def test_other_learner_gets_404(client, other_learner, session) -> None:
    client.force_login(other_learner)
    assert client.get(session.get_absolute_url()).status_code == 404
    assert client.get(reverse("sessions:status", args=[session.pk]), **HTMX).status_code == 404


def test_anonymous_is_sent_to_sign_in(client, session) -> None:
    for url in (session.get_absolute_url(), reverse("sessions:status", args=[session.pk]), reverse("sessions:list")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login") + "?next=")


def test_staff_see_any_session_with_a_notice(client, staff_user, session) -> None:
    client.force_login(staff_user)
    response = client.get(session.get_absolute_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert "olivia\u2019s session as staff" in html
    assert 'data-owner="false"' in html
    assert 'id="idle-dialog"' not in html  # staff watching do not keep the session alive


# ---- the session page ------------------------------------------------------------------


def test_instructions_render_each_step_collapsible(owner_client, lab, session) -> None:
    LabStep.objects.create(lab=lab, order=2, title="Clean up", body="```bash\nrm -f out.txt\n```\n<script>x()</script>")
    html = owner_client.get(session.get_absolute_url()).content.decode()
    assert html.count('<details class="step"') == 2
    assert '<details class="step" open>' in html  # the first step starts open
    assert "Greet" in html and "<code>echo hello</code>" in html
    assert 'data-language="bash"' in html and "data-copy-code" in html
    assert "x()" not in html
    assert "About this lab" in html and "<h2>Hello</h2>" in html  # the lab description


def test_console_pane_has_a_tab_and_placeholder_per_console(owner_client, lab, session) -> None:
    lab.consoles = ["terminal", "vnc", "editor"]
    lab.save()
    html = owner_client.get(session.get_absolute_url()).content.decode()
    assert html.count('role="tab"') == 3
    assert html.count('role="tabpanel"') == 3
    assert 'aria-selected="true"' in html
    assert "The terminal connects here when the session is running." in html
    assert "The graphical desktop connects here when the session is running." in html
    assert 'data-console-mount="editor"' in html


def test_page_shows_the_progress_log_from_the_session(owner_client, session) -> None:
    region = status_region(owner_client.get(session.get_absolute_url()).content.decode())
    assert "Pulling image labs/tiny:test" in region
    assert region.count("data-event-id=") == 2


def test_provisioning_status_follows_the_live_stream_instead_of_polling(owner_client, session) -> None:
    html = owner_client.get(session.get_absolute_url()).content.decode()
    assert f'data-stream-url="{reverse("sessions:stream", args=[session.pk])}"' in html
    region = status_region(html)
    # No timer: the stream swaps the region in; the page re-fetches it only when it asks.
    assert f'hx-get="{reverse("sessions:status", args=[session.pk])}"' in region
    assert 'hx-trigger="session-refresh from:body"' in region and "every" not in region
    assert 'data-state="provisioning"' in region
    assert "Provisioning" in region and "Cancel" in region
    assert "data-expires-at" not in region


def test_running_status_stops_polling_and_carries_the_timers(owner_client, session) -> None:
    session = running(session)
    html = owner_client.get(session.get_absolute_url()).content.decode()
    region = status_region(html)
    assert "every 2s" not in region
    assert 'hx-trigger="session-refresh from:body"' in region
    expires = re.search(r'data-expires-at="([^"]+)"', region)
    assert expires and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", expires.group(1))
    assert 'data-idle-timeout-seconds="900"' in region
    assert re.search(r'data-last-active="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', region)
    assert "is-warning" not in region
    assert f'action="{reverse("sessions:extend", args=[session.pk])}"' in region
    assert "Extend +15 min" in region and "(2 left)" in region
    assert f'action="{reverse("sessions:stop", args=[session.pk])}"' in region and "data-confirm=" in region
    assert 'id="idle-dialog"' in html and "I\u2019m still here" in html
    assert f'data-heartbeat-url="{reverse("sessions:heartbeat", args=[session.pk])}"' in html


def test_time_left_warns_under_five_minutes(owner_client, session) -> None:
    region = status_region(owner_client.get(running(session, minutes_left=4).get_absolute_url()).content.decode())
    assert 'class="time-left is-warning"' in region


def test_the_warning_threshold_comes_from_lab_session_warning_minutes(owner_client, session, settings) -> None:
    settings.LAB_SESSION_WARNING_MINUTES = 15
    running(session, minutes_left=10)
    page_region = status_region(owner_client.get(session.get_absolute_url()).content.decode())
    partial = owner_client.get(reverse("sessions:status", args=[session.pk]), **HTMX).content.decode()
    for region in (page_region, partial):  # session.js re-reads the region after every HTMX swap
        assert 'data-warning-seconds="900"' in region
        assert 'class="time-left is-warning"' in region  # 10 minutes left is under the 15 configured

    settings.LAB_SESSION_WARNING_MINUTES = 2
    region = status_region(owner_client.get(session.get_absolute_url()).content.decode())
    assert 'data-warning-seconds="120"' in region
    assert 'class="time-left"' in region


def test_session_js_reads_the_threshold_instead_of_hardcoding_it() -> None:
    from django.conf import settings

    script = (settings.BASE_DIR / "static" / "js" / "session.js").read_text()
    assert "dataset.warningSeconds" in script
    assert "left < current.warnSeconds" in script


def test_no_extend_button_without_extensions_left(owner_client, session) -> None:
    session = running(session)
    Session.objects.filter(pk=session.pk).update(extensions_used=2)
    region = status_region(owner_client.get(session.get_absolute_url()).content.decode())
    assert reverse("sessions:extend", args=[session.pk]) not in region
    assert "Stop session" in region


def test_no_idle_data_when_the_lab_has_no_idle_timeout(owner_client, lab, session) -> None:
    lab.idle_timeout_minutes = 0
    lab.save()
    html = owner_client.get(running(session).get_absolute_url()).content.decode()
    assert "data-idle-timeout-seconds" not in html
    assert 'id="idle-dialog"' not in html


def test_ended_session_does_not_poll(owner_client, session) -> None:
    Session.objects.filter(pk=session.pk).update(
        state=State.STOPPED, end_reason=EndReason.IDLE, ended_at=timezone.now()
    )
    region = status_region(owner_client.get(session.get_absolute_url()).content.decode())
    assert "hx-get" not in region and "hx-trigger" not in region
    assert "Stopped" in region and "idle timeout" in region
    assert "Start again" in region


def test_a_failed_session_tells_the_learner_why(owner_client, session) -> None:
    Session.objects.filter(pk=session.pk).update(
        state=State.FAILED,
        error="Could not start your environment: image not found <script>alert(1)</script>",
        ended_at=timezone.now(),
    )
    html = owner_client.get(session.get_absolute_url()).content.decode()
    assert "Could not start your environment: image not found" in html
    assert "<script>alert(1)</script>" not in html  # escaped, never markup


# ---- the status partial ----------------------------------------------------------------


def test_status_view_returns_only_the_partial(owner_client, session) -> None:
    response = owner_client.get(reverse("sessions:status", args=[session.pk]), **HTMX)
    assert response.status_code == 200
    html = response.content.decode().strip()
    assert html.startswith('<section id="session-status"') and html.endswith("</section>")
    assert "<html" not in html and "Instructions" not in html
    assert 'hx-trigger="session-refresh from:body"' in html
    assert "Pulling image labs/tiny:test" in html


def test_status_partial_follows_the_state(owner_client, session) -> None:
    url = reverse("sessions:status", args=[session.pk])
    assert 'data-state="provisioning"' in owner_client.get(url, **HTMX).content.decode()
    running(session)
    html = owner_client.get(url, **HTMX).content.decode()
    assert 'data-state="running"' in html and "every 2s" not in html and "Time left" in html
    Session.objects.filter(pk=session.pk).update(state=State.STOPPING)
    html = owner_client.get(url, **HTMX).content.decode()
    assert 'data-state="stopping"' in html and 'hx-trigger="session-refresh from:body"' in html


# ---- my sessions -----------------------------------------------------------------------


def test_my_sessions_lists_only_my_sessions(owner_client, other_learner, lab, session) -> None:
    Session.objects.create(user=other_learner, lab=lab, state=State.RUNNING)
    ended = Session.objects.create(
        user=session.user, lab=lab, state=State.EXPIRED, end_reason=EndReason.EXPIRED, ended_at=timezone.now()
    )
    response = owner_client.get(reverse("sessions:list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<tbody>") == 1 and html.count('<tr>') == 3  # header + my two sessions
    assert session.get_absolute_url() in html and ended.get_absolute_url() in html
    assert "state-provisioning" in html and "state-expired" in html
    assert "Time limit reached" in html and "Starting…" in html


def test_my_sessions_shows_time_left_for_running_sessions(owner_client, session) -> None:
    running(session, minutes_left=20)
    html = owner_client.get(reverse("sessions:list")).content.decode()
    assert re.search(r"(19|20)\xa0minutes</time> left", html)


def test_my_sessions_empty(owner_client) -> None:
    html = owner_client.get(reverse("sessions:list")).content.decode()
    assert "You have not started any labs yet." in html


# ---- the live stream and staff's output panel --------------------------------------------


def test_staff_get_the_output_panel_and_learners_do_not(client, owner_client, staff_user, session) -> None:
    url = reverse("sessions:output_stream", args=[session.pk])
    assert url not in owner_client.get(session.get_absolute_url()).content.decode()
    client.force_login(staff_user)
    html = client.get(session.get_absolute_url()).content.decode()
    assert f'data-output-url="{url}"' in html and "data-output-panel" in html


def test_an_empty_progress_log_is_there_for_the_stream_to_fill(owner_client, lab, owner) -> None:
    fresh = Session.objects.create(user=owner, lab=lab, state=State.REQUESTED)
    region = status_region(owner_client.get(fresh.get_absolute_url()).content.decode())
    assert re.search(r'<details class="event-log-wrap" open hidden>\s*<summary>Progress log</summary>\s*'
                     r'<ol class="event-log">\s*</ol>', region)
