"""What sessions tell the apps above them, which sessions_app never imports."""

from django.dispatch import Signal

# Sent by provisioning once a session is running, with `session`. Receivers run in the job that
# started it; one that fails is logged and does not undo the start.
session_ready = Signal()
