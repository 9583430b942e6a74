"""VM labs on the Kubernetes runner (runners/k8s_vm.py), against the API server double (tests/k8s/), whose
kubelet runs each pod as real Docker containers: QEMU (TCG) in labs/qemu, the test VM of tests/vm_image.py
(a busybox initramfs whose serial shell answers), its base disk copied by an init container from an image
built here, or read through subPaths of a claim. Also what the VM pod looks like when nothing runs it
(the KVM resource, no privilege), and the VNC console through the API server in proxy mode, as far as the
platform's VNC consumer. A missing engine, image or QEMU fails these tests; they never skip.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import kubernetes_validate
import pytest
from channels.db import database_sync_to_async
from django.db import connections
from django.utils import timezone

from runners import get_runner, reset_cache
from runners.base import PollStatus, RunnerError
from runners.k8s_vm import DEFAULT_VM_IMAGE
from runners.kubernetes import LABEL_SESSION, KubernetesRunner, object_name
from tests.deploy.chart import render, role_grants
from tests.k8s.fixtures import SESSIONS_NAMESPACE as NS
from tests.k8s.kubelet import POD_UID_LABEL, claim_volume
from tests.k8s.objects import parse_quantity
from tests.vm_image import VMImage, build_boot_iso, console_until, serial_shell, vm_lab, vm_spec

BOOT_TIMEOUT = 240  # TCG on a loaded 2-core machine, as in test_docker_vm.py
KVM = "devices.kubevirt.io/kvm"
RFB = b"RFB 003.008\n"
# The operator's claim on the VM images' storage, in the sessions namespace.
CLAIM = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "vm-images"},
         "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}}}


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(DEFAULT_VM_IMAGE)
    except Exception as exc:  # a missing engine or image must fail the run, not skip it
        pytest.fail(f"the Docker engine and {DEFAULT_VM_IMAGE} (deploy/scripts/build-images.sh) are required: {exc}")
    return client


def build_disk_image(engine: docker.DockerClient, directory: Path) -> str:
    """An image holding `directory` below /disks (KubeVirt's containerDisk idea), FROM busybox."""
    tag = f"labs/k8s-vm-disks-test:{uuid.uuid4().hex[:8]}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        dockerfile = f"FROM labs/busybox:latest\nCOPY {directory.name} /disks/{directory.name}\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile.encode()))
        archive.add(str(directory), arcname=directory.name)
    context.seek(0)
    engine.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def disk_image(engine: docker.DockerClient, vm_image: VMImage) -> Iterator[str]:
    """The test VM's image directory in a disk image."""
    tag = build_disk_image(engine, vm_image.directory)
    yield tag
    engine.images.remove(tag, force=True)


def vm_runner(kubeconfig: Path, vm_image: VMImage, **options: Any) -> KubernetesRunner:
    return KubernetesRunner("kubernetes-vm-test", {
        "kubeconfig": str(kubeconfig), "namespace": NS, "instance": f"labstest{uuid.uuid4().hex[:6]}",
        "api_timeout": 20, "vm_disks_root": str(vm_image.directory.parent), **options})


def rfb_greeting(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=20) as vnc:
        vnc.settimeout(20)
        return vnc.recv(12)


def qemu_argv(runner: KubernetesRunner, state: dict[str, Any]) -> list[str]:
    found = runner.exec_in_pod(state, ["sh", "-c", "cat /proc/1/cmdline"], workdir="/", user="")
    assert found.ok, found
    return found.stdout.decode().split("\0")[:-1]


def leftovers(engine: docker.DockerClient, uid: str) -> list[str]:
    label = {"label": f"{POD_UID_LABEL}={uid}"}
    # The low-level listing: containers.list() inspects each one found, and one removed in between is a 404.
    return [c["Names"][0] for c in engine.api.containers(all=True, filters=label)] + \
        [v.name for v in engine.volumes.list(filters=label)]


