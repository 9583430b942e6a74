"""Labs with several hosts on the Kubernetes runner (runners/k8s_hosts.py), against the API server double
(tests/k8s/), whose kubelet runs every pod as real Docker containers: a pod per host owned by the anchor,
the per-session NetworkPolicy, names and `ssh node01` from the first host as the learner (as the
Docker runner's Killercoda test checks), exec and files on another host, stop, a failing host, and
network mode none. The double stores and validates NetworkPolicies but does not enforce them (its
pods share one Docker bridge): that the policy lets exactly the session's pods in is checked on
what the runner rendered, against the chart's static policies."""

from __future__ import annotations

import re
import select
import time
import uuid
from typing import Any

import pytest

from runners.base import PlacedFile, RunnerError
from runners.kubernetes import LABEL_HOST, LABEL_SESSION, KubernetesRunner, object_name
from runners.tests.test_kubernetes_runner import spec_of
from tests.deploy.chart import render, role_grants
from tests.deploy.test_helm_chart import policies_selecting, selects, session_pod
from tests.k8s.fixtures import SESSIONS_NAMESPACE as NS
from tests.k8s.kubelet import PodScript

# Debian with sshd and ssh, root as the learner: the host Killercoda's two-node scenarios run on.
HOST_IMAGE = "labs/killercoda:bookworm"
HOSTS = ("controlplane", "node01")


@pytest.fixture
def runner(kubeconfig) -> KubernetesRunner:
    return KubernetesRunner("kubernetes-test", {"kubeconfig": str(kubeconfig), "namespace": NS,
                                                "instance": f"labstest{uuid.uuid4().hex[:6]}",
                                                "agent_image": "labs/busybox:latest", "api_timeout": 20})


def two_hosts(**overrides: Any) -> Any:
    return spec_of(image=HOST_IMAGE, shell_user="root", hosts=HOSTS, memory_mb=256, **overrides)


def session_objects(server: Any, plural: str, session_id: str) -> list[dict[str, Any]]:
    return [obj for obj in server.list(plural, NS) if obj["metadata"]["labels"].get(LABEL_SESSION) == session_id]


def read_terminal_until(terminal: Any, wanted: bytes, seconds: float = 20) -> bytes:
    seen, deadline = b"", time.monotonic() + seconds
    while wanted not in seen:
        assert time.monotonic() < deadline, seen
        if select.select([terminal.fileno()], [], [], 1)[0]:
            seen += terminal.read(4096)
    return seen


