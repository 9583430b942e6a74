"""`http`: probe a web app from inside the session: status, body, latency, Docker health.

    - kind: http
      port: 8080                  # required: where the app listens
      path: /health               # default /
      status: 200                 # default 200
      body: '"status": "ok"'      # a regular expression the body must match
      max_latency_ms: 1000
      wait_seconds: 20            # how long the app may take to answer at all (default 20)
      # what is probed, one of:
      image: built                # run an image in the session's engine ("built": the docker_build
                                  # check before this one), probed through a port published on
                                  # the session's loopback; or
      start: python3 app.py       # start this command in the session (as the judge user), probe it,
                                  # stop it; or neither: the learner's running app on 127.0.0.1
      env: {PORT: "8080"}         # for the container or the started command
      command: [python, app.py]   # (image) instead of the image's CMD
      healthy: true               # (image) also wait for Docker's health status `healthy`
      health_wait_seconds: 40
      workdir: .                  # (start) relative to the workspace
      user: judge                 # (start) judge (default), learner or root

The probe uses curl, or python3, or busybox wget, whichever the session has.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from judge.checks.base import JUDGE_USER, CheckContext, CheckKind, CheckOutcome, JudgeError, text_of
from judge.checks.docker_build import docker_exec_user, require_engine
from judge.checks.options import Option, Problem

BODY_LIMIT = 65536
APP_LOG_LIMIT = 8000

PYTHON_PROBE = """
import sys, time, urllib.request, urllib.error
url, path, each = sys.argv[1], sys.argv[2], float(sys.argv[3])
started = time.monotonic()
try:
    response = urllib.request.urlopen(url, timeout=each)
    code, data = response.status, response.read(65536)
except urllib.error.HTTPError as exc:
    code, data = exc.code, exc.read(65536)
except Exception:
    print("000 -1")
    sys.exit(0)
with open(path, "wb") as out:
    out.write(data)
print(code, round(time.monotonic() - started, 4))
"""

# $1: a command to start first ("" for none); $2: URL; $3: seconds to wait for an answer;
# $4: seconds per request; $5: the Python probe. Prints
# "labs-probe STATUS SECONDS BODY_BYTES ALIVE", the body, then (with $1) the command's output.
PROBE = r"""
start=$1; url=$2; wait=$3; each=$4; pyprobe=$5
body=$(mktemp /tmp/labs-judge-probe.XXXXXX) || exit 90
pid=
if [ -n "$start" ]; then
    if command -v setsid >/dev/null 2>&1; then
        setsid sh -c "$start" > "$body.app" 2>&1 < /dev/null &
    else
        sh -c "$start" > "$body.app" 2>&1 < /dev/null &
    fi
    pid=$!
fi
deadline=$(( $(date +%s) + wait ))
status=000; secs=-1; alive=1
while :; do
    : > "$body"
    if command -v curl >/dev/null 2>&1; then
        # -q first: never read a ~/.curlrc (a learner's could send the probe to a proxy of theirs);
        # python3 -I: no user site-packages (a learner's .pth file runs code at start-up).
        out=$(curl -q -s -o "$body" -w '%{http_code} %{time_total}' --max-time "$each" "$url" 2>/dev/null)
    elif command -v python3 >/dev/null 2>&1; then
        out=$(python3 -I -c "$pyprobe" "$url" "$body" "$each" 2>/dev/null)
    else
        wget -q -S -O "$body" -T "$each" "$url" 2> "$body.h"
        code=$(grep -o 'HTTP/[0-9.]* [0-9][0-9][0-9]' "$body.h" | tail -n 1 | cut -d' ' -f2)
        out="${code:-000} -1"
    fi
    status=${out%% *}; secs=${out#* }
    case "$status" in ''|000) status=000 ;; *) break ;; esac
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then alive=0; break; fi
    [ "$(date +%s)" -ge "$deadline" ] && break
    sleep 0.3 2>/dev/null || sleep 1
