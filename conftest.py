"""Shared fixtures: a fixed cast of users and a small published lab.

In CI (CI=true) the suite must run on the machine's PostgreSQL and Redis; it refuses to
start on anything else rather than silently falling back to SQLite.
"""

from __future__ import annotations

import os

import pytest

# Fixtures shared across apps: `vm_image`, the tiny bootable test VM (built once per run), and
# `redis_server` / `queues_on_own_redis` / `rq_worker`, a Redis of the test's own and a worker on it.
pytest_plugins = ["tests.vm_image", "tests.redis_server", "tests.k8s.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI", "").lower() == "true":
        if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
            raise pytest.UsageError("CI=true but DATABASE_URL does not point at PostgreSQL")
        if not os.environ.get("REDIS_URL", "").startswith("redis://"):
            raise pytest.UsageError("CI=true but REDIS_URL is not set")


@pytest.fixture(autouse=True)
def _plain_static_storage(settings, tmp_path_factory):
    """Pages render without a collected static manifest."""
    settings.STATIC_ROOT = tmp_path_factory.getbasetemp() / "staticfiles"
    settings.STATIC_ROOT.mkdir(exist_ok=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Users are created in nearly every test; a full-strength hash would dominate the run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def engine():
    """The machine's real Docker engine; a missing one fails the test (never a skip)."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"the Docker engine is required for these tests: {exc}")
    return client


@pytest.fixture
def password() -> str:
    return "correct-horse-battery-staple-42"


@pytest.fixture
def owner(django_user_model, password):
    return django_user_model.objects.create_user("olivia", "olivia@example.com", password)


@pytest.fixture
def other_learner(django_user_model, password):
    return django_user_model.objects.create_user("oscar", "oscar@example.com", password)


@pytest.fixture
def staff_user(django_user_model, password):
    return django_user_model.objects.create_user(
        "stella", "stella@example.com", password, is_staff=True, is_superuser=True
    )


@pytest.fixture
def container_image(db):
    from labs.models import Image

    return Image.objects.create(name="tiny", kind=Image.Kind.CONTAINER, reference="labs/tiny:test")


@pytest.fixture
def lab(container_image):
    from labs.models import Lab, LabStep

    lab = Lab.objects.create(
        slug="hello-shell",
        title="Hello shell",
        summary="Say hello",
        description="# Hello\n\nRun `echo hi`.",
        image=container_image,
        runner="fake",
        consoles=["terminal"],
        published=True,
    )
    LabStep.objects.create(lab=lab, order=1, title="Greet", body="Type `echo hello`.")
    return lab


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


FAKE_RUNNERS = {
    # Tests get their own Docker label, so a real install's reconciler on the same engine never
    # takes test containers for orphans (nor the reverse).
    # LAB_TEST_DOCKER_INSTANCE keeps two test runs on one engine out of each other's way.
    "docker": {
        "BACKEND": "runners.docker.DockerRunner",
        "OPTIONS": {"instance": os.environ.get("LAB_TEST_DOCKER_INSTANCE", "labstest")},
    },
    "fake": {"BACKEND": "runners.fake.FakeRunner", "OPTIONS": {}},
    "fake-slow": {"BACKEND": "runners.fake.FakeRunner", "OPTIONS": {"start_delay": 3}},
    "fake-failing": {"BACKEND": "runners.fake.FakeRunner", "OPTIONS": {"fail_on": "start"}},
}


@pytest.fixture(autouse=True)
def fake_runners(settings):
    """Every test can use the in-memory runners; the real ones stay configured as usual."""
    from runners import fake, reset_cache

    settings.LAB_RUNNERS = {**settings.LAB_RUNNERS, **FAKE_RUNNERS}
    reset_cache()
    yield
    fake.ENVIRONMENTS.clear()
    reset_cache()
