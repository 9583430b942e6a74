"""Each personal token may make LAB_API_RATE_LIMIT requests per window: past it, 429 with
Retry-After. Counted in Redis with REDIS_URL (one count for every process, checked here with a
second process), else in Django's cache; a Redis that does not answer lets requests through."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest
from django.test import Client

from api import rate_limit
from api.models import ApiToken
from api.tests.conftest import API, Api
from tests.redis_server import BASE_DIR, worker_env
from tests.settings_env import settings_value, settings_values

HOUR = 3600


def within_one_window(period: int, needed: float = 30.0) -> None:
    """Fixed windows restart the count at their edge: wait for the next window if this one ends
    before the test can finish in it."""
    left = period - time.time() % period
    if left < needed:
        time.sleep(left + 0.1)


@pytest.fixture
def limited(settings, redis_server):
    """Three requests an hour per token, counted in a Redis server of this test's own."""
    settings.REDIS_URL = redis_server.url
    settings.LAB_API_RATE_LIMIT = (3, HOUR)
    within_one_window(HOUR)
    return redis_server


@pytest.mark.django_db
def test_a_token_past_its_limit_gets_429_with_retry_after(limited, owner, token_for, lab):
    token = token_for(owner)
    api = Api(Client(), token)
    assert [api.get("/labs").status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get("/labs")
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("application/json")
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= HOUR
    assert refused.json() == {"detail": "Too many requests with this token: at most 3 per hour. "
                                        f"Try again in {retry_after} seconds."}
    # Writes count against the same budget, and are refused before they do anything.
    assert api.post("/sessions", {"lab": lab.slug}).status_code == 429
    # The count is in Redis, kept no longer than the window.
    prefix = ApiToken.objects.get(user=owner).prefix
    keys = limited.client().keys(f"{rate_limit.KEY_PREFIX}:{prefix}:*")
    assert len(keys) == 1
    assert int(limited.client().get(keys[0])) == 5
    assert 0 < limited.client().ttl(keys[0]) <= HOUR + 1


@pytest.mark.django_db
def test_each_token_has_its_own_budget(limited, owner, token_for, lab):
    first, second = Api(Client(), token_for(owner)), Api(Client(), token_for(owner))
    assert [first.get("/labs").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert second.get("/labs").status_code == 200


@pytest.mark.django_db
def test_the_browsers_own_requests_are_not_counted(limited, owner_client, lab):
    assert [owner_client.get(f"{API}/labs").status_code for _ in range(5)] == [200] * 5


@pytest.mark.django_db
def test_a_wrong_or_expired_token_is_refused_before_it_is_counted(limited, owner, token_for, lab):
    assert [Api(Client(), "labs_" + "x" * 43).get("/labs").status_code for _ in range(5)] == [401] * 5
    assert limited.client().keys(f"{rate_limit.KEY_PREFIX}:*") == []


@pytest.mark.django_db(transaction=True)
def test_the_count_is_shared_by_every_process(limited, owner, token_for, lab, settings):
    """Two requests in another process (a second web server), then this one gets the third only."""
    token = token_for(owner)
    script = textwrap.dedent(f"""
        import django, json
        django.setup()
        from django.test import Client
        client = Client(HTTP_HOST="localhost")
        codes = [client.get("{API}/labs", headers={{"Authorization": "Bearer {token}"}}).status_code
                 for _ in range(2)]
        print(json.dumps(codes))
    """)
    env = worker_env(limited.url, settings.LAB_RUNNERS, LAB_API_RATE_LIMIT="3/hour", LAB_RQ_ASYNC="false",
                     DJANGO_ALLOWED_HOSTS="localhost")
    other = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [200, 200]
    api = Api(Client(), token)
    assert api.get("/labs").status_code == 200
    assert api.get("/labs").status_code == 429


@pytest.mark.django_db
def test_without_redis_the_cache_counts(settings, owner, token_for, lab):
    settings.REDIS_URL = ""
    settings.LAB_API_RATE_LIMIT = (2, HOUR)
    within_one_window(HOUR)
    api = Api(Client(), token_for(owner))
    assert [api.get("/labs").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.django_db
def test_with_redis_down_requests_go_through_and_the_outage_is_logged_once(limited, owner, token_for, lab, caplog,
                                                                           monkeypatch):
    monkeypatch.setattr(rate_limit, "_redis_down", False)
    limited.kill()
    api = Api(Client(), token_for(owner))
    with caplog.at_level(logging.WARNING, logger="api.rate_limit"):
        assert [api.get("/labs").status_code for _ in range(5)] == [200] * 5
    warnings = [r for r in caplog.records if r.name == "api.rate_limit" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not enforced" in warnings[0].getMessage()


@pytest.mark.django_db
def test_no_limit_when_it_is_switched_off(settings, owner, token_for, lab):
    settings.LAB_API_RATE_LIMIT = None
    api = Api(Client(), token_for(owner))
    assert {api.get("/labs").status_code for _ in range(10)} == {200}


# ---- the setting -------------------------------------------------------------------------------

@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    return {"LAB_DATA_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "settings-test-key"}


@pytest.mark.parametrize(("raw", "parsed"), [
    (None, [120, 60]), ("30/second", [30, 1]), ("120/minute", [120, 60]), (" 1000 / Hour ", [1000, 3600]),
    ("5/day", [5, 86400]), ("", None),
])
def test_the_setting_reads_a_count_per_period(base_env, raw, parsed):
    env = dict(base_env) if raw is None else {**base_env, "LAB_API_RATE_LIMIT": raw}
    assert settings_values("LAB_API_RATE_LIMIT", unset=["LAB_API_RATE_LIMIT"], **env)["LAB_API_RATE_LIMIT"] == parsed


@pytest.mark.parametrize("raw", ["120", "0/minute", "10/week", "ten/minute", "5 per minute"])
def test_a_bad_setting_stops_the_start_up_naming_the_variable(base_env, raw):
    result = settings_value("LAB_API_RATE_LIMIT", unset=["LAB_API_RATE_LIMIT"], **base_env, LAB_API_RATE_LIMIT=raw)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "LAB_API_RATE_LIMIT=" in result.stderr and "is not a rate like 120/minute" in result.stderr