@pytest.mark.docker
def test_a_vm_boots_in_a_pod_from_an_init_container_disk_and_stop_removes_everything(
        engine, k8s_api, kubeconfig, vm_image, disk_image):
    runner = vm_runner(kubeconfig, vm_image, vm_disk_source="init", vm_disk_image=disk_image)
    spec = vm_spec(vm_image.disk, cpu=1, memory_mb=128, disk_mb=256)
    steps: list[str] = []
    result = runner.start(spec, progress=steps.append, timeout=BOOT_TIMEOUT)
    state = result.state
    assert state["kind"] == "vm" and steps[0] == "Creating the VM's pod" and steps[-2:] == ["Starting VM",
                                                                                            "VM running"]
    assert runner.poll(state) is PollStatus.RUNNING
    name = object_name(spec.session_id)
    pod = k8s_api.get("pods", NS, name)
    anchor = k8s_api.get("configmaps", NS, name)
    assert pod["metadata"]["ownerReferences"][0]["uid"] == anchor["metadata"]["uid"]
    assert pod["metadata"]["labels"][LABEL_SESSION] == spec.session_id
    assert pod["metadata"]["labels"]["labs.network-mode"] == "none"

    # The init container copied the base and completed; QEMU's container runs it read-only, never privileged.
    (init,) = pod["status"]["initContainerStatuses"]
    assert (init["name"], init["state"]["terminated"]["reason"]) == ("base-disk", "Completed")
    (copier,) = pod["spec"]["initContainers"]
    assert copier["image"] == disk_image and copier["volumeMounts"] == [{"name": "vm-base", "mountPath": "/vm/base"}]
    (main,) = pod["spec"]["containers"]
    assert main["image"] == DEFAULT_VM_IMAGE
    for container in (main, copier):
        context = container["securityContext"]
        assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                           "runAsUser": 1000, "runAsGroup": 1000, "capabilities": {"drop": ["ALL"]}}
        assert container["resources"]["requests"] == container["resources"]["limits"]
    assert "privileged" not in json.dumps(pod["spec"])
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["enableServiceLinks"] is False
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The guest plus QEMU itself, plus the in-memory /run/vm: its sockets and twice the serial log's cap.
    assert main["resources"]["limits"]["memory"] == f"{128 + 256 + 3}Mi"
    assert parse_quantity(main["resources"]["limits"]["cpu"]) == 1
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["vm-disk"]["emptyDir"] == {"sizeLimit": "256Mi"}
    assert volumes["vm-run"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "3Mi"}
    assert volumes["vm-base"]["emptyDir"]["sizeLimit"].endswith("Mi")
    assert {"name": "vm-base", "mountPath": "/vm/base", "readOnly": True} in main["volumeMounts"]
    assert not any(KVM in c["resources"]["limits"] for c in (main, copier))

    # QEMU: the lab's CPUs and memory, TCG without the KVM resource, the kernel files of the image directory.
    argv = qemu_argv(runner, state)
    assert argv[argv.index("-accel") + 1].startswith("tcg,tb-size=")
    assert (argv[argv.index("-smp") + 1], argv[argv.index("-m") + 1]) == ("1", "128")
    assert argv[argv.index("-kernel") + 1] == "/vm/base/vmlinuz" and "-initrd" in argv
    assert argv[argv.index("-vnc") + 1] == "0.0.0.0:0,websocket=5700"
    overlay = runner.exec_in_pod(state, ["qemu-img", "info", "-U", "--output=json", "/var/lib/labs-vm/overlay.qcow2"],
                                 workdir="/", user="")
    assert json.loads(overlay.stdout)["backing-filename"] == "/vm/base/disk", overlay
    # Neither the base nor the image can be written from QEMU's container.
    for target in ("/vm/base/disk", "/etc/labs-test"):
        assert not runner.exec_in_pod(state, ["touch", target], workdir="/", user="").ok

    # QMP through exec; the serial console is the terminal.
    assert runner.vm.qmp(state, "query-status")["status"] == "running"
    assert b"42" in serial_shell(runner, state, b"echo $((6*7))", b"42", timeout=BOOT_TIMEOUT)
    # Staff follow the serial console: the guest's boot and what the terminal typed, by byte offset.
    boot, cursor = runner.output(state)
    assert b"Linux version" in boot or b"labvm# " in boot, boot[-400:]
    assert b"$((6*7))" in boot and cursor is not None
    assert runner.output(state, cursor) == (b"", cursor)
    serial_shell(runner, state, b"echo MARK-$((6*7))", b"MARK-42", 60)
    later, at = b"", cursor
    deadline = time.monotonic() + 10  # QEMU logs what the guest printed just after serving it to the terminal
    while b"MARK-42" not in later and time.monotonic() < deadline:
        piece, at = runner.output(state, at)
        later += piece
    assert b"MARK-42" in later and b"echo $((6*7))" not in later  # the first command came before the cursor
    # A second terminal takes the console over from one still open (QEMU serves one client).
    first = runner.open_terminal(state)
    try:
        assert b"taken-over" in serial_shell(runner, state, b"echo taken-$((0))ver | tr 0 o", b"taken-over", 60)
    finally:
        first.close()
    assert runner.terminal_exists(state, "1") is False  # nothing named to re-attach

    # VNC on the pod IP; no other port, no commands or files (no guest agent).
    vnc = result.endpoints["vnc"]
    assert vnc == {"host": pod["status"]["podIP"], "port": 5900}
    assert rfb_greeting(vnc["host"], vnc["port"]) == RFB
    assert runner.endpoint(state, 5900).host == pod["status"]["podIP"]
    for call in (lambda: runner.endpoint(state, 80), lambda: runner.exec(state, ["true"]),
                 lambda: runner.list_files(state), lambda: runner.read_file(state, "a"),
                 lambda: runner.write_file(state, "a", b"x"), lambda: runner.stat_file(state, "a")):
        with pytest.raises(RunnerError) as refused:
            call()
        assert refused.value.permanent
    usage = runner.stats(state)
    assert usage.memory_bytes > 0 and usage.memory_limit_bytes == (128 + 256 + 3) << 20

    # A repeated start adopts the running VM.
    again = runner.start(spec, timeout=BOOT_TIMEOUT)
    assert again.state == state

    # Stop presses the power button (acpid powers the guest off), then the anchor's deletion takes the pod.
    began = time.monotonic()
    runner.stop(state, timeout=60)
    assert time.monotonic() - began < 30
    assert k8s_api.get("pods", NS, name) is None and k8s_api.get("configmaps", NS, name) is None
    k8s_api.wait_for(lambda: not leftovers(engine, state["uid"]), 20, "the pod's containers and volumes to go")
    assert runner.poll(state) is PollStatus.MISSING
    runner.stop(state)  # idempotent

    # Every verb the runner used is one the chart's Role grants.
    used: dict[tuple[str, str], set[str]] = {}
    for call in k8s_api.calls:  # by API group too: a Role grants per group
        used.setdefault((call.group, call.resource), set()).add(call.verb)
    granted = role_grants(render({"kubernetesRunner": {"enabled": True}}))
    assert all(verbs <= granted.get(resource, set()) for resource, verbs in used.items()), used