done
head -c 65536 "$body" > "$body.t"
echo "labs-probe $status ${secs:--1} $(wc -c < "$body.t") $alive"
cat "$body.t"
if [ -n "$pid" ]; then
    kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    sleep 0.2
    kill -KILL -"$pid" 2>/dev/null
    tail -c 8000 "$body.app"
fi
rm -f "$body" "$body.t" "$body.h" "$body.app"
"""


@dataclass
class ProbeResult:
    status: int
    seconds: float | None
    body: str
    alive: bool
    app_output: str


def parse_probe(stdout: bytes) -> ProbeResult:
    head, _, rest = stdout.partition(b"\n")
    fields = head.decode(errors="replace").split()
    if len(fields) != 5 or fields[0] != "labs-probe":
        raise JudgeError(f"the HTTP probe in the session gave no result ({text_of(stdout[:200])!r})")
    length = int(fields[3]) if fields[3].isdigit() else 0
    try:
        seconds: float | None = float(fields[2])
    except ValueError:
        seconds = None
    return ProbeResult(
        status=int(fields[1]) if fields[1].isdigit() else 0,
        seconds=seconds if seconds is not None and seconds >= 0 else None,
        body=text_of(rest[:length]),
        alive=fields[4] == "1",
        app_output=text_of(rest[length:]),
    )


class HttpCheck(CheckKind):
    kind = "http"
    options = {
        "port": Option("int", required=True, min=1, max=65535),
        "path": Option("str"),
        "status": Option("int", min=100, max=599),
        "body": Option("regex"),
        "max_latency_ms": Option("number", min=1),
        "wait_seconds": Option("number", min=0, max=600),
        "image": Option("str"),
        "start": Option("str"),
        "env": Option("str_map"),
        "command": Option("argv"),
        "healthy": Option("bool"),
        "health_wait_seconds": Option("number", min=1, max=600),
        "workdir": Option("str"),
        "user": Option("str"),
    }
    hints = {
        "http_unreachable": "Is the app listening on 0.0.0.0 and the right port? Try `curl -i` on it yourself.",
        "http_status_mismatch": "Request the same path with `curl -i` and compare the status line.",
        "http_body_mismatch": "Request the same path with `curl -s` and compare the answer with the step.",
        "http_too_slow": "The route should answer without waiting for anything else.",
        "app_exited": "The app stopped right away: run it yourself and read the error it prints.",
        "container_exited": "The container stopped right away: `docker logs` on it shows why.",
        "container_start_failed": "Check the image name and that `docker run` works for it in your terminal.",
        "container_unhealthy": "`docker inspect --format '{{json .State.Health}}' NAME` shows the failing probes.",
        "healthcheck_missing": "Add a HEALTHCHECK instruction to the Dockerfile.",
    }

    def check_spec(self, spec: dict[str, Any], lab_dir: Any) -> list[Problem]:
        problems: list[Problem] = []
        if "image" in spec and "start" in spec:
            problems.append((("start",), "give either image (run a container) or start (run a command), not both"))
        for key in ("healthy", "health_wait_seconds", "command"):
            if key in spec and "image" not in spec:
                problems.append(((key,), "only applies with image"))
        for key in ("workdir", "user"):
            if key in spec and "start" not in spec:
                problems.append(((key,), "only applies with start"))
        if "path" in spec and not str(spec["path"]).startswith("/"):
            problems.append((("path",), f"must start with / (got {spec['path']!r})"))
        return problems

    def default_title(self, spec: dict[str, Any]) -> str:
        return f"GET {spec.get('path', '/')} on port {spec.get('port')}"

    def run(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        if "image" in spec:
            return self._run_image(ctx, spec)
        outcome = CheckOutcome()
        url = f"http://127.0.0.1:{spec['port']}{spec.get('path', '/')}"
        start = spec.get("start", "")
        user = spec.get("user", JUDGE_USER) if start else JUDGE_USER
        probe = self._probe(ctx, url, spec, start=start, user=user)
        if start and probe.app_output.strip():
            outcome.notes["app output"] = probe.app_output
        if probe.status == 0:
            if start and not probe.alive:
                outcome.fail("app_exited", f"`{start}` stopped before answering on port {spec['port']}.")
            else:
                outcome.fail("http_unreachable", f"Nothing answered on {url} within "
                                                 f"{float(spec.get('wait_seconds', 20)):g} s.")
            return outcome
        self._judge_answer(outcome, probe, spec, url)
        return outcome

    # -- probing -----------------------------------------------------------------------

    def _probe(self, ctx: CheckContext, url: str, spec: dict[str, Any], *, start: str = "",
               user: str | None = JUDGE_USER) -> ProbeResult:
        wait = float(spec.get("wait_seconds", 20))
        each = max(1.0, min(10.0, float(spec.get("max_latency_ms", 5000)) / 1000 + 2))
        command = ["sh", "-c", PROBE, "sh", start, url, str(int(wait + 0.999)), f"{each:g}", PYTHON_PROBE]
        environment = dict(spec.get("env") or {}) if start else None
        result = ctx.exec(command, timeout=wait + each + 15, user=user, workdir=spec.get("workdir"),
                          environment=environment)
        if result.exit_code == 90:
            raise JudgeError("cannot create a temporary file in the session's /tmp")
        return parse_probe(result.stdout)

    @staticmethod
    def _judge_answer(outcome: CheckOutcome, probe: ProbeResult, spec: dict[str, Any], url: str) -> None:
        outcome.metrics["http.status"] = probe.status
        if probe.seconds is not None:
            outcome.metrics["http.latency_ms"] = round(probe.seconds * 1000, 1)
        expected = int(spec.get("status", 200))
        if probe.status != expected:
            outcome.fail("http_status_mismatch", f"GET {spec.get('path', '/')} answered {probe.status}, "
                                                 f"not {expected}.")
            return  # the body of a wrong answer (a 404 page) says nothing about the right one
        if "body" in spec and not re.search(spec["body"], probe.body, re.MULTILINE):
            shown = probe.body.strip()[:200] or "(empty)"
            outcome.fail("http_body_mismatch", f"The answer to GET {spec.get('path', '/')} does not match "
                                               f"/{spec['body']}/: {shown}")
        limit = spec.get("max_latency_ms")
        if limit is not None and probe.seconds is not None and probe.seconds * 1000 > float(limit):
            outcome.fail("http_too_slow", f"GET {spec.get('path', '/')} took {probe.seconds * 1000:.0f} ms; "
                                          f"the limit is {float(limit):g} ms.")

    # -- running an image --------------------------------------------------------------

    def _run_image(self, ctx: CheckContext, spec: dict[str, Any]) -> CheckOutcome:
        outcome = CheckOutcome()
        image = spec["image"]
        if image == "built":
            image = ctx.shared.get("image")
            if not image:
                outcome.skipped = True
                outcome.notes["skipped"] = "No image was built, so there is nothing to run."
                return outcome
        user = docker_exec_user(ctx)
        require_engine(ctx, user)
        name = f"labs-judge-{ctx.label}-{uuid.uuid4().hex[:6]}"
        # Published on the session's loopback: a rootless engine's containers live in a network
        # namespace of the engine's own, which the session reaches only through published ports.
        run = ["docker", "run", "-d", "--name", name, "--label", "labs.judge=1", "-p", f"127.0.0.1::{spec['port']}"]
        for key, value in (spec.get("env") or {}).items():
            run += ["-e", f"{key}={value}"]
        run.append(image)
        if "command" in spec:
            run += spec["command"] if isinstance(spec["command"], list) else ["sh", "-c", spec["command"]]

        def remove() -> None:
            ctx.exec(["docker", "rm", "-f", name], timeout=30, user=user, resolved=True)

        started = ctx.exec(run, timeout=60, user=user, resolved=True)
        if not started.ok:
            outcome.fail("container_start_failed", f"docker run {image} failed: "
                                                   f"{text_of(started.stderr).strip()[-300:]}")
            remove()  # a container whose start failed is still created: it would keep its name and layer
            return outcome

        ctx.cleanups.append(remove)
        try:
            self._probe_container(ctx, outcome, spec, name, user)
        finally:
            logs = ctx.exec(["docker", "logs", "--tail", "200", name], timeout=20, user=user, resolved=True)
            output = (text_of(logs.stdout) + text_of(logs.stderr)).strip()
            if output:
                outcome.notes["container log"] = output[-APP_LOG_LIMIT:]
            ctx.cleanups.remove(remove)
            remove()
        return outcome

    def _published(self, ctx: CheckContext, name: str, port: int, user: str | None) -> str:
        """host:port where the session reaches the container's `port` ("" when it is not running)."""
        result = ctx.exec(["docker", "port", name, f"{port}/tcp"], timeout=20, user=user, resolved=True)
        for line in text_of(result.stdout).splitlines() if result.ok else []:
            if line.strip().startswith("127.0.0.1:"):
                return line.strip()
        return ""

    def _inspect(self, ctx: CheckContext, name: str, template: str, user: str | None) -> str:
        result = ctx.exec(["docker", "inspect", "--format", template, name], timeout=20, user=user, resolved=True)
        return text_of(result.stdout).strip() if result.ok else ""

    def _probe_container(self, ctx: CheckContext, outcome: CheckOutcome, spec: dict[str, Any], name: str,
                         user: str | None) -> None:
        address = self._published(ctx, name, int(spec["port"]), user)
        if not address:
            state = self._inspect(ctx, name, "{{.State.Status}} {{.State.ExitCode}}", user)
            outcome.fail("container_exited", f"The container stopped at once ({state or 'no address'}).")
            return
        url = f"http://{address}{spec.get('path', '/')}"
        probe = self._probe(ctx, url, spec)
        if probe.status == 0:
            running = self._inspect(ctx, name, "{{.State.Running}} {{.State.ExitCode}}", user).split()
            if running[:1] != ["true"]:
                code = running[1] if len(running) > 1 else "?"
                outcome.fail("container_exited", f"The container stopped (exit code {code}) before answering "
                                                 f"on port {spec['port']}.")
            else:
                outcome.fail("http_unreachable", f"The container runs, but nothing answered on port {spec['port']} "
                                                 f"within {float(spec.get('wait_seconds', 20)):g} s.")
            return
        self._judge_answer(outcome, probe, spec, url)
        # A wrong answer already fails; waiting for Docker's verdict on it would only take time.
        if spec.get("healthy") and outcome.passed:
            self._wait_healthy(ctx, outcome, spec, name, user)

    def _wait_healthy(self, ctx: CheckContext, outcome: CheckOutcome, spec: dict[str, Any], name: str,
                      user: str | None) -> None:
        limit = float(spec.get("health_wait_seconds", 40))
        deadline = time.monotonic() + limit
        template = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        status = ""
        while True:
            status = self._inspect(ctx, name, template, user)
            if status in ("healthy", "unhealthy", "none") or time.monotonic() >= deadline:
                break
            time.sleep(1)
        outcome.metrics["container.health"] = status or "unknown"
        if status == "none":
            outcome.fail("healthcheck_missing", "The image has no HEALTHCHECK, so Docker cannot report its health.")
        elif status == "unhealthy":
            last = self._inspect(ctx, name, "{{range .State.Health.Log}}{{.ExitCode}}: {{.Output}}|{{end}}", user)
            detail = last.strip("|").split("|")[-1].strip()[:200] if last else ""
            outcome.fail("container_unhealthy", f"Docker reports the container unhealthy"
                                                f"{': last probe ' + detail if detail else '.'}")
        elif status != "healthy":
            outcome.fail("container_unhealthy", f"The container was still {status or 'not reporting health'} "
                                                f"after {limit:g} s.")
