"""A lab on the Kubernetes runner, as a learner and as staff meet it: real Chromium and daphne, the
runner talking to the Kubernetes API server double (tests/k8s/) whose pods are real Docker
containers. The learner starts the lab, reads the pod's progress, works in the terminal as the
lab's user (not root), passes a check and sees the web preview of a server started in the pod;
staff find the session in the admin and stop it, and its pod and anchor are gone."""

from __future__ import annotations

import time
import uuid

import pytest
from playwright.sync_api import expect

from labs.models import Image, Lab, LabStep
from sessions_app.models import Session, SessionEvent, State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in
from tests.e2e.live_server import set_server_password
from tests.e2e.test_consoles import type_command, wait_connected, wait_for_text
from tests.k8s.fixtures import SESSIONS_NAMESPACE

pytestmark = [pytest.mark.browser, pytest.mark.docker]

STARTUP_MS = 90_000
ACTION_MS = 30_000


@pytest.fixture
def extra_lab_runners(kubeconfig):
    """The server's `kubernetes` runner: the double's kubeconfig, its own instance label."""
    return {"kubernetes": {"BACKEND": "runners.kubernetes.KubernetesRunner",
                           "OPTIONS": {"kubeconfig": str(kubeconfig), "namespace": SESSIONS_NAMESPACE,
                                       "instance": f"labse2e{uuid.uuid4().hex[:6]}"}}}


def kubernetes_lab() -> Lab:
    image, _ = Image.objects.get_or_create(name="labs-base-bookworm", defaults={"reference": "labs/base:bookworm"})
    lab = Lab.objects.create(slug=f"k8s-{uuid.uuid4().hex[:8]}", title="Shell on Kubernetes", image=image,
                             runner="kubernetes", memory_mb=256, published=True, consoles=["terminal"],
                             shell_user="learner", exposed_ports=[8080])
    LabStep.objects.create(lab=lab, order=1, title="Say hello", body="Put *hello* in `greeting.txt`.",
                           verify=[{"kind": "file", "path": "greeting.txt", "contains": "hello"}])
    return lab


def test_a_learner_works_in_a_pod_and_staff_stop_it_from_the_admin(
    asgi_live_server, k8s_api, page, learner, password, staff_user
):
    url = asgi_live_server.url
    lab = kubernetes_lab()
    sign_in(page, url, learner.username, password)
    page.goto(f"{url}{lab.get_absolute_url()}")
    page.get_by_role("button", name="Start lab").click()
    page.wait_for_url("**/sessions/*/", timeout=STARTUP_MS)
    page.locator('#session-status[data-state="running"]').wait_for(timeout=STARTUP_MS)
    session = Session.objects.get(user=learner, lab=lab)
    assert session.state == State.RUNNING, session.error
    assert session.runner_name == "kubernetes"

    # The progress the learner read came from the pod: its Events, then readiness.
    progress = [event.message for event in SessionEvent.objects.filter(session=session)]
    assert "Creating the session's pod" in progress, progress
    assert any("Scheduled on a node" in message for message in progress), progress
    assert any("Container started" in message for message in progress), progress
    pod = k8s_api.get("pods", SESSIONS_NAMESPACE, session.runner_state["pod"])
    assert pod is not None
    assert pod["metadata"]["labels"]["labs.session"] == str(session.pk)
    assert pod["spec"]["automountServiceAccountToken"] is False

    # The terminal is the lab's user in the pod's workspace: their bash in tmux (keys typed before
    # its prompt shows would go to a shell that is still starting).
    wait_connected(page, "1")
    wait_for_text(page, "1", "learner@lab", timeout=30)
    type_command(page, "1", "echo user=$(id -un) dir=$(pwd)")
    wait_for_text(page, "1", "user=learner dir=/workspace")
    type_command(page, "1", "echo hello > greeting.txt && echo saved-$((40+2))")
    wait_for_text(page, "1", "saved-42")

    # The judge reads the file from the pod and the step passes in place.
    step = page.locator(f'[data-judge-step="{lab.steps.get().pk}"]')
    step.get_by_role("button", name="Check this step").click()
    expect(step).to_have_attribute("data-passed", "true", timeout=ACTION_MS)

    # A server started in the pod shows in the preview (the platform reaches the pod's IP).
    type_command(page, "1", "mkdir -p /tmp/site && cd /tmp/site && "
                            "echo '<h1>Hello from a pod</h1>' > index.html && python3 -m http.server 8080")
    wait_for_text(page, "1", "Serving HTTP")
    page.get_by_role("tab", name="Preview").click()
    heading = page.frame_locator("[data-preview-frame]").get_by_role("heading", name="Hello from a pod")
    deadline = time.monotonic() + 30
    while not heading.is_visible():
        assert time.monotonic() < deadline, "the preview never showed the pod's page"
        page.wait_for_timeout(1000)
        if not heading.is_visible():
            page.locator("[data-preview-reload]").click()
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        expect(heading).to_be_visible()  # the frame has painted again at this width
        page.screenshot(path=str(ARTIFACTS / f"kubernetes-session-{width}.png"), full_page=True)
        # A full-page capture leaves a cross-origin frame below the fold unpainted: show it in view too.
        page.locator("[data-preview-frame]").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"kubernetes-preview-{width}.png"))
    assert_no_error_page(page)

    # Staff stop it from the admin; the pod and its anchor go.
    set_server_password(staff_user, password)
    page.context.clear_cookies()
    staff = page
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(staff, url, staff_user.username, password)
    staff.goto(f"{url}/admin/sessions_app/session/?runner_name=kubernetes")
    staff.locator(f'input[name="_selected_action"][value="{session.pk}"]').check()
    staff.locator('select[name="action"]').select_option("stop_sessions")
    staff.get_by_role("button", name="Go").click()
    expect(staff.locator(".messagelist")).to_contain_text("Stopping 1 session(s).")
    assert_no_error_page(staff)
    k8s_api.wait_for(lambda: not k8s_api.cluster.select("pods", SESSIONS_NAMESPACE)
                     and not k8s_api.cluster.select("configmaps", SESSIONS_NAMESPACE), 30,
                     "the session's pod and anchor to be deleted")
    session.refresh_from_db()
    assert session.state == State.STOPPED, session.state
