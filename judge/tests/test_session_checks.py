"""command, file, script and http checks, and streamed commands, in real containers (Docker runner).

labs/base:bookworm has the judge user (1001): checks run as it. labs/busybox:latest has none:
checks fall back to the session's own user.
"""

from __future__ import annotations

import uuid

import pytest

from judge.checks import CheckContext, JudgeError, get_kind
from judge.checks.background import run_streaming
from judge.tests.judge_env import require_engine, require_images, reset_workspace, start_environment, stop_environment

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def base_env():
    require_engine()
    require_images("labs/base:bookworm")
    runner, state = start_environment(f"labst{uuid.uuid4().hex[:6]}", "labs/base:bookworm")
    yield runner, state
    stop_environment(runner, state)


@pytest.fixture(scope="module")
def busybox_env():
    require_engine()
    require_images("labs/busybox:latest")
    runner, state = start_environment(f"labst{uuid.uuid4().hex[:6]}", "labs/busybox:latest")
    yield runner, state
    stop_environment(runner, state)


@pytest.fixture
def ctx(base_env, tmp_path):
    runner, state = base_env
    reset_workspace(runner, state, {"app.py": b"print('hello')\n", "notes/todo.md": b"- [ ] ship it\n"})
    return CheckContext(runner, state, lab_dir=tmp_path)


def run(ctx: CheckContext, spec: dict):
    kind = get_kind(spec["kind"])
    assert kind is not None
    assert kind.validate(spec, ctx.lab_dir) == []
    return kind.finish(kind.run(ctx, spec), spec)


def codes(ctx: CheckContext, spec: dict) -> list[str]:
    return [failure.code for failure in run(ctx, spec).failures]


# command --------------------------------------------------------------------------------

def test_a_command_passes_on_its_exit_code_and_output(ctx):
    assert codes(ctx, {"kind": "command", "run": "python3 app.py", "stdout": "^hello$"}) == []
    assert codes(ctx, {"kind": "command", "run": ["sh", "-c", "exit 3"], "exit_code": 3}) == []


def test_a_failing_command_reports_its_status_and_error(ctx):
    outcome = run(ctx, {"kind": "command", "run": "ls missing-file"})
    assert [f.code for f in outcome.failures] == ["command_failed"]
    assert "exited with status 2" in outcome.failures[0].message
    assert "missing-file" in outcome.failures[0].message


def test_output_that_does_not_match_is_reported(ctx):
    assert codes(ctx, {"kind": "command", "run": "python3 app.py", "stdout": "^bye$"}) == ["stdout_mismatch"]
    assert codes(ctx, {"kind": "command", "run": "echo oops >&2", "stderr": "^fine$"}) == ["stderr_mismatch"]


def test_standard_input_reaches_the_command(ctx):
    assert codes(ctx, {"kind": "command", "run": "read line; test \"$line\" = 42", "input": "42\n"}) == []


def test_a_command_that_runs_too_long_is_stopped(ctx):
    assert codes(ctx, {"kind": "command", "run": "sleep 30", "timeout": 1}) == ["command_timed_out"]


def test_commands_run_as_the_judge_who_cannot_change_the_workspace(ctx):
    assert codes(ctx, {"kind": "command", "run": "id -un", "stdout": "^judge$"}) == []
    assert codes(ctx, {"kind": "command", "run": "touch /workspace/forged"}) == ["command_failed"]
    assert codes(ctx, {"kind": "command", "run": "id -un", "stdout": "^learner$", "user": "learner"}) == []


def test_the_judge_ignores_the_learners_path(ctx):
    # A learner cannot shadow `test` with a script in the workspace: the judge's PATH is fixed.
    ctx.runner.write_file(ctx.state, "bin/test", b"#!/bin/sh\nexit 0\n")
    ctx.runner.exec(ctx.state, ["chmod", "+x", "/workspace/bin/test"])
    spec = {"kind": "command", "run": "test -f /workspace/Dockerfile", "env": {"HOME": "/tmp"}}
    assert codes(ctx, spec) == ["command_failed"]


def test_a_session_without_a_judge_user_runs_checks_as_its_own_user(busybox_env):
    runner, state = busybox_env
    ctx = CheckContext(runner, state)
    assert ctx.resolve_user("judge") is None
    assert codes(ctx, {"kind": "command", "run": "echo hi", "stdout": "^hi$"}) == []


# file -----------------------------------------------------------------------------------

def test_a_file_check_finds_files_and_their_contents(ctx):
    assert codes(ctx, {"kind": "file", "path": "app.py", "contains": ["print", "^print\\('hello'\\)$"]}) == []
    assert codes(ctx, {"kind": "file", "path": "notes", "type": "directory"}) == []
    assert codes(ctx, {"kind": "file", "path": "local.env", "exists": False}) == []


def test_file_failures_have_their_codes(ctx):
    assert codes(ctx, {"kind": "file", "path": "Dockerfile"}) == ["file_missing"]
    assert codes(ctx, {"kind": "file", "path": "app.py", "exists": False}) == ["file_unexpected"]
    assert codes(ctx, {"kind": "file", "path": "notes"}) == ["file_wrong_type"]
    assert codes(ctx, {"kind": "file", "path": "app.py", "contains": "import os"}) == ["file_content_mismatch"]
    assert codes(ctx, {"kind": "file", "path": "app.py", "not_contains": "hello"}) == ["file_forbidden_content"]