@pytest.mark.docker
def test_a_failed_disk_copy_fails_the_session_at_once_with_its_reason(engine, k8s_api, kubeconfig, vm_image):
    # busybox has no /disks: the init container's copy fails (Init:Error), the pod never restarts it.
    runner = vm_runner(kubeconfig, vm_image, vm_disk_source="init", vm_disk_image="labs/busybox:latest")
    spec = vm_spec(vm_image.disk)
    began = time.monotonic()
    with pytest.raises(RunnerError) as failure:
        runner.start(spec, timeout=BOOT_TIMEOUT)
    assert failure.value.permanent and time.monotonic() - began < 30
    assert "init container base-disk failed (Error, exit status 2)" in str(failure.value)
    assert f"/disks/{vm_image.directory.name}/disk.qcow2 is not in the VM disk image" in str(failure.value)
    name = object_name(spec.session_id)
    k8s_api.wait_for(lambda: k8s_api.cluster.get("configmaps", NS, name) is None
                     and k8s_api.cluster.get("pods", NS, name) is None, 20, "the cleanup")


def test_unusable_setups_are_refused_before_any_object_exists(k8s_api_light, kubeconfig_light, vm_image, tmp_path):
    cases = [
        ({}, "vm_disks_claim"),  # no disk source at all
        ({"vm_disk_source": "init"}, "vm_disk_image"),
        ({"vm_disk_source": "nfs", "vm_disks_claim": "vm-images"}, "unknown vm_disk_source"),
        ({"vm_disks_claim": "vm-images", "vm_disks_root": str(tmp_path)}, "from below"),
    ]
    for options, message in cases:
        runner = vm_runner(kubeconfig_light, vm_image, **options)
        with pytest.raises(RunnerError, match=message) as refused:
            runner.start(vm_spec(vm_image.disk), timeout=10)
        assert refused.value.permanent
    snapshot = tmp_path / "snap.qcow2"
    snapshot.write_bytes(vm_image.disk.read_bytes())
    snapshot.with_name("snap.qcow2.json").write_text("{}")
    with pytest.raises(RunnerError, match="needs the qemu runner, not the Kubernetes runner"):
        vm_runner(kubeconfig_light, vm_image, vm_disks_claim="vm-images", vm_disks_root=str(tmp_path)).start(
            vm_spec(snapshot), timeout=10)
    assert k8s_api_light.list("configmaps", NS) == [] and k8s_api_light.list("pods", NS) == []


