"""Steps starting in a session: their scripts, and when the lab is complete.

A step *starts* when it opens for the learner: the first step once the session is ready, a
later step once the step before it has started and has passed (or has no checks). With
``unlock_steps_in_order`` that is exactly when the page unlocks it. Steps that start together
(e.g. a step without checks and the one after it) run their scripts in step order, in one job.
The lab's intro (a Killercoda scenario's ``details.intro``) starts with the session, before
the first step.

A *background script* (Killercoda's ``background``) runs once per session: as root (in the
learner's group, see ``script_user``), through the runner's ``exec``, in an RQ job queued after
commit, so neither provisioning nor a check waits for it. Its output goes to a file in the
session (so a daemon it leaves running does not hold the exec open), the end of it is kept on a
``StepRun`` row, and the session's progress log records the start and the end.

A *foreground script* runs in the learner's first terminal, as Killercoda runs it: it is queued
on the session (``Session.queue_foreground_script``) when its step starts, and the terminal
consumer types it into terminal "1" as soon as that terminal is open (consoles/consumers.py).
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from jobqueue.queueing import enqueue_on_commit
from judge.checks.base import SAFE_PATH
from judge.checks.script import interpreter
from judge.models import StepRun
from judge.progress import final_passed, step_progress
from labs.models import LabStep
from runners.base import PollStatus, RunnerError
from sessions_app.models import Session, State

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 300  # seconds per script
OUTPUT_LIMIT = 4000  # characters of output kept

# Stores standard input in a root-only temporary file and runs it: <interpreter words> FILE.
# Output goes to a file, not to the exec's pipes: a server the script starts in the background
# keeps its descriptors, and would otherwise keep the exec (and the job) waiting. The script
# itself runs with umask 002, so what it makes in the workspace stays writable for the learner's
# group (see script_user).
RUN_BACKGROUND = f"""
umask 077
f=$(mktemp /tmp/labs-step-script.XXXXXX) || exit 125
cat > "$f" || exit 125
: > "$f.log"
umask 002
"$@" "$f" >> "$f.log" 2>&1 < /dev/null
rc=$?
tail -c {OUTPUT_LIMIT} "$f.log"
rm -f "$f" "$f.log"
exit $rc
"""


def started_steps(session: Session, progress: dict[int, bool | None] | None = None) -> list[LabStep]:
    """The steps of the session's lab that have started, in order (see the module docstring)."""
    progress = step_progress(session) if progress is None else progress
    started: list[LabStep] = []
    for step in LabStep.objects.filter(lab_id=session.lab_id).order_by("order"):
        started.append(step)
        if step.verify and progress.get(step.pk) is not True:
            break
    return started


def start_open_steps(session: Session) -> list[StepRun]:
    """Start the intro and the steps that have started and have not yet in ``session``: queue their
    background scripts (one job, in order) and their foreground scripts (for the first terminal)."""
    if session.state != State.RUNNING:
        return []
    lab = session.lab
    new: list[StepRun] = []
    pieces: list[tuple[LabStep | None, str, str]] = [(None, lab.intro_background_script, lab.intro_foreground_script)]
    pieces += [(step, step.background_script, step.foreground_script) for step in started_steps(session)]
    for step, background, foreground in pieces:
        if not background.strip() and not foreground.strip():
            continue
        run, created = StepRun.objects.get_or_create(
            session=session, step=step,
            defaults={"status": StepRun.Status.QUEUED if background.strip() else StepRun.Status.NONE})
        if not created:
            continue
        if foreground.strip():
            session.queue_foreground_script(run.label, foreground)
        if background.strip():
            new.append(run)
    if new:
        ids = [run.pk for run in new]
        # By name: the jobs module imports the engine, which calls into this one.
        enqueue_on_commit("judge.jobs.run_step_scripts", ids, job_id=f"step-scripts-{ids[0]}",
                          job_timeout=SCRIPT_TIMEOUT * len(ids) + 120)
    return new


def on_session_ready(sender: Any, session: Session, **kwargs: Any) -> None:
    """sessions_app's `session_ready`: the intro and the first step start with the session."""
    start_open_steps(session)


