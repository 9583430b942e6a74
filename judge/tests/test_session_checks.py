"""command, file, script and http checks, and streamed commands, in real containers (Docker runner).

labs/base:bookworm has the judge user (1001): checks run as it. labs/busybox:latest has none:
checks fall back to the session's own user.
"""

from __future__ import annotations

import pytest

from judge.checks import CheckContext, JudgeError, get_kind
from judge.checks.background import run_streaming
from judge.tests.judge_env import (
    environment,
    reset_workspace,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def base_env():
    with environment("labs/base:bookworm") as env:
        yield env


@pytest.fixture(scope="module")
def busybox_env():
    with environment("labs/busybox:latest") as env:
        yield env


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


# A learner's trap: tools named like the ones checks call, in directories the learner owns, put
# first on the PATH by the learner's shell profile (Debian's ~/.profile already adds ~/bin), and a
# ~/.curlrc that sends curl through the learner's own "proxy", which answers 200 to everything.
FAKES = {
    "grep": "#!/bin/sh\nexit 0\n",
    "bash": "#!/bin/sh\nexit 0\n",
    "curl": "#!/bin/sh\nprintf '200 0.001'\n",  # the probe's "-w '%{http_code} %{time_total}'"
}
LEARNER_PATH = 'export PATH="/workspace/bin:$HOME/bin:$HOME/.local/bin:$PATH"\n'
ANSWER_OK = """\
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", 18098), H).serve_forever()
"""
NOTHING_THERE = "http://127.0.0.1:18099/"


@pytest.fixture
def learner_path_trap(ctx):
    for name, text in FAKES.items():
        ctx.runner.write_file(ctx.state, f"bin/{name}", text.encode())
    ctx.runner.write_file(ctx.state, "trap/answer.py", ANSWER_OK.encode())
    setup = ctx.runner.exec(ctx.state, ["sh", "-c", (
        "set -e; chmod 0755 /workspace/bin/*; mkdir -p ~/bin ~/.local/bin; "
        "cp -p /workspace/bin/* ~/bin/; cp -p /workspace/bin/* ~/.local/bin/; "
        f"printf '%s' '{LEARNER_PATH}' | tee -a ~/.profile >> ~/.bashrc; "
        "echo 'proxy = \"http://127.0.0.1:18098\"' > ~/.curlrc; "
        "setsid python3 /workspace/trap/answer.py > /dev/null 2>&1 < /dev/null & echo $! > ~/.answer.pid")],
        timeout=15)
    assert setup.ok, setup.stderr
    # Armed: the learner's own login shell runs the fakes, and a plain curl "reaches" a port where
    # nothing listens.
    naive = ctx.runner.exec(ctx.state, ["bash", "-lc", (
        "grep -q no-such-text /workspace/app.py && type -p curl && for i in $(seq 50); do "
        f"c=$(/usr/bin/curl -s -o /dev/null -w '%{{http_code}}' --max-time 1 {NOTHING_THERE}); "
        '[ "$c" = 200 ] && break; sleep 0.1; done; echo "$c"')])
    assert naive.ok and naive.stdout.split() == [b"/workspace/bin/curl", b"200"], naive
    yield
    ctx.runner.exec(ctx.state, ["sh", "-c", "kill $(cat ~/.answer.pid); rm -rf ~/bin ~/.local/bin ~/.curlrc "
                                "~/.answer.pid; sed -i '\\#/workspace/bin#d' ~/.profile ~/.bashrc"], timeout=15)


def test_the_judge_ignores_the_learners_path_and_programs(ctx, learner_path_trap):
    for user in ("judge", "learner"):
        # Whoever the check runs as, its PATH is the judge's, and no profile of the learner is read.
        assert codes(ctx, {"kind": "command", "run": "grep -q no-such-text /workspace/app.py",
                           "user": user}) == ["command_failed"]
        assert codes(ctx, {"kind": "command", "run": ["grep", "-q", "no-such-text", "app.py"],
                           "user": user}) == ["command_failed"]
        script = "#!/usr/bin/env bash\ngrep -q no-such-text /workspace/app.py\n"
        assert codes(ctx, {"kind": "script", "script": script, "user": user}) == ["script_failed"]
    # The HTTP probe runs the real curl and never reads a ~/.curlrc, also as the learner.
    assert codes(ctx, {"kind": "http", "port": 18099, "wait_seconds": 1}) == ["http_unreachable"]
    as_learner = {"kind": "http", "start": "sleep 5", "user": "learner", "port": 18099, "wait_seconds": 1}
    assert codes(ctx, as_learner) == ["http_unreachable"]


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
    assert outcome.failures[0].message == "The check script exited with status 1:"
    assert outcome.failures[0].detail == "no Dockerfile yet"  # shown to the learner with the failure
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


# http against the learner's own running app --------------------------------------------------

OWN_APP = """\
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(0.6)
        self.send_response(200 if self.path in ("/health", "/slow") else 404)
        self.end_headers(); self.wfile.write(b'{"status": "ok"}')
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", 18094), H).serve_forever()
"""


@pytest.fixture
def learners_app(ctx):
    """The learner started their app in their own terminal: it runs as them, the judge only probes it."""
    ctx.runner.write_file(ctx.state, "own_app.py", OWN_APP.encode())
    started = ctx.runner.exec(ctx.state, ["sh", "-c", "setsid python3 own_app.py > /dev/null 2>&1 < /dev/null & "
                                          "echo $! > /tmp/own_app.pid"])
    assert started.ok, started.stderr
    yield
    ctx.runner.exec(ctx.state, ["sh", "-c", "kill $(cat /tmp/own_app.pid) 2>/dev/null; rm -f /tmp/own_app.pid"])


def test_an_http_check_probes_the_learners_own_running_app(ctx, learners_app):
    outcome = run(ctx, {"kind": "http", "port": 18094, "path": "/health", "body": '"ok"', "wait_seconds": 10})
    assert outcome.failures == []
    assert outcome.metrics["http.status"] == 200
    assert "app output" not in outcome.notes  # the judge started nothing
    assert codes(ctx, {"kind": "http", "port": 18094, "path": "/nope"}) == ["http_status_mismatch"]
    # The app is still the learner's, running after the checks.
    alive = ctx.runner.exec(ctx.state, ["sh", "-c", "kill -0 $(cat /tmp/own_app.pid)"])
    assert alive.ok


def test_a_slow_answer_fails_with_http_too_slow(ctx, learners_app):
    outcome = run(ctx, {"kind": "http", "port": 18094, "path": "/slow", "max_latency_ms": 200, "wait_seconds": 10})
    assert [f.code for f in outcome.failures] == ["http_too_slow"]
    assert outcome.metrics["http.latency_ms"] >= 600
    assert "the limit is 200 ms" in outcome.failures[0].message
    assert codes(ctx, {"kind": "http", "port": 18094, "path": "/health", "max_latency_ms": 2000}) == []


def test_when_the_learners_app_is_stopped_nothing_answers(ctx, learners_app):
    assert codes(ctx, {"kind": "http", "port": 18094, "path": "/health", "wait_seconds": 10}) == []
    ctx.runner.exec(ctx.state, ["sh", "-c", "kill $(cat /tmp/own_app.pid)"])
    outcome = run(ctx, {"kind": "http", "port": 18094, "path": "/health", "wait_seconds": 1})
    assert [f.code for f in outcome.failures] == ["http_unreachable"]
    assert outcome.failures[0].message == "Nothing answered on http://127.0.0.1:18094/health within 1 s."


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
