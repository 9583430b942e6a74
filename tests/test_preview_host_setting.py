"""LAB_PREVIEW_HOST read by labsite/settings.py in a fresh interpreter: the host run.sh sets is
accepted, and a host name the platform is also served on is refused whatever the port (browsers
scope cookies by host name, so the previews' script could read and replace the platform's)."""

from __future__ import annotations

import pytest

from tests.settings_env import settings_value, settings_values


@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    return {"LAB_DATA_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "settings-test-key"}


def test_unset_previews_stay_on_the_platforms_origin(base_env):
    values = settings_values("LAB_PREVIEW_HOST", unset=["LAB_PREVIEW_HOST", "DJANGO_ALLOWED_HOSTS"], **base_env)
    assert values["LAB_PREVIEW_HOST"] == ""


def test_what_run_sh_sets_is_accepted(base_env):
    values = settings_values("LAB_PREVIEW_HOST", "ALLOWED_HOSTS", LAB_PREVIEW_HOST="localhost:8000",
                             DJANGO_ALLOWED_HOSTS="127.0.0.1,[::1]", **base_env)
    assert values == {"LAB_PREVIEW_HOST": "localhost:8000", "ALLOWED_HOSTS": ["127.0.0.1", "[::1]"]}


@pytest.mark.parametrize(
    ("preview_host", "allowed_hosts"),
    [
        ("localhost:8000", "127.0.0.1,localhost,[::1]"),  # the default hosts: localhost is the platform's too
        ("localhost:8001", "127.0.0.1,localhost"),  # another port is not another cookie jar
        ("LocalHost", "localhost"),
        ("[::1]:9000", "127.0.0.1,[::1]"),
        ("labs.example.org:8443", "labs.example.org"),
        ("preview.example.org", ".example.org"),  # a pattern the platform answers on
    ],
)
def test_a_host_name_the_platform_is_served_on_is_refused(base_env, preview_host, allowed_hosts):
    result = settings_value("LAB_PREVIEW_HOST", LAB_PREVIEW_HOST=preview_host, DJANGO_ALLOWED_HOSTS=allowed_hosts,
                            **base_env)
    assert result.returncode != 0
    assert "LAB_PREVIEW_HOST" in result.stderr and "cookies ignore ports" in result.stderr


@pytest.mark.parametrize("preview_host", ["preview.labs.example.net", "labs-preview.example.org:8443"])
def test_a_host_of_its_own_is_accepted(base_env, preview_host):
    values = settings_values("LAB_PREVIEW_HOST", LAB_PREVIEW_HOST=preview_host,
                             DJANGO_ALLOWED_HOSTS="labs.example.org", **base_env)
    assert values["LAB_PREVIEW_HOST"] == preview_host
