"""Who may read /metrics: loopback, the configured networks and the bearer token; nobody else,
signed in or not."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from metrics.tests.conftest import scrape
from tests.settings_env import settings_value, settings_values

pytestmark = pytest.mark.django_db

FOREIGN = "203.0.113.9"
TOKEN = "a-long-random-scrape-token"


def test_loopback_may_scrape(db):
    result = scrape(REMOTE_ADDR="127.0.0.1")
    assert result.status == 200
    assert result.content_type.startswith("text/plain; version=0.0.4")
    assert "labs_sessions" in result.sample_names()
    assert scrape(REMOTE_ADDR="::1").status == 200


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(rows):
    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    assert families["labs_judge_attempts"].type == "counter"
    assert families["labs_session_start_seconds_15m"].type == "gaugehistogram"


def test_a_foreign_address_is_refused(db):
    result = scrape(REMOTE_ADDR=FOREIGN)
    assert result.status == 403
    assert "labs_" not in result.text


def test_signed_in_staff_and_learners_are_refused_from_a_foreign_address(client, staff_user, owner):
    client.force_login(staff_user)
    assert scrape(client, REMOTE_ADDR=FOREIGN).status == 403
    learner = Client()
    learner.force_login(owner)
    assert scrape(learner, REMOTE_ADDR=FOREIGN).status == 403


def test_a_configured_network_may_scrape(settings):
    settings.LAB_METRICS_NETWORKS = ["10.20.0.0/16", "2001:db8::/32"]
    assert scrape(REMOTE_ADDR="10.20.3.4").status == 200
    assert scrape(REMOTE_ADDR="::ffff:10.20.3.4").status == 200  # IPv4 as a dual-stack socket reports it
    assert scrape(REMOTE_ADDR="2001:db8::7").status == 200
    assert scrape(REMOTE_ADDR="10.21.0.1").status == 403


def test_the_token_opens_it_from_anywhere(settings):
    settings.LAB_METRICS_TOKEN = TOKEN
    assert scrape(REMOTE_ADDR=FOREIGN, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status == 200


def test_a_wrong_token_is_refused_even_from_loopback(settings):
    settings.LAB_METRICS_TOKEN = TOKEN
    assert scrape(REMOTE_ADDR=FOREIGN, HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status == 403
    assert scrape(REMOTE_ADDR=FOREIGN, HTTP_AUTHORIZATION=f"Basic {TOKEN}").status == 403
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer wrong").status == 403


def test_no_token_is_accepted_when_none_is_configured(settings):
    settings.LAB_METRICS_TOKEN = ""
    assert scrape(REMOTE_ADDR=FOREIGN, HTTP_AUTHORIZATION="Bearer ").status == 403


def test_a_request_through_a_proxy_needs_the_token(settings):
    # a reverse proxy on the same host makes every request come from 127.0.0.1
    settings.LAB_METRICS_TOKEN = TOKEN
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=FOREIGN).status == 403
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_FORWARDED=f"for={FOREIGN}").status == 403
    assert scrape(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=FOREIGN,
                  HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status == 200


def test_only_get_and_head_are_answered(client):
    assert client.post("/metrics").status_code == 405
    assert client.head("/metrics").status_code == 200


def test_the_networks_setting_is_a_checked_list():
    assert settings_values("LAB_METRICS_NETWORKS", LAB_METRICS_NETWORKS="10.0.0.0/8, 2001:db8::/32") == {
        "LAB_METRICS_NETWORKS": ["10.0.0.0/8", "2001:db8::/32"]}
    refused = settings_value("LAB_METRICS_NETWORKS", LAB_METRICS_NETWORKS="10.0.0.0/8,not-a-network")
    assert refused.returncode != 0
    assert "LAB_METRICS_NETWORKS: 'not-a-network' is not a network" in refused.stderr
