from django.apps import AppConfig


class JudgeConfig(AppConfig):
    name = "judge"
    verbose_name = "Judge"

    def ready(self) -> None:
        from judge import job_recovery as judge_recovery
        from judge.checks import validate_checks
        from judge.steps import on_session_ready
        from labs.labformat import register_check_validator
        from sessions_app import job_recovery
        from sessions_app.signals import session_ready

        job_recovery.register(judge_recovery.recover)
        register_check_validator(validate_checks)
        session_ready.connect(on_session_ready, dispatch_uid="judge.start_open_steps")
