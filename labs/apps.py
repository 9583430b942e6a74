from django.apps import AppConfig


class LabsConfig(AppConfig):
    name = "labs"
    verbose_name = "Labs and images"

    def ready(self) -> None:
        # Other lab formats add their loader to labformat.LOADERS when imported (they import
        # labformat, never the other way round).
        from labs import killercoda  # noqa: F401