def run_step_scripts(run_ids: list[int]) -> None:
    """Run queued background scripts in order. Idempotent: a run not queued any more is skipped."""
    for run_id in run_ids:
        if not StepRun.objects.filter(pk=run_id, status=StepRun.Status.QUEUED).update(
            status=StepRun.Status.RUNNING
        ):
            continue
        run = StepRun.objects.select_related("session", "step").get(pk=run_id)
        try:
            status, exit_code, output = _run(run)
        except Exception as exc:  # recorded on the row, never lost in the worker's log only
            log.exception("background script of step run %s failed", run_id)
            status, exit_code, output = StepRun.Status.FAILED, None, f"internal error: {type(exc).__name__}"
            run.session.log(f"{run.label}: its setup script could not run (internal error).", level="error")
        StepRun.objects.filter(pk=run_id).update(status=status, exit_code=exit_code, output=output[-OUTPUT_LIMIT:],
                                                 finished_at=timezone.now())


def _run(run: StepRun) -> tuple[str, int | None, str]:
    session, step = run.session, run.step
    label = run.label
    if session.state != State.RUNNING or not session.runner_state:
        return StepRun.Status.FAILED, None, "the session was not running"
    try:
        runner = session.runner()
        if runner.poll(session.runner_state) != PollStatus.RUNNING:
            return StepRun.Status.FAILED, None, "the session's environment was not running"
    except RunnerError as exc:
        session.log(f"{label}: its setup script could not run: {exc}", level="error")
        return StepRun.Status.FAILED, None, str(exc)
    session.log(f"{label}: setup script started.")
    script = (step.background_script if step is not None else session.lab.intro_background_script).replace(
        "\r\n", "\n")
    state = session.runner_state
    try:
        result = runner.exec(state, ["sh", "-c", RUN_BACKGROUND, "sh", *interpreter(script)],
                             timeout=SCRIPT_TIMEOUT, stdin=script.encode(), user=script_user(runner, state),
                             environment={"PATH": SAFE_PATH, "HOME": "/root"})
    except RunnerError as exc:
        session.log(f"{label}: its setup script could not run: {exc}", level="error")
        return StepRun.Status.FAILED, None, str(exc)
    output = (result.stdout + result.stderr).decode(errors="replace")
    if result.timed_out:
        session.log(f"{label}: setup script stopped after {SCRIPT_TIMEOUT} s.", level="warning")
        return StepRun.Status.FAILED, result.exit_code, output
    if result.exit_code != 0:
        last = output.strip().splitlines()[-1][:300] if output.strip() else ""
        session.log(f"{label}: setup script failed with status {result.exit_code}{': ' + last if last else '.'}",
                    level="warning")
        return StepRun.Status.FAILED, result.exit_code, output
    session.log(f"{label}: setup script finished.")
    return StepRun.Status.DONE, 0, output


def script_user(runner: Any, state: dict[str, Any]) -> str:
    """Root, in the learner's group: ``0:<gid>``.

    Killercoda runs these scripts as root, so they get root's files (the system: packages,
    services, /etc, /var). Docker sessions give root no capabilities over other users' files,
    though, so root alone could not write the learner's workspace; as a member of the
    learner's group it can, where a directory is group-writable (labs/assets.py makes the
    workspace's directories so), and what it creates there (umask 002) the learner may change.
    """
    found = runner.exec(state, ["id", "-g"], timeout=10)  # the learner: the exec's default user
    gid = found.stdout.decode(errors="replace").strip() if found.ok else ""
    return f"0:{gid}" if gid.isdigit() and gid != "0" else "root"


def lab_complete(session: Session, progress: dict[int, bool | None] | None = None) -> bool:
    """Every step with checks passed, and the final check too when the lab has one.

    A lab with no checks at all counts as complete: nothing stands between the learner and
    its finish text (Killercoda shows the finish page to whoever clicks through).
    """
    progress = step_progress(session) if progress is None else progress
    checked = [step for step in session.lab.steps.all() if step.verify]
    if any(progress.get(step.pk) is not True for step in checked):
        return False
    return not session.lab.judge or final_passed(session) is True
