"""The QEMU accelerator "auto": KVM when a probe VM really runs under it, TCG otherwise.

On the machines these tests run on /dev/kvm exists but KVM guests hang (see
../shared/notes/environment.md), which is exactly the case "auto" exists for. The other cases
(KVM works, KVM refuses, QEMU missing) are played by small wrappers around the real QEMU: a
"working KVM" is QEMU with -accel kvm swapped for tcg, so the probe VM itself still really runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from runners import qemu
from runners.base import SessionSpec
from runners.qemu import QemuRunner, kvm_usable, resolve_accel
from tests.settings_env import settings_values
from tests.vm_image import VMImage, build_vm_image, console_until

BOOT_TIMEOUT = 240
QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
HAS_KVM_DEVICE = os.path.exists("/dev/kvm")


@pytest.fixture(autouse=True)
def fresh_probe_cache(monkeypatch):
    """Each test probes for itself (the cache lives for the process otherwise)."""
    monkeypatch.setattr(qemu, "_kvm_usable", {})


def wrapper(tmp_path: Path, body: str, name: str = "qemu") -> str:
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}"
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return str(path)


def kvm_as_tcg(tmp_path: Path, count: Path | None = None) -> str:
    """A QEMU for which "-accel kvm" works: it runs the guest under TCG instead."""
    counting = f'echo run >>"{count}"\n' if count else ""
    return wrapper(tmp_path, f'{counting}args=(); for a in "$@"; do [ "$a" = kvm ] && a=tcg; args+=("$a"); done\n'
                             f'exec "{QEMU}" "${{args[@]}}"')


def test_the_probe_vm_exits_by_itself_once_it_has_entered_protected_mode():
    began = time.monotonic()
    assert qemu._probe_vm(QEMU, "tcg", timeout=60) == (True, "")
    assert time.monotonic() - began < 30


def test_auto_prefers_kvm_when_the_probe_vm_runs_under_it(tmp_path):
    working = kvm_as_tcg(tmp_path)
    # Without /dev/kvm at all there is nothing to probe: TCG.
    assert resolve_accel("auto", working) == ("kvm" if HAS_KVM_DEVICE else "tcg")
    assert resolve_accel("tcg", working) == "tcg"  # a named accelerator is never second-guessed
    assert resolve_accel("kvm", "/nonexistent/qemu") == "kvm"


def test_auto_falls_back_to_tcg_when_kvm_guests_hang_refuse_or_qemu_is_missing(tmp_path, caplog):
    hanging = wrapper(tmp_path, "exec sleep 60")
    refusing = wrapper(tmp_path, 'echo "Could not access KVM kernel module: Permission denied" >&2; exit 1')
    caplog.set_level(logging.WARNING, logger="runners.qemu")

    began = time.monotonic()
    assert not kvm_usable(hanging, timeout=1)
    assert time.monotonic() - began < 10  # the hung probe was killed at its timeout
    assert not kvm_usable(refusing)
    assert not kvm_usable(str(tmp_path / "no-such-qemu"))
    assert resolve_accel("auto", hanging) == "tcg"

    if HAS_KVM_DEVICE:
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert "did not finish within 1 s" in messages
        assert "Permission denied" in messages


def test_the_probe_runs_once_per_process_however_many_sessions_start_at_once(tmp_path):
    count = tmp_path / "runs"
    counted = kvm_as_tcg(tmp_path, count)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(kvm_usable(counted))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    resolve_accel("auto", counted)

    assert results == [HAS_KVM_DEVICE] * 4
    runs = count.read_text().count("run") if count.exists() else 0
    assert runs == (1 if HAS_KVM_DEVICE else 0)


def test_auto_is_the_default_setting():
    assert settings_values("LAB_QEMU_ACCEL", unset=["LAB_QEMU_ACCEL"]) == {"LAB_QEMU_ACCEL": "auto"}
    assert settings_values("LAB_QEMU_ACCEL", LAB_QEMU_ACCEL="tcg") == {"LAB_QEMU_ACCEL": "tcg"}


@pytest.fixture(scope="module")
def vm_image() -> VMImage:
    return build_vm_image()


def test_a_vm_lab_boots_with_the_default_accelerator_on_this_host(settings, tmp_path, vm_image):
    """The default ("auto") never picks an accelerator that hangs: here, where /dev/kvm exists
    but KVM guests hang, the VM boots under TCG; on a host with working KVM, under KVM."""
    settings.LAB_QEMU_ACCEL = "auto"
    runner = QemuRunner("qemu", {"root": str(tmp_path / "vms"), "run_as": ""})  # no accel option
    spec = SessionSpec(session_id=str(uuid.uuid4()), user_id=1, username="olivia", lab_slug="vm-lab",
                       image=str(vm_image.disk), image_kind="vm", memory_mb=128, network_mode="none")
    state = runner.start(spec, timeout=BOOT_TIMEOUT).state
    try:
        argv = Path(f"/proc/{state['pid']}/cmdline").read_bytes().decode().split("\0")
        assert argv[argv.index("-accel") + 1] == ("kvm" if kvm_usable(runner.qemu) else "tcg")
        terminal = runner.open_terminal(state)
        try:
            console_until(terminal, b"READY-42", send=b"echo READY-$((6*7))\n", timeout=BOOT_TIMEOUT)
        finally:
            terminal.close()
    finally:
        runner.stop(state, timeout=0)
