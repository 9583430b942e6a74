"""A VM lab in a real Chromium: the learner's page shows the VM's screen through noVNC and its
serial console in the terminal pane, on real QEMU (TCG) behind a real daphne."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from labs.models import Lab
from labs.vm_images import register_file
from runners.qemu import QemuRunner
from sessions_app import actions
from sessions_app.models import State
from tests.e2e.conftest import ARTIFACTS, assert_no_error_page, sign_in, wait_for_painted_vnc_screen
from tests.e2e.live_server import set_server_password
from tests.vm_image import vm_image  # noqa: F401 - a fixture

pytestmark = pytest.mark.browser

@pytest.fixture
def extra_lab_runners():
    """A QEMU runner (TCG) shared by the test process, which starts the VM, and the server."""
    root = Path(tempfile.mkdtemp(prefix="le2e-"))
    options = {"root": str(root), "accel": "tcg", "powerdown_timeout": 1}
    yield {"qemu": {"BACKEND": "runners.qemu.QemuRunner", "OPTIONS": options}}
    runner = QemuRunner("qemu", options)
    for env in runner.list_managed():
        runner.remove_managed(env)
    shutil.rmtree(root, ignore_errors=True)


def test_a_learner_sees_the_vms_screen_and_its_serial_console(
    asgi_live_server, page, owner, password, vm_image, settings, tmp_path  # noqa: F811 - the fixture
):
    set_server_password(owner, password)
    settings.LAB_VM_IMAGE_DIR = tmp_path / "vm-images"
    disk = register_file("e2e-vm", vm_image.disk).image
    lab = Lab.objects.create(slug="e2e-vm", title="A virtual machine", image=disk, runner="qemu", published=True,
                             memory_mb=128, network_mode="none", consoles=["terminal", "vnc"])
    session = actions.start_session(owner, lab)
    session.refresh_from_db()
    assert session.state == State.RUNNING, session.error

    sign_in(page, asgi_live_server.url, owner.username, password)
    page.goto(f"{asgi_live_server.url}{session.get_absolute_url()}")
    page.get_by_role("tab", name="Desktop").click()
    page.locator('[data-vnc-state="connected"]').wait_for(timeout=60_000)
    wait_for_painted_vnc_screen(page, timeout=60)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "vm-console.png"), full_page=True)

    # The terminal pane is the VM's serial console: the guest's shell answers there.
    page.get_by_role("tab", name="Terminal").click()
    page.locator('[data-terminal-panel="1"] [data-terminal-state="connected"]').wait_for(timeout=60_000)
    rows = page.locator('[data-terminal-panel="1"] .xterm-rows')
    deadline = time.monotonic() + 120
    while "serial-42" not in rows.inner_text():
        assert time.monotonic() < deadline, f"the serial console never answered:\n{rows.inner_text()}"
        page.locator('[data-terminal-screen="1"]').click()
        page.keyboard.type("echo serial-$((6*7))")
        page.keyboard.press("Enter")
        page.wait_for_timeout(2000)
    assert_no_error_page(page)
