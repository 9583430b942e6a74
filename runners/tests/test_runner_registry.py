"""Runners are chosen by settings like Django's STORAGES; "default" picks the best one available."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from runners import get_runner, reset_cache, resolve_alias
from runners.base import RunnerError
from runners.docker import DockerRunner
from runners.fake import FakeRunner
from runners.local import LocalRunner


def test_default_is_docker_when_the_engine_answers(settings):
    reset_cache()
    assert resolve_alias("default") == "docker"
    assert isinstance(get_runner("default"), DockerRunner)


def test_default_falls_back_to_the_local_runner_without_an_engine(settings):
    settings.LAB_RUNNERS = {
        **settings.LAB_RUNNERS,
        "docker": {"BACKEND": "runners.docker.DockerRunner",
                   "OPTIONS": {"base_url": "unix:///nonexistent/docker.sock", "api_timeout": 1}},
    }
    reset_cache()
    assert resolve_alias("default") == "local"
    assert isinstance(get_runner("default"), LocalRunner)


def test_a_configured_alias_uses_its_backend_and_options():
    runner = get_runner("fake-slow")
    assert isinstance(runner, FakeRunner)
    assert runner.options == {"start_delay": 3}
    assert get_runner("fake-slow") is runner  # built once, then cached


def test_an_unknown_runner_is_a_permanent_error():
    with pytest.raises(RunnerError) as error:
        get_runner("nope")
    assert error.value.permanent


def test_a_backend_that_cannot_be_imported_is_a_configuration_error(settings):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "broken": {"BACKEND": "no.such.Runner"}}
    reset_cache()
    with pytest.raises(ImproperlyConfigured, match=r"cannot import no\.such\.Runner"):
        get_runner("broken")


def test_an_entry_without_backend_is_a_configuration_error(settings):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "broken": {"OPTIONS": {}}}
    with pytest.raises(ImproperlyConfigured, match="needs a BACKEND"):
        get_runner("fake")


def test_a_backend_named_by_its_old_path_still_loads_with_a_warning(settings, caplog):
    from runners import get_runner, reset_cache
    from runners.fake import FakeRunner

    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "old": {"BACKEND": "sessions_app.runners.fake.FakeRunner"}}
    reset_cache()
    assert isinstance(get_runner("old"), FakeRunner)
    assert "is now runners.fake.FakeRunner" in caplog.text
