"""Settings that weaken the platform's guarantees are named to staff: in the admin and in `check`."""

from __future__ import annotations

import pytest
from django.core import management
from django.core.management.base import SystemCheckError

from runners import reset_cache
from runners.posture import unsafe_settings

pytestmark = pytest.mark.django_db


def test_the_defaults_weaken_nothing(settings):
    settings.LAB_ALLOW_UNSAFE_DIND = False
    settings.LAB_ALLOW_UNSANDBOXED_LOCAL = False
    assert unsafe_settings() == []


def test_unsafe_docker_in_docker_is_named_on_the_admins_front_page(client, staff_user, settings):
    settings.LAB_ALLOW_UNSAFE_DIND = True
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "trusted": {
        "BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"dind_mode": "privileged"}}}
    reset_cache()
    client.force_login(staff_user)
    page = client.get("/admin/").content.decode()
    assert "LAB_ALLOW_UNSAFE_DIND is on" in page
    assert "Runner &#x27;trusted&#x27; runs Docker-in-Docker as root on the host" in page


def test_guard_and_disk_limits_turned_off_are_named(settings):
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "open": {
        "BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"guard_host": False, "disk_limit": "off"}}}
    warnings = unsafe_settings()
    assert any("guard_host off" in warning for warning in warnings)
    assert any("disk_limit off" in warning for warning in warnings)


def test_check_fails_at_warning_level_while_something_unsafe_is_on(settings):
    settings.LAB_ALLOW_UNSAFE_DIND = True
    with pytest.raises(SystemCheckError, match=r"labs\.W001"):
        management.call_command("check", "--fail-level", "WARNING")


def test_privileged_docker_in_docker_pods_are_named(settings):
    settings.LAB_ALLOW_UNSAFE_DIND = False
    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, "cluster": {
        "BACKEND": "runners.kubernetes.KubernetesRunner",
        "OPTIONS": {"dind": {"namespace": "labs-privileged", "mode": "privileged"}}}}
    assert unsafe_settings() == ["Runner 'cluster' runs Docker-in-Docker engines in privileged pods (dind mode "
                                 "\"privileged\", refused until LAB_ALLOW_UNSAFE_DIND is on): root in such a "
                                 "session is root on its node."]
    settings.LAB_RUNNERS["cluster"]["OPTIONS"]["dind"]["mode"] = "rootless"
    assert unsafe_settings() == []
