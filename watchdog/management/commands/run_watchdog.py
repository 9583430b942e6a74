import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from watchdog.rules import thresholds
from watchdog.watching import Watchdog


class Command(BaseCommand):
    help = ("Sample the host and every running session, and open or resolve alerts when a threshold holds for "
            "its window: every LAB_WATCHDOG_INTERVAL_SECONDS (or --loop SECONDS) until interrupted, or --once.")

    def add_arguments(self, parser: CommandParser) -> None:
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--once", action="store_true", help="One pass, then exit.")
        when.add_argument("--loop", type=int, metavar="SECONDS",
                          help="Repeat every SECONDS (default: LAB_WATCHDOG_INTERVAL_SECONDS).")

    def handle(self, *args: object, **options: object) -> None:
        try:
            rules = thresholds(settings.LAB_WATCHDOG_THRESHOLDS)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        loop = options.get("loop")
        interval = int(loop) if isinstance(loop, int) else settings.LAB_WATCHDOG_INTERVAL_SECONDS
        if interval < 1:
            raise CommandError("--loop needs at least 1 second")
        watchdog = Watchdog(rules)  # keeps the windows between passes: one process, one loop
        while True:
            started = time.monotonic()
            report = watchdog.run_once()
            self.stdout.write(report.summary())
            self.stdout.flush()
            if options.get("once"):
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
