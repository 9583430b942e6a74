"""A lab that records its terminals says so on its page and above the terminal; one that does not, does not."""

from __future__ import annotations

import pytest

from sessions_app import actions

NOTICE = "Terminals in this lab are recorded."


@pytest.mark.parametrize("recorded", [True, False])
def test_the_lab_page_and_the_session_page_say_whether_terminals_are_recorded(
        owner_client, owner, lab, recorded, django_capture_on_commit_callbacks):
    lab.record_terminal = recorded
    lab.save()
    lab_page = owner_client.get(lab.get_absolute_url()).content.decode()
    assert (NOTICE in lab_page) is recorded
    with django_capture_on_commit_callbacks(execute=True):
        session = actions.start_session(owner, lab)
    session_page = owner_client.get(session.get_absolute_url()).content.decode()
    assert (NOTICE in session_page) is recorded
    if recorded:
        # In the terminal's panel, above the terminal it is about.
        panel = session_page[session_page.index('id="console-panel-terminal"'):]
        assert panel.index("data-recording-notice") < panel.index('data-console-mount="terminal"')
        assert "staff can replay it" in panel


def test_visitors_who_are_not_signed_in_see_it_before_they_start(client, lab):
    lab.record_terminal = True
    lab.save()
    assert NOTICE in client.get(lab.get_absolute_url()).content.decode()