def test_the_rendered_vm_pod_reads_the_claim_through_sub_paths_and_asks_for_kvm_when_configured(
        k8s_api_light, kubeconfig_light, vm_image):
    runner = vm_runner(kubeconfig_light, vm_image, vm_disks_claim="vm-images", kvm_resource=KVM, kvm_group=108,
                       node_selector={"labs.kvm": "yes"})
    spec = vm_spec(vm_image.disk, network_mode="bridge")
    anchor = runner.core.create_namespaced_config_map(NS, runner.anchor_manifest(spec))
    manifest = runner.vm.pod_manifest(spec, runner.api_client.sanitize_for_serialization(anchor))
    kubernetes_validate.validate(manifest, "1.33", strict=True)
    spec_ = manifest["spec"]
    assert "privileged" not in json.dumps(manifest) and "initContainers" not in spec_
    assert spec_["nodeSelector"] == {"labs.kvm": "yes"}  # placement options apply as for containers
    assert spec_["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True,
                                        "supplementalGroups": [108]}
    (main,) = spec_["containers"]
    assert main["resources"]["limits"][KVM] == "1" and main["resources"]["requests"][KVM] == "1"
    directory = vm_image.directory.name
    assert {"name": "vm-images", "persistentVolumeClaim": {"claimName": "vm-images", "readOnly": True}} \
        in spec_["volumes"]
    assert [(m["mountPath"], m.get("subPath"), m.get("readOnly")) for m in main["volumeMounts"]] == [
        ("/var/lib/labs-vm", None, None), ("/run/vm", None, None),
        ("/vm/base/disk", f"{directory}/disk.qcow2", True), ("/vm/base/vmlinuz", f"{directory}/vmlinuz", True),
        ("/vm/base/initrd", f"{directory}/initrd.img", True)]
    argv = json.loads(main["command"][3])["argv"]
    assert argv[argv.index("-accel") + 1] == "kvm"  # with the device, no TCG
    assert argv[argv.index("-nic") + 1] == "user,model=virtio-net-pci,ipv6=off"
    # The API server takes it as it is (strict schema, extended resource rules); a node without the device
    # keeps it Pending, as the scheduler would.
    k8s_api_light.create("persistentvolumeclaims", NS, CLAIM)
    created = runner.core.create_namespaced_pod(NS, manifest)
    assert created.spec.containers[0].resources.limits[KVM] == "1"
    k8s_api_light.wait_for(lambda: any(e["reason"] == "FailedScheduling" for e in k8s_api_light.cluster.select(
        "events", NS)), 10, "the scheduler's word")
    assert f"Insufficient {KVM}" in next(e["message"] for e in k8s_api_light.list("events", NS)
                                         if e["reason"] == "FailedScheduling")


