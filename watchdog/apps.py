from typing import Any

from django.apps import AppConfig
from django.core import checks


class WatchdogConfig(AppConfig):
    name = "watchdog"
    verbose_name = "Resource watchdog"

    def ready(self) -> None:
        checks.register(check_thresholds, "watchdog")


def check_thresholds(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """`manage.py check` (and test.sh) refuse malformed LAB_WATCHDOG_THRESHOLDS, as run_watchdog does."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from watchdog.rules import thresholds

    try:
        thresholds(settings.LAB_WATCHDOG_THRESHOLDS)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="watchdog.E001")]
    return []
