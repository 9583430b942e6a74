"""The webhook, sent to a real HTTP server on loopback: JSON, Slack and Telegram payloads when an alert
opens and resolves; a receiver that fails, hangs or is not there is logged, never raised."""

from __future__ import annotations

import logging
import time

import pytest

from tests.settings_env import settings_value, settings_values
from watchdog.models import Alert
from watchdog.tests.conftest import use_disk

pytestmark = pytest.mark.django_db


@pytest.fixture
def webhook(settings, receiver):
    def _configure(fmt: str, path: str = "/hook") -> None:
        settings.LAB_WATCHDOG_WEBHOOK_URL = receiver.url + path
        settings.LAB_WATCHDOG_WEBHOOK_FORMAT = fmt

    return _configure


def open_then_resolve(session, make_watchdog) -> Alert:
    watchdog = make_watchdog(session_disk={"window_seconds": 0})
    use_disk(session, 95)
    watchdog.run_once()
    use_disk(session, 10)
    watchdog.run_once()
    return Alert.objects.get(kind="session_disk")


def test_the_json_webhook_gets_the_alert_when_it_opens_and_when_it_resolves(running_session, make_watchdog,
                                                                            webhook, receiver):
    webhook("json")
    alert = open_then_resolve(running_session, make_watchdog)
    assert [r.path for r in receiver.received] == ["/hook", "/hook"]
    assert all(r.content_type == "application/json" for r in receiver.received)
    opened, resolved = (r.body for r in receiver.received)
    assert opened["event"] == "opened" and resolved["event"] == "resolved"
    assert opened["alert"] | {"first_seen": None, "last_seen": None} == {
        "id": alert.pk, "kind": "session_disk", "subject": str(running_session.pk),
        "session": str(running_session.pk), "level": "warning", "status": "open", "value": 95.0, "threshold": 90.0,
        "message": opened["alert"]["message"], "first_seen": None, "last_seen": None, "resolved_at": None,
    }
    assert opened["text"].startswith(f"[warning] Session disk opened: 95% on session {running_session.pk}")
    assert resolved["alert"]["status"] == "resolved" and resolved["alert"]["resolved_at"]
    assert resolved["alert"]["value"] == 10.0
    assert resolved["text"].startswith("[resolved] Session disk resolved: ")


def test_the_slack_webhook_gets_a_text(running_session, make_watchdog, webhook, receiver):
    webhook("slack", "/services/T000/B000/secret")
    open_then_resolve(running_session, make_watchdog)
    assert [list(r.body) for r in receiver.received] == [["text"], ["text"]]
    assert receiver.received[0].body["text"].startswith("[warning] Session disk opened: 95%")
    assert receiver.received[1].body["text"].startswith("[resolved] Session disk resolved:")


def test_the_telegram_webhook_names_the_chat(running_session, make_watchdog, webhook, receiver, settings):
    webhook("telegram", "/bot123:ABC/sendMessage")
    settings.LAB_WATCHDOG_TELEGRAM_CHAT_ID = "-100200300"
    open_then_resolve(running_session, make_watchdog)
    assert receiver.received[0].path == "/bot123:ABC/sendMessage"
    body = receiver.received[0].body
    assert body["chat_id"] == "-100200300" and body["disable_web_page_preview"] is True
    assert body["text"].startswith("[warning] Session disk opened: 95%")


def test_a_receiver_that_answers_an_error_is_logged_without_its_secret(running_session, make_watchdog, webhook,
                                                                       receiver, caplog):
    webhook("slack", "/services/T000/B000/secret")
    receiver.status = 500
    with caplog.at_level(logging.WARNING, logger="watchdog"):
        alert = open_then_resolve(running_session, make_watchdog)
    assert alert.status == "resolved"  # the watchdog went on
    failures = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert len(failures) == 2 and "answered 500" in failures[0]
    assert "127.0.0.1" in failures[0] and "secret" not in caplog.text


def test_a_receiver_that_hangs_costs_the_timeout_only(running_session, make_watchdog, webhook, receiver, settings,
                                                      caplog):
    webhook("json")
    settings.LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.delay = 10
    watchdog = make_watchdog(session_disk={"window_seconds": 0})
    use_disk(running_session, 95)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="watchdog"):
        watchdog.run_once()
    assert time.monotonic() - began < 8
    assert receiver.arrived.is_set()
    assert "ReadTimeout" in caplog.text
    assert Alert.objects.get(kind="session_disk").status == "open"


def test_no_receiver_at_all_is_logged(running_session, make_watchdog, settings, caplog):
    from tests.test_health import closed_port

    settings.LAB_WATCHDOG_WEBHOOK_URL = f"http://127.0.0.1:{closed_port()}/hook"
    with caplog.at_level(logging.WARNING, logger="watchdog"):
        assert open_then_resolve(running_session, make_watchdog).status == "resolved"
    assert caplog.text.count("webhook at 127.0.0.1") == 2 and "ConnectionError" in caplog.text


@pytest.mark.parametrize(("env", "says"), [
    ({"LAB_WATCHDOG_WEBHOOK_FORMAT": "teams"}, "use json, slack or telegram"),
    ({"LAB_WATCHDOG_WEBHOOK_URL": "ftp://example.org/hook"}, "must be an http:// or https:// address"),
    ({"LAB_WATCHDOG_WEBHOOK_URL": "https://api.telegram.org/botX/sendMessage",
      "LAB_WATCHDOG_WEBHOOK_FORMAT": "telegram"}, "needs LAB_WATCHDOG_TELEGRAM_CHAT_ID"),
    ({"LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS": "0"}, "must be a positive number of seconds"),
])
def test_the_webhook_settings_are_checked_at_start(env, says):
    result = settings_value("LAB_WATCHDOG_WEBHOOK_URL", **env)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and says in result.stderr


def test_a_telegram_webhook_with_its_chat_loads():
    values = settings_values("LAB_WATCHDOG_WEBHOOK_FORMAT", "LAB_WATCHDOG_TELEGRAM_CHAT_ID",
                             LAB_WATCHDOG_WEBHOOK_URL="https://api.telegram.org/botX/sendMessage",
                             LAB_WATCHDOG_WEBHOOK_FORMAT=" Telegram ", LAB_WATCHDOG_TELEGRAM_CHAT_ID="-1001")
    assert values == {"LAB_WATCHDOG_WEBHOOK_FORMAT": "telegram", "LAB_WATCHDOG_TELEGRAM_CHAT_ID": "-1001"}