@pytest.mark.docker
def test_an_iso_boots_from_the_cd_rom_with_an_empty_disk_of_the_labs_size(engine, k8s_api, kubeconfig, vm_image,
                                                                          tmp_path):
    (tmp_path / "isos").mkdir()
    iso = build_boot_iso(tmp_path / "isos" / "hello.iso", message=b"HELLO FROM THE ISO\r\n")
    tag = build_disk_image(engine, tmp_path / "isos")
    # The ISO's boot loop has no ACPI: the power button is pressed for a second only.
    runner = vm_runner(kubeconfig, vm_image, vm_disk_source="init", vm_disk_image=tag, vm_disks_root=str(tmp_path),
                       vm_powerdown_timeout=1)
    spec = vm_spec(iso, image_kind="iso", network_mode="isolated", disk_mb=300)
    try:
        state = runner.start(spec, timeout=BOOT_TIMEOUT).state
        pod = k8s_api.get("pods", NS, state["pod"])
        assert pod["spec"]["initContainers"][0]["command"][-2:] == ["/disks/isos/hello.iso", "/vm/base/cdrom.iso"]
        argv = qemu_argv(runner, state)
        assert argv[argv.index("-boot") + 1] == "order=cd,once=d" and "-kernel" not in argv
        assert argv[argv.index("-nic") + 1].endswith("restrict=on")  # isolated: a NIC that reaches nothing
        info = runner.exec_in_pod(state, ["qemu-img", "info", "-U", "/var/lib/labs-vm/overlay.qcow2"], workdir="/",
                                  user="")
        assert b"virtual size: 300 MiB" in info.stdout, info
        terminal = runner.open_terminal(state)
        try:
            console_until(terminal, b"HELLO FROM THE ISO", timeout=BOOT_TIMEOUT)
        finally:
            terminal.close()
        began = time.monotonic()
        runner.stop(state, timeout=30)
        assert 1 <= time.monotonic() - began < 20  # QMP quit after the second's grace
        assert k8s_api.get("pods", NS, state["pod"]) is None
    finally:
        engine.images.remove(tag, force=True)


@pytest.mark.docker
def test_a_vm_boots_from_the_claims_files_through_sub_paths(engine, k8s_api, kubeconfig, vm_image):
    made = k8s_api.create("persistentvolumeclaims", NS, CLAIM)
    k8s_api.wait_for(lambda: (k8s_api.cluster.get("persistentvolumeclaims", NS, "vm-images") or {})
                     .get("status", {}).get("phase") == "Bound", 20, "the claim to be bound")
    # The operator's copy of the VM images tree on the claim's storage.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(str(vm_image.directory), arcname=vm_image.directory.name)
    loader = engine.containers.create("labs/busybox:latest", ["true"],
                                      volumes={claim_volume(made["metadata"]["uid"]): {"bind": "/data", "mode": "rw"}})
    try:
        assert loader.put_archive("/data", archive.getvalue())
    finally:
        loader.remove(force=True)
    runner = vm_runner(kubeconfig, vm_image, vm_disks_claim="vm-images")
    spec = vm_spec(vm_image.disk)
    state = runner.start(spec, timeout=BOOT_TIMEOUT).state
    try:
        assert runner.vm.qmp(state, "query-status")["status"] == "running"
        assert b"42" in serial_shell(runner, state, b"echo $((6*7))", b"42", timeout=BOOT_TIMEOUT)
        mounted = runner.exec_in_pod(state, ["sh", "-c", "ls /vm/base; touch /vm/base/disk || echo read-only"],
                                     workdir="/", user="")
        assert mounted.stdout.split() == [b"disk", b"initrd", b"vmlinuz", b"read-only"], mounted
    finally:
        runner.stop(state, timeout=30)
    assert k8s_api.get("pods", NS, object_name(spec.session_id)) is None


