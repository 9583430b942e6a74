from django.apps import AppConfig
from django.core import checks


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Lab sessions"

    def ready(self) -> None:
        checks.register(_posture_check, checks.Tags.security)


def _posture_check(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    from runners.posture import unsafe_settings

    return [checks.Warning(text, id=f"labs.W{index:03d}") for index, text in enumerate(unsafe_settings(), start=1)]
