import time

from django.core.management.base import BaseCommand, CommandParser

from sessions_app.reconcile import reconcile


class Command(BaseCommand):
    help = "Remove environments no live session owns; fail sessions whose environment vanished."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", type=int, metavar="SECONDS", help="Repeat every SECONDS until interrupted.")

    def handle(self, *args: object, **options: object) -> None:
        interval = options.get("loop")
        while True:
            report = reconcile()
            self.stdout.write(f"orphans_removed={report.orphans_removed} sessions_failed={report.sessions_failed} "
                              f"sessions_stopped={report.sessions_stopped}")
            for error in report.errors:
                self.stderr.write(error)
            if not interval:
                return
            time.sleep(int(interval))  # type: ignore[call-overload]