def test_a_file_mode_is_compared_in_octal(ctx):
    ctx.runner.exec(ctx.state, ["chmod", "0750", "/workspace/app.py"])
    assert codes(ctx, {"kind": "file", "path": "app.py", "mode": "0750"}) == []
    outcome = run(ctx, {"kind": "file", "path": "app.py", "mode": "0644"})
    assert [f.code for f in outcome.failures] == ["file_mode_mismatch"]
    assert "0750" in outcome.failures[0].message


# script ---------------------------------------------------------------------------------

def test_an_inline_script_runs_with_its_interpreter_and_arguments(ctx):
    script = '#!/bin/bash\n[[ "$1" == strict ]] && test -f /workspace/app.py\n'
    assert codes(ctx, {"kind": "script", "script": script, "args": ["strict"]}) == []


def test_a_script_without_an_interpreter_line_runs_with_sh(ctx):
    assert codes(ctx, {"kind": "script", "script": "test -d /workspace/notes\n"}) == []


def test_a_script_from_the_lab_directory_is_copied_in_and_its_failure_reported(ctx):
    (ctx.lab_dir / "checks").mkdir()
    (ctx.lab_dir / "checks" / "verify.sh").write_text("#!/bin/sh\necho 'no Dockerfile yet'\ntest -f Dockerfile\n")
    outcome = run(ctx, {"kind": "script", "file": "checks/verify.sh"})
    assert [f.code for f in outcome.failures] == ["script_failed"]
    assert "no Dockerfile yet" in outcome.failures[0].message
    assert outcome.notes["script output"] == "no Dockerfile yet"


def test_a_script_that_runs_too_long_is_stopped(ctx):
    assert codes(ctx, {"kind": "script", "script": "sleep 30", "timeout": 1}) == ["script_timed_out"]


def test_a_script_missing_from_the_lab_is_the_judges_problem_not_the_learners(ctx):
    kind = get_kind("script")
    assert kind is not None
    with pytest.raises(JudgeError):
        kind.run(ctx, {"kind": "script", "file": "checks/gone.sh"})


# http with a started command ---------------------------------------------------------------

SERVER = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else 404
        self.send_response(code); self.end_headers(); self.wfile.write(b'{"status": "ok"}')
    def log_message(self, *args):
        print("request", self.path, flush=True)
http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"""


def test_an_http_check_starts_the_app_probes_it_and_stops_it(ctx):
    ctx.runner.write_file(ctx.state, "server.py", SERVER.encode())
    spec = {"kind": "http", "start": "python3 server.py", "env": {"PORT": "18090"}, "port": 18090,
            "path": "/health", "body": '"ok"', "max_latency_ms": 2000}
    outcome = run(ctx, spec)
    assert outcome.failures == []
    assert outcome.metrics["http.status"] == 200
    assert 0 < outcome.metrics["http.latency_ms"] < 2000
    assert "request /health" in outcome.notes["app output"]
    # Stopped afterwards: nothing listens there any more.
    after = ctx.exec(["sh", "-c", "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18090/health"])
    assert after.stdout == b"000"


def test_http_failures_have_their_codes(ctx):
    ctx.runner.write_file(ctx.state, "server.py", SERVER.encode())
    base = {"kind": "http", "start": "python3 server.py", "env": {"PORT": "18091"}, "port": 18091}
    assert codes(ctx, {**base, "path": "/nope"}) == ["http_status_mismatch"]
    assert codes(ctx, {**base, "path": "/health", "body": "bye"}) == ["http_body_mismatch"]
    assert codes(ctx, {**base, "path": "/health", "codes": {"http_status_mismatch": "x"}, "status": 204}) == ["x"]
    crash = {"kind": "http", "start": "python3 -c 'raise SystemExit(1)'", "port": 18092, "wait_seconds": 5}
    assert codes(ctx, crash) == ["app_exited"]
    assert codes(ctx, {"kind": "http", "port": 18093, "wait_seconds": 1}) == ["http_unreachable"]


# streamed commands ----------------------------------------------------------------------

def test_a_long_command_streams_its_output_while_it_runs(ctx):
    chunks: list[str] = []
    command = ["sh", "-c", "for i in 1 2 3 4; do echo line $i; sleep 0.5; done"]
    result = run_streaming(ctx, command, user=ctx.resolve_user("judge"), workdir="/workspace", timeout=30,
                           on_output=chunks.append, interval=0.2)
    assert result.exit_code == 0 and not result.timed_out
    assert result.output == "line 1\nline 2\nline 3\nline 4\n"
    assert len(chunks) >= 3  # seen in pieces, as it was written
    assert result.elapsed >= 1.5


def test_a_streamed_command_past_its_time_is_killed(ctx):
    result = run_streaming(ctx, ["sh", "-c", "echo started; sleep 60"], user=ctx.resolve_user("judge"),
                           workdir="/workspace", timeout=1, on_output=lambda text: None, interval=0.2)
    assert result.timed_out and result.exit_code is None
    assert result.output == "started\n"
    left = ctx.exec(["sh", "-c", "ps -eo args | grep -c '[s]leep 60'"])
    assert left.stdout.strip() == b"0"
