import time

from django.core.management.base import BaseCommand, CommandParser

from sessions_app.reaping import reap


class Command(BaseCommand):
    help = (
        "Stop expired and idle sessions, delete old ended ones, retry or fail the jobs of dead workers, "
        "re-queue jobs Redis lost, fail stuck starts and re-queue stuck teardowns (one pass, or --loop SECONDS)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", type=int, metavar="SECONDS", help="Repeat every SECONDS until interrupted.")

    def handle(self, *args: object, **options: object) -> None:
        interval = options.get("loop")
        while True:
            report = reap()
            self.stdout.write(report.summary())
            self.stdout.flush()
            if not interval:
                return
            time.sleep(int(interval))  # type: ignore[call-overload]
