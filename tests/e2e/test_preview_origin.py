"""The web preview on its own origin (LAB_PREVIEW_HOST) in a real Chromium against a real daphne.

The platform is http://127.0.0.1:<port> and the preview host http://localhost:<port>: two origins
(and two sites) for the browser. A learner's app in a Docker session tries what a hostile app
would from inside a staff member's preview: read the platform page that frames it, fetch platform
pages with the viewer's credentials, find the viewer's cookies. None of it may work, while the
app itself shows in the frame.
"""

from __future__ import annotations

import base64
import json
import time

import docker
import pytest

from preview import access
from sessions_app.models import Session, State
from tests.e2e.conftest import ARTIFACTS, sign_in
from tests.e2e.live_server import docker_runner_for_server, set_server_password
from tests.e2e.test_consoles import STARTUP_MS, make_lab

pytestmark = [pytest.mark.browser, pytest.mark.docker]

APP_PORT = 8080

# The learner's app: its page runs the probes and shows their results; /headers echoes what the
# app received, so the test sees which cookies reached it.
APP_SERVER = """
import base64, hashlib, http.server, json
PAGE = open("/tmp/site/index.html", "rb").read()
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.endswith("/ws"):  # a minimal WebSocket: says hello, then waits for the close
            key = self.headers["Sec-WebSocket-Key"].encode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key + GUID).digest()).decode())
            self.end_headers()
            self.wfile.write(bytes([0x81, 8]) + b"hello-ws")
            self.wfile.flush()
            self.rfile.read(2)
            self.close_connection = True
            return
        if self.path.endswith("/headers"):
            body, kind = json.dumps(dict(self.headers.items())).encode(), "application/json"
        else:
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

APP_PAGE = """<!doctype html><title>Learner app</title><h1>Hello from the preview origin</h1>
<pre id="result">pending</pre>
<script>
(async () => {
  const out = {origin: location.origin};
  try { out.parent = "read:" + window.parent.document.title; } catch (e) { out.parent = "blocked:" + e.name; }
  try { out.parentLocation = "read:" + window.parent.location.href; }
  catch (e) { out.parentLocation = "blocked:" + e.name; }
  async function grab(url) {
    try {
      const response = await fetch(url, {credentials: "include"});
      return "status:" + response.status + ":" + (await response.text()).slice(0, 4000);
    } catch (e) { return "error:" + e.name; }
  }
  out.platformSession = await grab("PLATFORM/sessions/SESSION/");
  out.platformList = await grab("PLATFORM/sessions/");
  out.platformAdmin = await grab("PLATFORM/admin/");
  out.previewHostSessions = await grab("/sessions/");
  out.previewHostAdmin = await grab("/admin/");
  out.headers = await grab("headers");
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(location.href.replace(/^http/, "ws") + "ws");
    ws.onmessage = (event) => { resolve("message:" + event.data); ws.close(); };
    ws.onclose = (event) => resolve("closed:" + event.code);
    setTimeout(() => resolve("timeout"), 10000);
  });
  out.cookies = document.cookie;
  document.getElementById("result").textContent = JSON.stringify(out);
})();
</script>
"""


@pytest.fixture
def extra_lab_runners(docker_instance):
    with docker_runner_for_server(docker_instance) as runners:
        yield runners


@pytest.fixture
def extra_server_env() -> dict[str, str]:
    # The platform is never served on the preview's host name (cookies ignore ports).
    return {"LAB_PREVIEW_HOST": "localhost:{port}", "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}


def start_app(session: Session, platform: str) -> None:
    """Run the learner's app in the session's container, as the learner would from the terminal."""
    page = APP_PAGE.replace("PLATFORM", platform).replace("SESSION", str(session.pk))
    script = (
        "mkdir -p /tmp/site && "
        f"echo {base64.b64encode(page.encode()).decode()} | base64 -d > /tmp/site/index.html && "
        f"echo {base64.b64encode(APP_SERVER.encode()).decode()} | base64 -d > /tmp/site/app.py && "
        "exec python3 /tmp/site/app.py"
    )
    container = docker.from_env().containers.get(session.runner_state["container_id"])
    container.exec_run(["sh", "-c", script], detach=True)


def test_the_preview_runs_on_its_own_origin_and_cannot_reach_the_platform(
    asgi_live_server, chromium, page, owner, staff_user, password
):
    platform = asgi_live_server.url  # http://127.0.0.1:<port>
    preview_origin = f"http://localhost:{asgi_live_server.port}"
    set_server_password(owner, password)
    set_server_password(staff_user, password)
    lab = make_lab("labs/base:bookworm", exposed_ports=[APP_PORT], consoles=[])

    # The learner starts the lab and their app.
    sign_in(page, platform, owner.username, password)
    page.goto(f"{platform}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    session = Session.objects.get(user=owner, lab=lab)
    assert session.state == State.RUNNING, session.error
    start_app(session, platform)

    # A staff member opens the session and its preview: the most a hostile app could hope for.
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        staff = context.new_page()
        sign_in(staff, platform, staff_user.username, password)
        staff.goto(f"{platform}{session.get_absolute_url()}")
        staff.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
        frame = staff.frame_locator("[data-preview-frame]")
        heading = frame.get_by_role("heading", name="Hello from the preview origin")
        deadline = time.monotonic() + 30
        while not heading.is_visible():  # the app may need a moment to listen
            assert time.monotonic() < deadline, "the preview never showed the app"
            staff.wait_for_timeout(1000)
            if not heading.is_visible():
                staff.locator("[data-preview-reload]").click()
        result = frame.locator("#result")
        deadline = time.monotonic() + 20
        while result.inner_text() == "pending":
            assert time.monotonic() < deadline, "the app's probes never finished"
            staff.wait_for_timeout(250)
        out = json.loads(result.inner_text())
        ARTIFACTS.mkdir(exist_ok=True)
        staff.screenshot(path=str(ARTIFACTS / "preview-origin.png"), full_page=True)

        # The app runs on the preview origin, framed by the platform's page.
        prefix = access.preview_prefix(session.pk, APP_PORT)
        frames = [f for f in staff.frames if f.url.startswith(preview_origin)]
        assert [f.url for f in frames] == [f"{preview_origin}{prefix}/"]
        assert out["origin"] == preview_origin
        # "Open in new tab" goes through the platform too, which hands out a fresh token.
        assert staff.locator("[data-preview-open]").get_attribute("href") == f"{prefix}/"

        # Its script cannot read the page around it...
        assert out["parent"] == "blocked:SecurityError", out["parent"]
        assert out["parentLocation"] == "blocked:SecurityError", out["parentLocation"]
        # ...nor fetch platform pages with the viewer's credentials (CORS keeps the answers from it)...
        for probe in ("platformSession", "platformList", "platformAdmin"):
            assert out[probe].startswith("error:"), (probe, out[probe][:300])
            assert owner.username not in out[probe] and "csrfmiddlewaretoken" not in out[probe]
        # ...and on its own origin there is nothing of the platform.
        assert out["previewHostSessions"].startswith("status:404:"), out["previewHostSessions"][:300]
        assert out["previewHostAdmin"].startswith("status:404:"), out["previewHostAdmin"][:300]

        # The app's own WebSocket works: the upgrade carries the grant cookie, from the preview origin.
        assert out["ws"] == "message:hello-ws", out["ws"]

        # Neither the viewer's platform cookies nor the preview's grant reach the app or its script.
        received = json.loads(out["headers"].removeprefix("status:200:"))
        cookie_header = {k.lower(): v for k, v in received.items()}.get("cookie", "")
        assert "sessionid" not in cookie_header and access.GRANT_COOKIE not in cookie_header, cookie_header
        assert out["cookies"] == ""
        cookies = context.cookies()
        grants = [c for c in cookies if c["name"] == access.GRANT_COOKIE]
        assert len(grants) == 1, cookies
        assert grants[0]["domain"] == "localhost" and grants[0]["path"] == f"{prefix}/" and grants[0]["httpOnly"]
        assert {c["domain"] for c in cookies if c["name"] == "sessionid"} == {"127.0.0.1"}
    finally:
        context.close()
