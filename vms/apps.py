from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self) -> None:
        from sessions_app import job_recovery
        from vms.job_recovery import recover_snapshots

        job_recovery.register(recover_snapshots)