@pytest.fixture
def proxy_runners(settings, kubeconfig, vm_image, disk_image) -> Iterator[KubernetesRunner]:
    """The configured "kubernetes" runner in proxy mode (the platform outside the cluster)."""
    settings.LAB_RUNNERS = {"kubernetes": {"BACKEND": "runners.kubernetes.KubernetesRunner", "OPTIONS": {
        "kubeconfig": str(kubeconfig), "namespace": NS, "instance": f"labstest{uuid.uuid4().hex[:6]}",
        "api_timeout": 20, "endpoint_mode": "proxy", "vm_disks_root": str(vm_image.directory.parent),
        "vm_disk_source": "init", "vm_disk_image": disk_image}}}
    reset_cache()
    runner = get_runner("kubernetes")
    assert isinstance(runner, KubernetesRunner)
    yield runner
    for env in runner.list_managed():
        runner.remove_managed(env)
    reset_cache()


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
async def test_the_vnc_console_reaches_a_vm_through_the_api_server_in_proxy_mode(proxy_runners, k8s_api, owner, lab,
                                                                                 vm_image):
    from consoles.tests.test_vnc_consumer import RfbReader, communicator, cookie_for
    from sessions_app.models import Session, State

    runner = proxy_runners
    spec = vm_spec(vm_image.disk, network_mode="isolated")
    result = await asyncio.to_thread(runner.start, spec, timeout=BOOT_TIMEOUT)
    state = result.state
    try:
        # The record names no address: one made in this process would mean nothing in another.
        assert result.endpoints == {"vnc": {"port": 5900, "through": "runner"}}
        endpoint = await asyncio.to_thread(runner.endpoint, state, 5900)
        assert endpoint.host == "127.0.0.1" and endpoint.port != 5900
        assert await asyncio.to_thread(rfb_greeting, endpoint.host, endpoint.port) == RFB
        # Through the API server's pods/proxy to QEMU's WebSocket port (logged once the tunnel closed).
        await asyncio.to_thread(k8s_api.wait_for, lambda: ("get", f"{state['pod']}:5700") in {
            (c.verb, c.name) for c in k8s_api.calls if c.resource == "pods/proxy"}, 10, "the proxied request")

        # The platform's VNC consumer asks the session's runner for that address and bridges it.
        def make_session() -> Any:
            now = timezone.now()
            return Session.objects.create(user=owner, lab=lab, state=State.RUNNING, runner_name="kubernetes",
                                          runner_state=state, endpoints=result.endpoints, started_at=now,
                                          expires_at=now + timedelta(hours=1), last_active_at=now)

        session = await database_sync_to_async(make_session)()
        comm = communicator(session, await database_sync_to_async(cookie_for)(owner))
        connected, _ = await comm.connect()
        assert connected
        assert await RfbReader(comm).read_exact(12, timeout=30) == RFB
        await comm.disconnect()
    finally:
        await asyncio.to_thread(runner.stop, state, timeout=10)
        await database_sync_to_async(connections.close_all)()
    assert runner.vm._tunnels.listeners() == {}  # stop closed the session's tunnel


@pytest.mark.docker
def test_a_vm_lab_on_the_kubernetes_runner_runs_as_a_session(settings, k8s_api, kubeconfig, vm_image, disk_image,
                                                             owner, django_capture_on_commit_callbacks):
    from sessions_app import actions
    from sessions_app.models import State

    settings.LAB_START_TIMEOUT_SECONDS = BOOT_TIMEOUT
    settings.LAB_RUNNERS = {"kubernetes": {"BACKEND": "runners.kubernetes.KubernetesRunner", "OPTIONS": {
        "kubeconfig": str(kubeconfig), "namespace": NS, "instance": f"labstest{uuid.uuid4().hex[:6]}",
        "api_timeout": 20, "vm_disks_root": str(vm_image.directory.parent), "vm_disk_source": "init",
        "vm_disk_image": disk_image}}}
    reset_cache()
    runner = get_runner("kubernetes")  # VM labs stay on it: it boots them itself
    lab = vm_lab(vm_image, "kubernetes")
    session = None
    try:
        with django_capture_on_commit_callbacks(execute=True):
            session = actions.start_session(owner, lab)
        session.refresh_from_db()
        assert session.state == State.RUNNING, session.error
        assert session.runner_state["kind"] == "vm"
        vnc = session.endpoints["vnc"]
        assert rfb_greeting(vnc["host"], vnc["port"]) == RFB
        pod = k8s_api.get("pods", NS, session.runner_state["pod"])
        assert pod["metadata"]["labels"]["labs.network-mode"] == "bridge"  # the chart's policies select on it
        argv = qemu_argv(runner, session.runner_state)
        assert argv[argv.index("-nic") + 1] == "user,model=virtio-net-pci,ipv6=off"  # bridge: NAT in the pod
        assert b"42" in serial_shell(runner, session.runner_state, b"echo $((6*7))", b"42", timeout=BOOT_TIMEOUT)
        with django_capture_on_commit_callbacks(execute=True):
            actions.stop_session(session)
        session.refresh_from_db()
        assert session.state == State.STOPPED, session.error
        assert k8s_api.get("configmaps", NS, session.runner_state["anchor"]) is None
    finally:
        if session is not None and session.runner_state:
            runner.stop(session.runner_state, timeout=0)
        reset_cache()
