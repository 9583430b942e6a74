"""labsite/settings.py read in a fresh interpreter under controlled environment variables:
the embedded defaults, what DATABASE_URL and REDIS_URL switch on, and loud failures on bad values."""

from __future__ import annotations

import pytest

from tests.settings_env import settings_value, settings_values

# Variables that would otherwise leak in from the environment the tests run in.
SERVICE_VARIABLES = ["DATABASE_URL", "DATABASE_TEST_NAME", "REDIS_URL", "LAB_RQ_ASYNC", "LAB_RUNNERS"]
SWITCHED = ("DATABASES", "CHANNEL_LAYERS", "RQ_QUEUES", "REDIS_URL")


@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    """A throwaway data directory and a fixed key, so loading the settings writes nothing shared."""
    return {"LAB_DATA_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "settings-test-key"}


def test_with_nothing_set_the_embedded_defaults_hold(base_env, tmp_path):
    values = settings_values(*SWITCHED, unset=SERVICE_VARIABLES, **base_env)

    database = values["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(tmp_path / "db.sqlite3")
    assert values["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
    assert values["REDIS_URL"] == ""
    for name in ("default", "judge"):
        assert values["RQ_QUEUES"][name]["ASYNC"] is False  # jobs never wait for a worker that is not there


def test_database_url_selects_postgresql_without_persistent_connections(base_env):
    values = settings_values(
        "DATABASES", unset=SERVICE_VARIABLES,
        DATABASE_URL="postgres://labs:secret@db.example:5433/labs", DATABASE_TEST_NAME="test_labs_ci", **base_env,
    )

    database = values["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("db.example", 5433, "labs")
    assert (database["USER"], database["PASSWORD"]) == ("labs", "secret")
    assert database["TEST"]["NAME"] == "test_labs_ci"
    # daphne serves requests from many threads: Django's docs say to disable persistent connections under ASGI.
    assert database["CONN_MAX_AGE"] == 0


def test_redis_url_selects_channels_redis_and_workers(base_env):
    url = "redis://cache.example:6379/3"
    values = settings_values(*SWITCHED, unset=SERVICE_VARIABLES, REDIS_URL=url, **base_env)

    layer = values["CHANNEL_LAYERS"]["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert layer["CONFIG"]["hosts"] == [url]
    for name in ("default", "judge"):
        assert values["RQ_QUEUES"][name]["ASYNC"] is True
        assert values["RQ_QUEUES"][name]["URL"] == url
    assert values["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"  # the two are independent


def test_lab_rq_async_false_runs_jobs_inline_on_redis(base_env):
    values = settings_values(
        "RQ_QUEUES", "CHANNEL_LAYERS", unset=SERVICE_VARIABLES,
        REDIS_URL="redis://127.0.0.1:6379/9", LAB_RQ_ASYNC="false", **base_env,
    )

    assert values["RQ_QUEUES"]["default"]["ASYNC"] is False
    assert values["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"


def test_a_well_formed_lab_runners_is_accepted(base_env):
    runners = '{"big": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"dind_mode": "auto"}}}'
    values = settings_values("LAB_RUNNERS", unset=SERVICE_VARIABLES, LAB_RUNNERS=runners, **base_env)

    assert values["LAB_RUNNERS"] == {
        "big": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"dind_mode": "auto"}}
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_HSTS_SECONDS": "abc"}, "DJANGO_HSTS_SECONDS='abc' is not an integer"),
        ({"DJANGO_HSTS_SECONDS": "-1"}, "DJANGO_HSTS_SECONDS=-1 must be at least 0"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG='perhaps' is not a boolean"),
        ({"LAB_RUNNERS": "not json"}, "LAB_RUNNERS is not valid JSON"),
        ({"LAB_RUNNERS": "[1]"}, "LAB_RUNNERS must be a JSON object of runner aliases"),
        ({"LAB_RUNNERS": '{"docker": "runners.docker.DockerRunner"}'},
         "LAB_RUNNERS must be a JSON object of runner aliases"),
        ({"LAB_RUNNERS": '{"big": {"OPTIONS": {}}}'}, "LAB_RUNNERS must be a JSON object of runner aliases"),
        ({"LAB_RQ_ASYNC": "true"}, "LAB_RQ_ASYNC=true needs REDIS_URL"),
        ({"LAB_START_TIMEOUT_SECONDS": "0"}, "LAB_START_TIMEOUT_SECONDS=0 must be at least 1"),
        ({"DATABASE_URL": "nosuchdb://host/name"}, "DATABASE_URL is not usable"),
    ],
)
def test_a_bad_value_stops_the_start_up_naming_the_variable(base_env, env, message):
    result = settings_value("DEBUG", unset=SERVICE_VARIABLES, **base_env, **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr
