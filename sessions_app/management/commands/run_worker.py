from django.core.management.base import BaseCommand, CommandParser

from jobqueue.worker import serve
from runners import all_runners


class Command(BaseCommand):
    help = (
        "Run the RQ worker on the given queues (default: default judge). It waits for Redis when "
        "Redis is away and carries on when it is back; SIGTERM or Ctrl-C stops it after the current job."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", default=["default", "judge"], metavar="QUEUE")

    def handle(self, *args: object, **options: object) -> None:
        verbosity = int(options["verbosity"])  # type: ignore[call-overload]
        level = "DEBUG" if verbosity >= 2 else ("WARNING" if verbosity == 0 else "INFO")
        queues = options["queues"]
        assert isinstance(queues, list)
        for runner in all_runners():
            runner.preload()  # once here, not again in every job's forked process
        serve(queues, logging_level=level)
