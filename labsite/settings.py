"""Settings for the lab platform, every value driven by an environment variable.

Each variable is listed in README.md. With nothing set, the platform runs on its
embedded defaults: a SQLite file, the in-memory channel layer and RQ jobs run inline.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from csp import constants as csp
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None


def _persistent_secret_key(data_dir: Path) -> str:
    """A random key kept in the data directory, so embedded installs need no configuration."""
    key_file = data_dir / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


DATA_DIR = Path(env_str("LAB_DATA_DIR", str(BASE_DIR / "var")))
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or _persistent_secret_key(DATA_DIR)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "django.contrib.humanize",
    "channels",
    "django_rq",
    "django_htmx",
    "template_partials",
    "ninja",  # the JSON API's docs page and its static files (api/)
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.github",
    "accounts",
    "audit",
    "labs",
    "sessions_app",
    "consoles",
    "preview",
    "vms",
    "judge",
    "watchdog",
    "metrics",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "webserver.content_security.PlatformCSPMiddleware",  # after WhiteNoise: static files need no policy
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "webserver.method_not_allowed.MethodNotAllowedPageMiddleware",
]

ROOT_URLCONF = "labsite.urls"
WSGI_APPLICATION = "labsite.wsgi.application"
ASGI_APPLICATION = "labsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.appearance",
            ],
        },
    },
]

# Database: a SQLite file unless DATABASE_URL names another (PostgreSQL in production).
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    import dj_database_url

    try:
        # No persistent connections: under ASGI (daphne) each request may run on another thread,
        # and Django's docs say to disable them there, or idle connections pile up per thread.
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not usable: {exc}") from None
    DATABASES["default"].setdefault("TEST", {})
    if env_str("DATABASE_TEST_NAME"):
        DATABASES["default"]["TEST"]["NAME"] = env_str("DATABASE_TEST_NAME")
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "db.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                # WAL lets pages read while a job writes; NORMAL sync is safe with WAL and much faster.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: RQ queues and the channel layer; without it jobs run inline and the layer is in memory.
REDIS_URL = env_str("REDIS_URL")
# Jobs go to workers only with Redis; LAB_RQ_ASYNC=false runs them inline on the real Redis (tests).
RQ_ASYNC = env_bool("LAB_RQ_ASYNC", bool(REDIS_URL))
if RQ_ASYNC and not REDIS_URL:
    raise ImproperlyConfigured("LAB_RQ_ASYNC=true needs REDIS_URL")
# A judge job may build for up to an hour (docker_build's longest timeout); RQ must not kill it first.
RQ_QUEUES: dict[str, dict[str, Any]] = {
    name: {"URL": REDIS_URL or "redis://embedded/0", "ASYNC": RQ_ASYNC, "DEFAULT_TIMEOUT": timeout}
    for name, timeout in (("default", 900), ("judge", 3900))
}
# Without Redis, jobs run in background threads of the process that queues them, so a page
# never waits for a container or a build; "inline" runs them inside the request instead.
LAB_EMBEDDED_JOBS = env_str("LAB_EMBEDDED_JOBS", "thread")
if LAB_EMBEDDED_JOBS not in ("thread", "inline"):
    raise ImproperlyConfigured(f"LAB_EMBEDDED_JOBS must be 'thread' or 'inline', not {LAB_EMBEDDED_JOBS!r}")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
SITE_ID = 1
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "labs:catalog"
ACCOUNT_LOGOUT_REDIRECT_URL = "labs:catalog"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_ALLOW_SIGNUP = env_bool("LAB_ALLOW_SIGNUP", True)
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
SOCIALACCOUNT_ONLY = False
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_QUERY_EMAIL = True
GITHUB_CLIENT_ID = env_str("GITHUB_CLIENT_ID")
GITHUB_CLIENT_SECRET = env_str("GITHUB_CLIENT_SECRET")
_github: dict[str, Any] = {"SCOPE": ["read:user", "user:email"]}
if GITHUB_CLIENT_ID:
    if not GITHUB_CLIENT_SECRET:
        raise ImproperlyConfigured("GITHUB_CLIENT_ID is set but GITHUB_CLIENT_SECRET is not")
    _github["APPS"] = [{"client_id": GITHUB_CLIENT_ID, "secret": GITHUB_CLIENT_SECRET, "key": ""}]
if env_str("GITHUB_URL"):
    # GitHub Enterprise, or the OAuth double the tests run.
    _github["GITHUB_URL"] = env_str("GITHUB_URL")
SOCIALACCOUNT_PROVIDERS = {"github": _github}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("LAB_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("LAB_STATIC_ROOT", str(DATA_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("LAB_MEDIA_ROOT", str(DATA_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env_bool("LAB_MANIFEST_STATIC", not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Production hardening; `manage.py check --deploy` passes once these are set.
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
if env_bool("DJANGO_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"  # the web preview view opts into SAMEORIGIN for its iframe

# Content-Security-Policy of every page Django serves (django-csp). Inline scripts and styles need
# the response's nonce (`request.csp_nonce` in templates); webserver/content_security.py adds the
# page's ws:/wss: origin, LAB_PREVIEW_HOST and the few per-page exceptions. Fixed in code, not an
# environment variable: every source is there because a page needs it.
_github_url = urlsplit(env_str("GITHUB_URL") or "https://github.com")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF, csp.NONCE],
        "style-src": [csp.SELF, csp.NONCE],
        "img-src": [csp.SELF, "data:"],  # the favicon and noVNC's cursors are data: URLs
        "connect-src": [csp.SELF],
        "frame-src": [csp.SELF],  # the web preview's iframe
        "frame-ancestors": [csp.NONE],
        "object-src": [csp.NONE],
        "base-uri": [csp.SELF],
        # "Sign in with GitHub" posts to us and we redirect that navigation to GitHub's consent page.
        "form-action": [csp.SELF, f"{_github_url.scheme}://{_github_url.netloc}"],
    },
}

# Lab platform behaviour.
LAB_RUNNERS: dict[str, dict[str, Any]] = env_json("LAB_RUNNERS", {})
# Checked here so a wrong shape stops the start-up instead of the first session start.
if not isinstance(LAB_RUNNERS, dict) or not all(
    isinstance(alias, str) and isinstance(config, dict) and isinstance(config.get("BACKEND"), str)
    and isinstance(config.get("OPTIONS", {}), dict)
    for alias, config in LAB_RUNNERS.items()
):
    raise ImproperlyConfigured(
        'LAB_RUNNERS must be a JSON object of runner aliases, e.g. '
        '{"docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {}}}'
    )
LAB_DEFAULT_RUNNER = env_str("LAB_DEFAULT_RUNNER", "default")
LAB_SESSION_WARNING_MINUTES = env_int("LAB_SESSION_WARNING_MINUTES", 5, minimum=0)
LAB_ACTIVITY_WRITE_SECONDS = env_int("LAB_ACTIVITY_WRITE_SECONDS", 30, minimum=0)
# The session page's live streams (sessions_app/streams.py): a comment line after this long without
# an event keeps proxies from closing an idle stream; the database is re-read this often even when no
# push notice came; staff's output view asks the runner this often.
LAB_STREAM_HEARTBEAT_SECONDS = env_float("LAB_STREAM_HEARTBEAT_SECONDS", 15.0)
LAB_STREAM_RECHECK_SECONDS = env_float("LAB_STREAM_RECHECK_SECONDS", 10.0)
LAB_OUTPUT_POLL_SECONDS = env_float("LAB_OUTPUT_POLL_SECONDS", 1.0)
for _name in ("LAB_STREAM_HEARTBEAT_SECONDS", "LAB_STREAM_RECHECK_SECONDS", "LAB_OUTPUT_POLL_SECONDS"):
    if not 0.05 <= globals()[_name] <= 3600:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]} must be between 0.05 and 3600 seconds")
LAB_START_TIMEOUT_SECONDS = env_int("LAB_START_TIMEOUT_SECONDS", 120, minimum=1)
# /readyz calls the job queue stuck when its oldest job has waited longer than this (or no worker is alive).
LAB_QUEUE_STUCK_SECONDS = env_int("LAB_QUEUE_STUCK_SECONDS", 300, minimum=1)
LAB_ALLOW_UNSANDBOXED_LOCAL = env_bool("LAB_ALLOW_UNSANDBOXED_LOCAL", False)
# Docker-in-Docker as root in a privileged container (dind_mode "privileged" or "capabilities"):
# root in such a session is root on the host. Only for trusted labs; the admin warns while it is on.
LAB_ALLOW_UNSAFE_DIND = env_bool("LAB_ALLOW_UNSAFE_DIND", False)
# QEMU accelerator for VM labs when the qemu runner's OPTIONS name none: "auto" (KVM when a probe VM
# really runs under it, else TCG), "kvm" or "tcg".
LAB_QEMU_ACCEL = env_str("LAB_QEMU_ACCEL", "auto")
# Largest asciinema cast kept per recorded terminal; recording stops (with a marker) past it.
LAB_RECORDING_MAX_BYTES = env_int("LAB_RECORDING_MAX_BYTES", 50 * 1024 * 1024, minimum=1024)
LAB_DEMO_CATALOG = BASE_DIR / "labs" / "demo_catalog"
LAB_SHARE_MAX_MINUTES = env_int("LAB_SHARE_MAX_MINUTES", 24 * 60, minimum=1)

# The resource watchdog (watchdog/, `manage.py run_watchdog`): how often it samples; thresholds per alert
# kind laid over watchdog/rules.py's DEFAULTS (percentages and seconds, e.g.
# {"session_memory": {"warning": 80, "critical": 95, "window_seconds": 60, "clear_margin": 5}}; checked by
# `manage.py check` and at the watchdog's start); and a webhook told when an alert opens, turns critical
# or resolves (watchdog/webhooks.py: json, slack or telegram, which needs the chat's id).
LAB_WATCHDOG_INTERVAL_SECONDS = env_int("LAB_WATCHDOG_INTERVAL_SECONDS", 30, minimum=1)
LAB_WATCHDOG_THRESHOLDS: dict[str, Any] = env_json("LAB_WATCHDOG_THRESHOLDS", {})
LAB_WATCHDOG_WEBHOOK_URL = env_str("LAB_WATCHDOG_WEBHOOK_URL").strip()
LAB_WATCHDOG_WEBHOOK_FORMAT = env_str("LAB_WATCHDOG_WEBHOOK_FORMAT", "json").strip().lower() or "json"
LAB_WATCHDOG_TELEGRAM_CHAT_ID = env_str("LAB_WATCHDOG_TELEGRAM_CHAT_ID").strip()
LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS = env_float("LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS", 5.0)
if LAB_WATCHDOG_WEBHOOK_FORMAT not in ("json", "slack", "telegram"):
    raise ImproperlyConfigured(f"LAB_WATCHDOG_WEBHOOK_FORMAT={LAB_WATCHDOG_WEBHOOK_FORMAT!r}: "
                               "use json, slack or telegram")
if LAB_WATCHDOG_WEBHOOK_URL and urlsplit(LAB_WATCHDOG_WEBHOOK_URL).scheme not in ("http", "https"):
    raise ImproperlyConfigured("LAB_WATCHDOG_WEBHOOK_URL must be an http:// or https:// address")
if LAB_WATCHDOG_WEBHOOK_URL and LAB_WATCHDOG_WEBHOOK_FORMAT == "telegram" and not LAB_WATCHDOG_TELEGRAM_CHAT_ID:
    raise ImproperlyConfigured("LAB_WATCHDOG_WEBHOOK_FORMAT=telegram needs LAB_WATCHDOG_TELEGRAM_CHAT_ID")
if LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("LAB_WATCHDOG_WEBHOOK_TIMEOUT_SECONDS must be a positive number of seconds")


def _preview_host(raw: str) -> str:
    """LAB_PREVIEW_HOST: a host name (optionally host:port) of its own for web previews, or ""."""
    value = raw.strip().lower()
    if not value:
        return ""
    if not re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?", value):
        raise ImproperlyConfigured(f"LAB_PREVIEW_HOST={raw!r} is not a host name or host:port (no scheme, no path)")
    parts = urlsplit("//" + value)
    host = parts.hostname or ""
    # Not a host name the platform answers on, whatever the port: browsers scope cookies by host
    # name alone, so the previews' script could read and replace the platform's cookies.
    for allowed in (h.lower() for h in ALLOWED_HOSTS):
        name = allowed.removeprefix(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]  # as urlsplit gives an IPv6 preview host
        if name == host or (allowed.startswith(".") and host.endswith(allowed)):
            raise ImproperlyConfigured(
                f"LAB_PREVIEW_HOST={raw!r}: the platform is served on {host} too (DJANGO_ALLOWED_HOSTS has "
                f"{allowed!r}); cookies ignore ports, so previews need another host name, e.g. localhost "
                "for previews and DJANGO_ALLOWED_HOSTS=127.0.0.1,[::1] for the platform (what run.sh sets)"
            )
    # A CSRF-trusted preview origin would let a previewed app post forms to the platform.
    for origin in CSRF_TRUSTED_ORIGINS:
        trusted = (urlsplit(origin).hostname or "").lower()
        if trusted == host or (urlsplit(origin).netloc.startswith("*.") and host.endswith(trusted.lstrip("*"))):
            raise ImproperlyConfigured(f"DJANGO_CSRF_TRUSTED_ORIGINS must not include the preview host ({origin})")
    return value


# The web previews' own origin (run.sh sets localhost:<port>); empty: they are served on the
# platform's origin under a CSP sandbox (see README "Web preview").
LAB_PREVIEW_HOST = _preview_host(env_str("LAB_PREVIEW_HOST"))

# VM images, learner ISOs and snapshots.
LAB_VM_IMAGE_DIR = Path(env_str("LAB_VM_IMAGE_DIR", str(DATA_DIR / "vm-images")))
LAB_SNAPSHOT_DIR = Path(env_str("LAB_SNAPSHOT_DIR", str(DATA_DIR / "snapshots")))
LAB_ISO_MAX_BYTES = env_int("LAB_ISO_MAX_BYTES", 2 * 1024**3, minimum=1)
LAB_ISO_PER_USER = env_int("LAB_ISO_PER_USER", 2, minimum=0)
LAB_SNAPSHOT_KEEP_PER_USER = env_int("LAB_SNAPSHOT_KEEP_PER_USER", 5, minimum=1)
LAB_SNAPSHOT_MAX_AGE_DAYS = env_int("LAB_SNAPSHOT_MAX_AGE_DAYS", 30, minimum=1)

# The in-browser editor: largest file it opens or saves (bytes).
LAB_EDITOR_MAX_BYTES = env_int("LAB_EDITOR_MAX_BYTES", 1024 * 1024, minimum=1)

# Request bodies, refused with 413 before they are read when larger than their route allows
# (webserver/body_limits.py, enforced by the server webserver/serve.py). Routes for uploads take more,
# and only from their own users: ISOs (LAB_ISO_MAX_BYTES) from signed-in learners, VM images
# uploaded in the admin from staff, editor saves (sized from LAB_EDITOR_MAX_BYTES) from signed-in users.
LAB_MAX_BODY_BYTES = env_int("LAB_MAX_BODY_BYTES", 1024 * 1024, minimum=4096)
LAB_VM_IMAGE_MAX_BYTES = env_int("LAB_VM_IMAGE_MAX_BYTES", 32 * 1024**3, minimum=1)
LAB_PREVIEW_MAX_BODY_BYTES = env_int("LAB_PREVIEW_MAX_BODY_BYTES", 32 * 1024 * 1024, minimum=4096)

# Hints from Gemini; without an API key (or when the API fails) the lab's own hints are given.
LAB_GEMINI_API_KEY = env_str("GEMINI_API_KEY")
LAB_GEMINI_MODEL = env_str("LAB_GEMINI_MODEL", "gemini-2.5-flash") or "gemini-2.5-flash"
LAB_GEMINI_TEMPERATURE = env_float("LAB_GEMINI_TEMPERATURE", 0.3)
LAB_GEMINI_MAX_OUTPUT_TOKENS = env_int("LAB_GEMINI_MAX_OUTPUT_TOKENS", 512, minimum=1)
LAB_GEMINI_TIMEOUT_SECONDS = env_float("LAB_GEMINI_TIMEOUT_SECONDS", 20.0)
if LAB_GEMINI_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("LAB_GEMINI_TIMEOUT_SECONDS must be a positive number of seconds")
LAB_GEMINI_BASE_URL = env_str("LAB_GEMINI_BASE_URL")  # empty: Google's endpoint

# /metrics (metrics/access.py): open to loopback, to these networks (comma-separated CIDRs) and to
# requests carrying "Authorization: Bearer <LAB_METRICS_TOKEN>"; everything else gets 403.
LAB_METRICS_NETWORKS = env_list("LAB_METRICS_NETWORKS", [])
for _network in LAB_METRICS_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"LAB_METRICS_NETWORKS: {_network!r} is not a network (e.g. 10.0.0.0/8)") from None
LAB_METRICS_TOKEN = env_str("LAB_METRICS_TOKEN")

# The JSON API: requests per personal token, "N/second|minute|hour|day" (empty: no limit), counted
# in Redis with REDIS_URL (shared by every process), else in this process's cache (api/rate_limit.py).
_API_RATE_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_api_rate = env_str("LAB_API_RATE_LIMIT", "120/minute").strip().lower()
_api_rate_match = re.fullmatch(r"([1-9]\d*)\s*/\s*(second|minute|hour|day)", _api_rate)
if _api_rate and _api_rate_match is None:
    raise ImproperlyConfigured(f"LAB_API_RATE_LIMIT={_api_rate!r} is not a rate like 120/minute "
                               "(a positive count per second, minute, hour or day; empty for no limit)")
# (requests, seconds) or None
LAB_API_RATE_LIMIT: tuple[int, int] | None = (
    (int(_api_rate_match[1]), _API_RATE_PERIODS[_api_rate_match[2]]) if _api_rate_match else None)

# Killercoda scenarios name a backend image id; this maps each id to a local Image: its name, or
# {"image": name, "reference": "repo:tag" (creates the image on import when missing),
#  "docker_access": bool, "hosts": ["controlplane", "node01"], "note": "shown when importing"}.
_KILLERCODA_HOST = {"image": "labs-killercoda", "reference": "labs/killercoda:bookworm", "docker_access": True}
_NO_KUBERNETES = ("the hosts are Debian machines with Docker and the usual tools; Kubernetes itself is not "
                  "installed, so steps that need a cluster cannot pass")
LAB_KILLERCODA_IMAGES: dict[str, Any] = env_json("LAB_KILLERCODA_IMAGES", {
    "ubuntu": _KILLERCODA_HOST,
    "kubernetes-kubeadm-1node": {**_KILLERCODA_HOST, "hosts": ["controlplane"], "note": _NO_KUBERNETES},
    "kubernetes-kubeadm-2nodes": {**_KILLERCODA_HOST, "hosts": ["controlplane", "node01"], "note": _NO_KUBERNETES},
})


def _killercoda_image_ok(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, dict) or not isinstance(value.get("image"), str) or not value["image"]:
        return False
    allowed = {"image": str, "reference": str, "docker_access": bool, "hosts": list, "note": str}
    return all(key in allowed and isinstance(item, allowed[key]) for key, item in value.items()) and all(
        isinstance(host, str) and re.fullmatch(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?", host)
        for host in value.get("hosts", []))


if not isinstance(LAB_KILLERCODA_IMAGES, dict) or not all(
    isinstance(key, str) and _killercoda_image_ok(value) for key, value in LAB_KILLERCODA_IMAGES.items()
):
    raise ImproperlyConfigured(
        'LAB_KILLERCODA_IMAGES must be a JSON object mapping image ids to an image name or to '
        '{"image": name, "reference": "repo:tag", "docker_access": true, "hosts": ["a", "b"], "note": "..."}')

# import_lab: lab files are untrusted input (labs/LAB_FORMAT.md, "Limits" and "Privileged settings").
LAB_IMPORT_MAX_FILE_BYTES = env_int("LAB_IMPORT_MAX_FILE_BYTES", 1024 * 1024, minimum=1024)
LAB_IMPORT_MAX_ASSETS_BYTES = env_int("LAB_IMPORT_MAX_ASSETS_BYTES", 100 * 1024 * 1024, minimum=0)
LAB_IMPORT_RUNNERS = env_list("LAB_IMPORT_RUNNERS", ["default", "docker", "local", "qemu"])
_IMPORT_RESOURCE_DEFAULTS = {"cpu": 4, "memory_mb": 8192, "pids_limit": 4096, "disk_mb": 20480}
_import_resources = env_json("LAB_IMPORT_RESOURCE_LIMITS", {})
if not isinstance(_import_resources, dict) or not all(
    key in _IMPORT_RESOURCE_DEFAULTS and isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    for key, value in _import_resources.items()
):
    raise ImproperlyConfigured(
        'LAB_IMPORT_RESOURCE_LIMITS must be a JSON object of positive numbers for any of cpu, memory_mb, '
        'pids_limit and disk_mb, e.g. {"memory_mb": 16384}'
    )
LAB_IMPORT_RESOURCE_LIMITS: dict[str, float] = {**_IMPORT_RESOURCE_DEFAULTS, **_import_resources}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LAB_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # the preview proxy would log every request
        "httpx": {"level": "WARNING"},
    },
}
