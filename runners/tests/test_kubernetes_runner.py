"""The Kubernetes runner against the Kubernetes API server double (tests/k8s/), whose kubelet runs every
pod as real Docker containers: objects, security settings, waiting and failures, exec, files, the
judge's trusted reads, terminals, stop and reconciliation, and the verbs the runner needs."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runners.base import PollStatus, RunnerError, SessionSpec
from runners.kubernetes import (
    LABEL_LAB,
    LABEL_MANAGED,
    LABEL_SESSION,
    KubernetesRunner,
    is_pod_ready,
    label_value,
    object_name,
    permanent_failure,
)
from tests.deploy.chart import render, role_grants
from tests.k8s.fixtures import SESSIONS_NAMESPACE as NS
from tests.k8s.fixtures import cluster_namespace

# A busybox with a learner user: built here for the double; push one and name it for a real cluster.
TINY = os.environ.get("LAB_TEST_K8S_IMAGE", "labs/busybox:latest")
def spec_of(**overrides: Any) -> SessionSpec:
    fields: dict[str, Any] = {"session_id": str(uuid.uuid4()), "user_id": 7, "username": "olivia",
                              "lab_slug": "tiny", "image": TINY, "cpu": 0.5, "memory_mb": 64, "disk_mb": 256}
    fields.update(overrides)
    return SessionSpec(**fields)


@pytest.fixture
def runner(cluster_kubeconfig, request) -> KubernetesRunner:
    namespace = cluster_namespace(request.config) if request.node.get_closest_marker("k8s_real") else NS
    return KubernetesRunner("kubernetes-test", {"kubeconfig": str(cluster_kubeconfig), "namespace": namespace,
                                                "instance": f"labstest{uuid.uuid4().hex[:6]}",
                                                "agent_image": TINY, "api_timeout": 20})


@pytest.fixture
def started(runner):
    states = []

    def _start(**overrides: Any) -> tuple[SessionSpec, Any, list[str]]:
        spec = spec_of(**overrides)
        steps: list[str] = []
        result = runner.start(spec, progress=steps.append, timeout=60)
        states.append(result.state)
        return spec, result, steps

    yield _start
    for state in states:
        runner.stop(state, timeout=1)


# pure helpers ----------------------------------------------------------------------------------------------
def test_label_values_are_cut_to_63_valid_characters():
    assert label_value("a" * 80) == "a" * 63
    assert label_value("Intro to Linux: files/dirs!") == "Intro-to-Linux--files-dirs"
    assert label_value("-x-") == "x"
    assert object_name("0f8c9a2e-1b7d-4c55-9d0e-3b2a1c4d5e6f") == "lab-0f8c9a2e-1b7d-4c55-9d0e-3b2a1c4d5e6f"
    odd = object_name("Session_" + "x" * 80)
    assert len(odd) <= 63 and odd.startswith("lab-session-")


def test_ready_means_running_with_an_ip_every_container_ready_and_not_terminating():
    pod = {"metadata": {}, "status": {"phase": "Running", "podIP": "10.0.0.5",
                                      "containerStatuses": [{"name": "main", "ready": True}]}}
    assert is_pod_ready(pod)
    assert not is_pod_ready({**pod, "metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}})
    assert not is_pod_ready({**pod, "status": {**pod["status"], "podIP": ""}})
    assert not is_pod_ready({**pod, "status": {**pod["status"], "containerStatuses": [
        {"name": "main", "ready": True}, {"name": "agent", "ready": False}]}})
    pulling = {"status": {"phase": "Pending", "containerStatuses": [
        {"name": "main", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}}]}}
    assert permanent_failure(pulling) == "main: ImagePullBackOff: Back-off"
    assert permanent_failure({"status": {"phase": "Pending", "containerStatuses": [
        {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}) == ""


def test_an_unconfigured_runner_is_unavailable_without_touching_the_network(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runner = KubernetesRunner("kubernetes", {})
    assert runner.available() is False
    with pytest.raises(RunnerError, match="not configured") as failure:
        runner.start(spec_of())
    assert failure.value.permanent


# against the double ------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_start_makes_an_anchor_and_a_pod_it_owns_with_the_security_settings(runner, started, k8s_api):
    long_slug = "a-very-long-lab-slug-" + "x" * 60
    spec, result, steps = started(lab_slug=long_slug, exposed_ports=(8080,))
    name = object_name(spec.session_id)
    anchor = k8s_api.get("configmaps", NS, name)
    pod = k8s_api.get("pods", NS, name)
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "ConfigMap", "name": name,
                                                   "uid": anchor["metadata"]["uid"], "controller": True,
                                                   "blockOwnerDeletion": True}]
    labels = pod["metadata"]["labels"]
    assert labels[LABEL_SESSION] == spec.session_id and labels[LABEL_MANAGED] == runner.instance
    assert labels[LABEL_LAB] == long_slug[:63] and labels["app.kubernetes.io/managed-by"] == "browser-labs"
    assert labels["labs.user"] == "7" and labels["labs.network-mode"] == "bridge"
    assert pod["metadata"]["annotations"]["labs.platform/lab"] == long_slug
    assert pod["metadata"]["annotations"]["labs.platform/username"] == "olivia"
    pod_spec = pod["spec"]
    assert pod_spec["automountServiceAccountToken"] is False and pod_spec["enableServiceLinks"] is False
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["activeDeadlineSeconds"] > 0
    assert not any(v["name"].startswith("kube-api-access") for v in pod_spec["volumes"])
    main, agent = pod_spec["containers"]
    assert (main["name"], agent["name"]) == ("main", "agent")
    assert main["resources"]["requests"] == main["resources"]["limits"] == {
        "cpu": "500m", "memory": "64Mi", "ephemeral-storage": "256Mi"}
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert main["startupProbe"]["exec"]["command"]
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert agent["volumeMounts"][0]["readOnly"] is True
    assert pod["status"]["qosClass"] == "Burstable"  # the agent asks for less than its limits
    # Progress came from the pod's Events and states; the pids limit is said not to be enforced.
    assert steps[0].startswith("Note: the process limit")
    assert "Pulling the image" in steps or "Image ready" in steps
    assert steps[-1] == "Container ready"
    assert result.endpoints == {"host": pod["status"]["podIP"]}
    assert runner.poll(result.state) is PollStatus.RUNNING
    assert runner.endpoint(result.state, 8080).host == pod["status"]["podIP"]


@pytest.mark.docker
@pytest.mark.k8s_real
def test_exec_carries_stdin_both_streams_the_exit_code_and_a_server_side_timeout(runner, started):
    _, result, _ = started()
    out = runner.exec(result.state, ["sh", "-c", "tr a-z A-Z; echo err >&2; exit 3"], stdin=b"hello")
    assert (out.exit_code, out.stdout, out.stderr, out.timed_out) == (3, b"HELLO", b"err\n", False)
    assert runner.exec(result.state, ["pwd"]).stdout == b"/workspace\n"
    assert runner.exec(result.state, ["sh", "-c", "echo $X"], environment={"X": "y"}, workdir="/tmp").stdout == b"y\n"
    began = time.monotonic()
    slow = runner.exec(result.state, ["sleep", "30"], timeout=1)
    assert slow.timed_out and slow.exit_code in (124, 137)
    assert time.monotonic() - began < 10


@pytest.mark.docker
def test_exec_input_still_ends_on_an_api_server_that_speaks_only_v4(runner, started, k8s_api):
    k8s_api.exec_protocols = ("v4.channel.k8s.io",)
    _, result, _ = started()
    out = runner.exec(result.state, ["sh", "-c", "wc -c; exit 2"], stdin=b"x" * 100_000)
    assert (out.exit_code, out.stdout.strip()) == (2, b"100000")
    runner.write_file(result.state, "v4.txt", b"saved over v4\n")
    assert runner.read_file(result.state, "v4.txt") == b"saved over v4\n"


@pytest.mark.docker
def test_the_agent_reads_private_files_even_from_an_image_whose_user_is_not_root(kubeconfig):
    runner = KubernetesRunner("kubernetes-test", {"kubeconfig": str(kubeconfig), "namespace": NS,
                                                  "instance": f"labstest{uuid.uuid4().hex[:6]}",
                                                  "agent_image": "labs/base:bookworm", "api_timeout": 20})
    result = runner.start(spec_of(shell_user="learner"), timeout=60)
    try:
        runner.exec(result.state, ["sh", "-c", "echo secret > /workspace/key && chmod 600 /workspace/key"],
                    user="root")
        assert runner.read_file_untrusted(result.state, "key") == b"secret\n"
        found = runner.stat_file(result.state, "key")
        assert found is not None and found.mode == 0o600
    finally:
        runner.stop(result.state, timeout=1)


@pytest.mark.docker
@pytest.mark.k8s_real
def test_commands_and_shells_run_as_the_labs_user_while_the_platform_stays_root(runner, started):
    _, result, _ = started(shell_user="learner")
    # Arguments that look like su's own options (-s, -c) reach the command untouched.
    as_learner = runner.exec(result.state, ["sh", "-c", 'echo "$(id -un) $1 $2"', "sh", "-s", "-c"])
    assert (as_learner.exit_code, as_learner.stdout) == (0, b"learner -s -c\n"), as_learner
    as_root = runner.exec(result.state, ["id", "-un"], user="root")
    assert as_root.stdout == b"root\n", as_root
    runner.write_file(result.state, "mine.txt", b"x")
    owner = runner.exec(result.state, ["stat", "-c", "%U", "/workspace/mine.txt"])
    assert owner.stdout == b"learner\n", owner
    terminal = runner.open_terminal(result.state)
    try:
        terminal.write(b"echo who=$(id -un)\n")
        seen = b""
        deadline = time.monotonic() + 20
        while b"who=learner" not in seen:
            assert time.monotonic() < deadline, seen
            readable, _, _ = select.select([terminal.fileno()], [], [], 1)
            if readable:
                seen += terminal.read(4096)
    finally:
        terminal.close()


def test_preload_imports_the_client_only_for_a_configured_runner(tmp_path):
    """The worker preloads before it forks per job; an unconfigured runner costs nothing."""
    script = (
        "import sys\n"
        "from runners.kubernetes import KubernetesRunner\n"
        "assert 'kubernetes.client' not in sys.modules\n"
        "KubernetesRunner('k', {}).preload()\n"
        "assert 'kubernetes.client' not in sys.modules\n"
        f"KubernetesRunner('k', {{'kubeconfig': {str(tmp_path / 'kubeconfig')!r}}}).preload()\n"
        "assert {'kubernetes.client', 'kubernetes.stream', 'kubernetes.watch'} <= set(sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr


@pytest.mark.docker
@pytest.mark.k8s_real
def test_starter_files_arrive_owned_by_the_labs_user_even_where_the_image_has_no_run(runner, started, tmp_path):
    starter = tmp_path / "starter"
    (starter / "src").mkdir(parents=True)
    (starter / "src" / "app.py").write_text("print('hi')\n")
    _, result, steps = started(starter_dir=str(starter), shell_user="learner")
    assert "Copying starter files" in steps
    listing = runner.exec(result.state, ["sh", "-c", "stat -c '%U %n' src src/app.py; cat src/app.py"])
    assert listing.stdout == b"learner src\nlearner src/app.py\nprint('hi')\n", listing


@pytest.mark.docker
@pytest.mark.k8s_real
def test_files_round_trip_and_stay_inside_the_workspace(runner, started):
    _, result, _ = started()
    runner.write_file(result.state, "app/main.py", b"print('hi')\n")
    assert runner.read_file(result.state, "app/main.py") == b"print('hi')\n"
    assert ("app", True) in [(entry.path, entry.is_dir) for entry in runner.list_files(result.state)]
    runner.exec(result.state, ["ln", "-s", "/etc/passwd", "/workspace/escape"])
    for hostile in ("../etc/passwd", "/etc/passwd", "escape"):
        with pytest.raises(RunnerError):
            runner.read_file(result.state, hostile)
    with pytest.raises(RunnerError):
        runner.write_file(result.state, "escape", b"x")
    runner.write_file(result.state, "big.bin", b"x" * 2048)
    with pytest.raises(RunnerError, match="larger than"):
        runner.read_file(result.state, "big.bin", max_bytes=1024)


@pytest.mark.docker
@pytest.mark.k8s_real
def test_the_judge_reads_through_the_agent_not_the_learners_programs(runner, started):
    _, result, _ = started()
    runner.write_file(result.state, "answer.txt", b"42\n")
    runner.exec(result.state, ["chmod", "4755", "/workspace/answer.txt"])
    runner.exec(result.state, ["ln", "-s", "/etc/passwd", "/workspace/escape"])
    # The learner (root in their container) removes every program there; the agent runs its own.
    runner.exec(result.state, ["sh", "-c", "rm -rf /bin/* /usr/bin/*"])
    with pytest.raises(RunnerError):
        runner.read_file(result.state, "answer.txt")
    assert runner.read_file_untrusted(result.state, "answer.txt") == b"42\n"
    found = runner.stat_file(result.state, "answer.txt")
    assert found is not None and found.is_file and found.size == 3 and found.mode == 0o4755
    assert runner.stat_file(result.state, "escape") is None
    assert runner.stat_file(result.state, "missing") is None
    with pytest.raises(RunnerError, match="no such file"):
        runner.read_file_untrusted(result.state, "escape")


@pytest.mark.docker
@pytest.mark.k8s_real
def test_a_terminal_runs_commands_resizes_and_reports_its_end(runner, started):
    _, result, _ = started()
    terminal = runner.open_terminal(result.state, cols=100, rows=30)
    try:
        terminal.write(b"echo $((6*7)); stty size\n")
        seen = b""
        deadline = time.monotonic() + 15
        while b"42" not in seen or b"30 100" not in seen:
            assert time.monotonic() < deadline, seen
            readable, _, _ = select.select([terminal.fileno()], [], [], 1)
            if readable:
                seen += terminal.read(4096)
        terminal.resize(120, 40)
        terminal.write(b"stty size; exit\n")
        while True:
            assert time.monotonic() < deadline + 10, seen
            readable, _, _ = select.select([terminal.fileno()], [], [], 1)
            if readable:
                chunk = terminal.read(4096)
                if not chunk:
                    break  # the shell ended: end of file on the descriptor
                seen += chunk
        assert b"40 120" in seen
    finally:
        terminal.close()


@pytest.mark.docker
@pytest.mark.k8s_real
async def test_the_terminal_bridge_drives_a_kubernetes_terminal_without_blocking_the_loop(runner, started):
    from consoles.terminals import TerminalBridge

    _, result, _ = await asyncio.to_thread(started)
    terminal = await asyncio.to_thread(runner.open_terminal, result.state, 80, 24)
    output = bytearray()
    ended = asyncio.Event()

    async def send_output(data: bytes) -> None:
        output.extend(data)

    async def on_exit() -> None:
        ended.set()

    bridge = TerminalBridge(terminal, send_output=send_output, on_exit=on_exit)
    bridge.start()
    try:
        bridge.write(b"echo $((7*6)); exit\n")
        await asyncio.wait_for(ended.wait(), 20)
        assert b"42" in output
    finally:
        await bridge.close()


@pytest.mark.docker
def test_starting_twice_adopts_the_same_pod(runner, started, k8s_api):
    spec, first, _ = started()
    again = runner.start(spec, timeout=30)
    assert again.state["uid"] == first.state["uid"]
    assert len([p for p in k8s_api.list("pods", NS) if p["metadata"]["labels"][LABEL_SESSION] == spec.session_id]) == 1


@pytest.mark.docker
def test_a_missing_image_fails_at_once_and_leaves_nothing(runner, k8s_api):
    spec = spec_of(image="labs/does-not-exist:1")
    steps: list[str] = []
    began = time.monotonic()
    with pytest.raises(RunnerError) as failure:
        runner.start(spec, progress=steps.append, timeout=60)
    assert failure.value.permanent and "ErrImagePull" in str(failure.value)
    assert time.monotonic() - began < 20
    name = object_name(spec.session_id)
    k8s_api.wait_for(lambda: k8s_api.cluster.get("configmaps", NS, name) is None
                     and k8s_api.cluster.get("pods", NS, name) is None, 20, "the cleanup")


@pytest.mark.docker
def test_a_quota_refusal_fails_permanently_and_removes_the_anchor(runner, k8s_api):
    k8s_api.deny("create", "pods", "exceeded quota: sessions, requested: cpu=500m, used: cpu=4, limited: cpu=4")
    spec = spec_of()
    with pytest.raises(RunnerError) as failure:
        runner.start(spec, timeout=30)
    assert failure.value.permanent and "exceeded quota" in str(failure.value)
    k8s_api.wait_for(lambda: k8s_api.cluster.get("configmaps", NS, object_name(spec.session_id)) is None, 10,
                     "the anchor to go")


@pytest.mark.docker
def test_an_unschedulable_pod_reports_why_and_times_out(runner, k8s_api):
    k8s_api.unschedulable("lab-*")
    steps: list[str] = []
    with pytest.raises(RunnerError) as failure:
        runner.start(spec_of(), progress=steps.append, timeout=3)
    assert not failure.value.permanent and "not ready after 3 s" in str(failure.value)
    assert any(step.startswith("Waiting for room in the cluster") for step in steps)


@pytest.mark.docker
def test_a_watch_from_a_compacted_version_relists_and_goes_on(runner, started, k8s_api):
    k8s_api.compact_before("watch", "pods")
    _, result, _ = started()
    assert runner.poll(result.state) is PollStatus.RUNNING
    assert ("list", "pods") in {(c.verb, c.resource) for c in k8s_api.calls}


@pytest.mark.docker
def test_stop_removes_everything_and_is_idempotent(runner, k8s_api):
    spec = spec_of()
    result = runner.start(spec, timeout=60)
    before = len(k8s_api.calls)
    runner.stop(result.state, timeout=1)
    name = object_name(spec.session_id)
    assert k8s_api.get("pods", NS, name) is None and k8s_api.get("configmaps", NS, name) is None
    # It waits by watching the anchor (whose foreground deletion outlasts the pod), not by polling.
    assert [(c.verb, c.resource) for c in k8s_api.calls[before:]] == [
        ("delete", "pods"), ("delete", "configmaps"), ("list", "configmaps"), ("watch", "configmaps")]
    assert runner.poll(result.state) is PollStatus.MISSING
    runner.stop(result.state)


@pytest.mark.docker
def test_list_managed_finds_sessions_and_stop_all_is_one_call_per_kind(runner, k8s_api):
    first, second = spec_of(), spec_of()
    runner.start(first, timeout=60)
    runner.start(second, timeout=60)
    managed = {env.session_id: env for env in runner.list_managed()}
    assert set(managed) == {first.session_id, second.session_id}
    assert all(env.running and env.ref.startswith("configmap:") for env in managed.values())
    runner.remove_managed(managed[first.session_id])
    k8s_api.wait_for(lambda: k8s_api.cluster.get("pods", NS, object_name(first.session_id)) is None, 20,
                     "the first session to go")
    assert [env.session_id for env in runner.list_managed()] == [second.session_id]
    before = len(k8s_api.calls)
    runner.remove_all_managed()
    assert [(c.verb, c.resource) for c in k8s_api.calls[before:]] == [("deletecollection", "configmaps"),
                                                                      ("deletecollection", "pods")]
    k8s_api.wait_for(lambda: not k8s_api.cluster.select("pods", NS), 20, "every session to go")


@pytest.mark.docker
def test_the_verbs_the_runner_uses_are_within_the_charts_role(runner, k8s_api):
    spec = spec_of(starter_dir=None)
    result = runner.start(spec, timeout=60)
    runner.exec(result.state, ["true"])
    runner.write_file(result.state, "a.txt", b"a")
    runner.read_file_untrusted(result.state, "a.txt")
    terminal = runner.open_terminal(result.state)
    terminal.close()
    runner.poll(result.state)
    runner.endpoint(result.state, 80)
    runner.list_managed()
    runner.stop(result.state, timeout=1)
    runner.remove_all_managed()
    used: dict[tuple[str, str], set[str]] = {}
    for call in k8s_api.calls:  # by API group too: a Role grants per group
        used.setdefault((call.group, call.resource), set()).add(call.verb)
    # The Role as the chart really renders it with the runner switched on.
    granted = role_grants(render({"kubernetesRunner": {"enabled": True}}))
    assert all(verbs <= granted.get(resource, set()) for resource, verbs in used.items()), used
    # exec is a WebSocket GET; the Role also grants create, which API servers since 1.35 check too.
    assert used[("", "pods/exec")] == {"get"}


@pytest.mark.docker
def test_starts_in_parallel_each_get_their_own_pod(runner, k8s_api):
    specs = [spec_of() for _ in range(2)]
    results: dict[str, Any] = {}

    def start(spec: SessionSpec) -> None:
        results[spec.session_id] = runner.start(spec, timeout=60)

    threads = [threading.Thread(target=start, args=(spec,)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len({result.state["uid"] for result in results.values()}) == 2
    for result in results.values():
        assert runner.exec(result.state, ["hostname"]).stdout == b"lab\n"
        runner.stop(result.state, timeout=1)


# output ----------------------------------------------------------------------------------------------------
def _print_in_main(runner: KubernetesRunner, state: dict[str, Any], text: str) -> None:
    """Lines on the `main` container's stdout, where its log comes from (as root: PID 1 is the keepalive)."""
    result = runner.exec(state, ["sh", "-c", f"printf '{text}' > /proc/1/fd/1"], user="root")
    assert result.exit_code == 0, result


@pytest.mark.docker
def test_output_is_the_main_containers_log_after_the_cursor_without_repeats(runner, started, k8s_api):
    _, result, _ = started()
    state = result.state
    _print_in_main(runner, state, "first line\\nsecond line\\n")
    data, cursor = runner.output(state)
    assert data.endswith(b"first line\nsecond line\n")
    assert cursor is not None
    # Nothing new: nothing, the same cursor; a line in the same second as the last one comes once.
    assert runner.output(state, cursor) == (b"", cursor)
    _print_in_main(runner, state, "third line\\n")
    more, later = runner.output(state, cursor)
    assert more == b"third line\n"
    assert later is not None and later > cursor
    # A small budget reads the lines in pieces, in order, each once.
    for n in range(4, 9):
        _print_in_main(runner, state, f"line {n}\\n")
    pieces, at = b"", later
    for _ in range(10):
        piece, at = runner.output(state, at, max_bytes=8)
        if not piece:
            break
        assert len(piece) <= 8
        pieces += piece
    assert pieces == b"".join(f"line {n}\n".encode() for n in range(4, 9))
    assert ("get", "pods/log", state["pod"]) in {(call.verb, call.resource, call.name) for call in k8s_api.calls}