@pytest.mark.docker
def test_two_hosts_start_as_pods_that_reach_each_other_by_name_and_over_ssh(runner, k8s_api):
    spec = two_hosts()
    steps: list[str] = []
    before = len(k8s_api.calls)
    result = runner.start(spec, progress=steps.append, timeout=90)
    state, name = result.state, object_name(spec.session_id)
    try:
        anchor = k8s_api.get("configmaps", NS, name)
        first, second = (k8s_api.get("pods", NS, pod) for pod in (name, f"{name}-node01"))
        assert state["hosts"] == {"node01": f"{name}-node01"} and state["host"] == "controlplane"
        # One pod per host, both the anchor's, labelled with their host, with the same security settings.
        for pod, host in ((first, "controlplane"), (second, "node01")):
            assert [ref["uid"] for ref in pod["metadata"]["ownerReferences"]] == [anchor["metadata"]["uid"]]
            assert pod["metadata"]["labels"][LABEL_HOST] == host == pod["metadata"]["annotations"]["labs.platform/host"]
            assert pod["spec"]["hostname"] == host
            assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["enableServiceLinks"] is False
        main1, main2 = first["spec"]["containers"][0], second["spec"]["containers"][0]
        assert main1["securityContext"] == main2["securityContext"]
        assert main1["securityContext"]["allowPrivilegeEscalation"] is False
        assert main1["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"SYS_CHROOT", "NET_BIND_SERVICE"} <= set(main1["securityContext"]["capabilities"]["add"])
        assert main1["resources"] == main2["resources"]
        assert first["spec"]["securityContext"] == second["spec"]["securityContext"]
        # The learner's pod alone has the judge's agent.
        assert [c["name"] for c in first["spec"]["containers"]] == ["main", "agent"]
        assert [c["name"] for c in second["spec"]["containers"]] == ["main"]
        assert any(step.startswith("node01: ") for step in steps), steps
        assert steps[-1] == "Container ready"

        # Names and SSH, as the learner (root here) on the first host, as a terminal would run them.
        def as_learner(script: str, host: str = "") -> Any:
            return runner.exec(state, ["bash", "-lc", script], timeout=60, host=host)

        assert as_learner("hostname").stdout == b"controlplane\n"
        assert as_learner("hostname", host="node01").stdout == b"node01\n"
        resolved = as_learner("getent hosts node01").stdout.split()
        assert resolved[:2] == [second["status"]["podIP"].encode(), b"node01"]
        assert as_learner("getent hosts controlplane", host="node01").stdout.split()[0] == \
            first["status"]["podIP"].encode()
        reached = as_learner("ssh node01 hostname")
        assert reached.stdout == b"node01\n", reached.stderr
        assert as_learner("ssh node01 touch /root/done").ok
        assert as_learner("test -e /root/done", host="node01").ok and not as_learner("test -e /root/done").ok

        # Files, placed files and terminals on the other host; the learner's pod is the default.
        runner.write_file(state, "notes.txt", b"on node01\n", host="node01")
        assert runner.read_file(state, "notes.txt", host="node01") == b"on node01\n"
        assert "notes.txt" in [entry.path for entry in runner.list_files(state, host="node01")]
        with pytest.raises(RunnerError, match="no such file"):
            runner.read_file(state, "notes.txt")
        runner.place_files(state, [PlacedFile("/etc/labs/role", b"worker\n")], host="node01")
        assert as_learner("cat /etc/labs/role", host="node01").stdout == b"worker\n"
        with pytest.raises(RunnerError, match="no host named 'node02'"):
            runner.exec(state, ["true"], host="node02")
        terminal = runner.open_terminal(state, host="node01")
        try:
            terminal.write(b"echo at=$(hostname)\n")
            read_terminal_until(terminal, b"at=node01")
        finally:
            terminal.close()

        # The session's own policy: owned by the anchor, its pods (and only they) reach each other.
        [policy] = session_objects(k8s_api, "networkpolicies", spec.session_id)
        assert policy["metadata"]["name"] == name
        assert [ref["uid"] for ref in policy["metadata"]["ownerReferences"]] == [anchor["metadata"]["uid"]]
        assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        [peer] = policy["spec"]["ingress"][0]["from"]
        assert policy["spec"]["egress"] == [{"to": [peer]}] and set(peer) == {"podSelector"}
        for pod in (first, second):
            assert selects(policy["spec"]["podSelector"], pod["metadata"]["labels"])
            assert selects(peer["podSelector"], pod["metadata"]["labels"])
        other_session = {**first["metadata"]["labels"], LABEL_SESSION: str(uuid.uuid4())}
        assert not selects(peer["podSelector"], other_session)
        assert not selects(policy["spec"]["podSelector"], other_session)
        # With the chart's static policies: the two pods are denied all else, as a single-host pod is.
        static = policies_selecting(render(), first["metadata"]["labels"])
        assert set(static) == set(policies_selecting(render(), session_pod("bridge")))

        # Every call of this session is within the Role the chart renders.
        used = {(call.group, call.resource, call.verb) for call in k8s_api.calls[before:]}
        granted = role_grants(render({"kubernetesRunner": {"enabled": True}}))
        assert {("networking.k8s.io", "networkpolicies", "create")} <= used
        assert all(verb in granted.get((group, resource), set()) for group, resource, verb in used), used
    finally:
        runner.stop(state, timeout=1)
    for plural in ("pods", "configmaps", "networkpolicies"):
        k8s_api.wait_for(lambda plural=plural: not [o for o in k8s_api.cluster.select(plural, NS)
                                                    if o["metadata"]["name"].startswith(name)], 20, f"{plural} to go")


@pytest.mark.docker
def test_a_second_host_that_cannot_start_fails_the_session_and_leaves_nothing(runner, k8s_api):
    k8s_api.run(lambda: k8s_api.kubelet.script(PodScript("lab-*-node01", pull_failure="ErrImagePull")))
    spec = two_hosts()
    steps: list[str] = []
    with pytest.raises(RunnerError) as failure:
        runner.start(spec, progress=steps.append, timeout=60)
    assert failure.value.permanent
    assert re.match(r"node01: main: (ErrImagePull|ImagePullBackOff)", str(failure.value)), failure.value
    name = object_name(spec.session_id)
    k8s_api.wait_for(lambda: not [o for plural in ("pods", "configmaps", "networkpolicies")
                                  for o in k8s_api.cluster.select(plural, NS)
                                  if o["metadata"]["name"].startswith(name)], 30, "the cleanup")


def test_several_hosts_need_a_network(kubeconfig_light, k8s_api_light):
    runner = KubernetesRunner("kubernetes-test", {"kubeconfig": str(kubeconfig_light), "namespace": NS})
    with pytest.raises(RunnerError, match="needs a network") as refused:
        runner.start(two_hosts(network_mode="none"), timeout=10)
    assert refused.value.permanent
    assert not [call for call in k8s_api_light.calls if call.verb == "create"]
