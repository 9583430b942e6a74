"""The Kubernetes runner's Docker-in-Docker sessions, persistent homes, placed lab files and stats,
against the Kubernetes API server double (tests/k8s/), whose kubelet runs every pod as real Docker
containers (privileged where the pod says so, claims as Docker named volumes)."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import docker
import pytest

from runners.base import PlacedFile, PollStatus, RunnerError, SessionSpec
from runners.kubernetes import ENGINE_HOST, KubernetesRunner, object_name
from runners.tests.test_kubernetes_runner import spec_of
from tests.k8s.fixtures import SESSIONS_NAMESPACE as NS
from tests.k8s.kubelet import claim_volume
from tests.k8s.objects import RESOURCES

TINY = "labs/busybox:latest"
DIND_IMAGE = "labs/dind:bookworm"
PRIVILEGED_NS = "labs-privileged"


@pytest.fixture
def make_runner(kubeconfig):
    instance = f"labstest{uuid.uuid4().hex[:6]}"

    def make(**options: Any) -> KubernetesRunner:
        return KubernetesRunner("kubernetes-test", {"kubeconfig": str(kubeconfig), "namespace": NS,
                                                    "instance": instance, "agent_image": TINY, "api_timeout": 20,
                                                    **options})
    return make


@pytest.fixture
def sessions():
    """Starts sessions and stops whatever is left of them at the end."""
    started: list[tuple[KubernetesRunner, dict[str, Any]]] = []

    def start(runner: KubernetesRunner, spec: SessionSpec, timeout: float = 60, **kwargs: Any) -> Any:
        result = runner.start(spec, timeout=timeout, **kwargs)
        started.append((runner, result.state))
        return result

    yield start
    for runner, state in started:
        runner.stop(state, timeout=1)


def label_namespace(server: Any, name: str, level: str) -> None:
    """Create the namespace if needed and set its Pod Security enforce level, as the chart does."""
    def change() -> None:
        server.cluster.ensure_namespace(name)
        namespace = copy.deepcopy(server.cluster.get("namespaces", "", name))
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = level
        server.cluster.replace(RESOURCES["namespaces"], "", name, namespace)
    server.run(change)


# placed lab files -------------------------------------------------------------------------------------------
@pytest.mark.docker
def test_placed_files_land_owned_by_root_with_their_modes_and_replace_what_was_there(make_runner, sessions):
    runner = make_runner()
    state = sessions(runner, spec_of()).state
    runner.exec(state, ["sh", "-c", "mkdir -p /opt/lab && echo old > /opt/lab/notes.txt && chown 1000:1000 "
                                    "/opt/lab/notes.txt"])
    runner.place_files(state, [PlacedFile("/etc/labs/secret.txt", b"s3cret\n", 0o600),
                               PlacedFile("/opt/lab/tools/run.sh", b"#!/bin/sh\necho ran\n", 0o4755),
                               PlacedFile("/opt/lab/notes.txt", b"new\n")])
    listing = runner.exec(state, ["stat", "-c", "%n %u %g %a %s", "/etc/labs/secret.txt", "/opt/lab/tools/run.sh",
                                  "/opt/lab/notes.txt"]).stdout.decode().splitlines()
    assert listing == ["/etc/labs/secret.txt 0 0 600 7", "/opt/lab/tools/run.sh 0 0 4755 19",
                       "/opt/lab/notes.txt 0 0 644 4"]
    assert runner.exec(state, ["/opt/lab/tools/run.sh"]).stdout == b"ran\n"
    assert runner.exec(state, ["cat", "/etc/labs/secret.txt"]).stdout == b"s3cret\n"
    for bad in ("relative/path", "/", "/etc/../"):
        with pytest.raises(RunnerError) as refused:
            runner.place_files(state, [PlacedFile(bad, b"x")])
        assert refused.value.permanent
    with pytest.raises(RunnerError, match="no host named"):
        runner.place_files(state, [PlacedFile("/etc/x", b"x")], host="web")


# stats ----------------------------------------------------------------------------------------------------
@pytest.mark.docker
def test_stats_tell_a_busy_loop_from_an_idle_session(make_runner, sessions):
    runner = make_runner()
    state = sessions(runner, spec_of(cpu=0.5, memory_mb=64)).state
    idle = runner.stats(state)
    assert idle.cpu_percent < 10, idle
    assert 0 < idle.memory_bytes < 64 * 1024 * 1024
    assert idle.memory_limit_bytes == 64 * 1024 * 1024
    assert idle.pids >= 1
    runner.exec(state, ["sh", "-c", "sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"])
    time.sleep(0.5)
    busy = runner.stats(state)
    # The pod's limit is half a core: the loop takes (nearly) all of it.
    assert 30 < busy.cpu_percent < 65, busy
    assert busy.pids > idle.pids


# persistent homes -----------------------------------------------------------------------------------------
@pytest.mark.docker
def test_a_users_home_outlives_the_session_and_comes_back_in_the_next(make_runner, sessions, k8s_api):
    runner = make_runner(home_storage_class="standard", home_size="2Gi")
    first = sessions(runner, spec_of(user_id=7))
    runner.write_file(first.state, "notes/todo.txt", b"finish lab 3\n")
    claim_name = runner.home_claim_name(7)
    assert first.state["home"] == claim_name
    pod = k8s_api.get("pods", NS, first.state["pod"])
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name}} in pod["spec"]["volumes"]
    claim = k8s_api.get("persistentvolumeclaims", NS, claim_name)
    assert claim["status"]["phase"] == "Bound" and claim["status"]["capacity"] == {"storage": "2Gi"}
    assert claim["spec"]["storageClassName"] == "standard" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "ownerReferences" not in claim["metadata"]  # no session's anchor takes it along
    assert claim["metadata"]["labels"]["labs.role"] == "home" and claim["metadata"]["labels"]["labs.user"] == "7"
    assert claim["metadata"]["labels"]["labs.managed-by"] == runner.instance
    runner.stop(first.state, timeout=1)
    assert runner.poll(first.state) is PollStatus.MISSING
    assert k8s_api.get("persistentvolumeclaims", NS, claim_name)["metadata"]["uid"] == claim["metadata"]["uid"]

    second = sessions(runner, spec_of(user_id=7))
    assert second.state["pod"] != first.state["pod"]
    assert runner.read_file(second.state, "notes/todo.txt") == b"finish lab 3\n"
    other = sessions(runner, spec_of(user_id=8))
    assert runner.list_files(other.state) == []
    # Staff's "stop all" ends sessions, not homes.
    runner.remove_all_managed()
    k8s_api.wait_for(lambda: not k8s_api.cluster.select("pods", NS), 30, "every session to go")
    assert {c["metadata"]["name"] for c in k8s_api.list("persistentvolumeclaims", NS)} == {
        claim_name, runner.home_claim_name(8)}


@pytest.mark.docker
def test_starter_files_fill_a_home_but_never_replace_the_learners_work(make_runner, sessions, tmp_path):
    starter = tmp_path / "starter"
    (starter / "src").mkdir(parents=True)
    (starter / "src" / "main.py").write_bytes(b"print('todo')\n")
    (starter / "README").write_bytes(b"read me\n")
    runner = make_runner(home_storage_class="standard")
    first = sessions(runner, spec_of(user_id=11, starter_dir=str(starter)))
    assert runner.read_file(first.state, "src/main.py") == b"print('todo')\n"
    runner.write_file(first.state, "src/main.py", b"print('done')\n")
    runner.exec(first.state, ["rm", "/workspace/README"])
    runner.stop(first.state, timeout=1)
    second = sessions(runner, spec_of(user_id=11, starter_dir=str(starter)))
    assert runner.read_file(second.state, "src/main.py") == b"print('done')\n"
    assert runner.read_file(second.state, "README") == b"read me\n"  # what was missing comes back
    runner.remove_home(11)


@pytest.mark.docker
def test_removing_a_home_waits_for_its_session_then_takes_the_volume(make_runner, sessions, k8s_api):
    runner = make_runner(home_storage_class="standard")
    result = sessions(runner, spec_of(user_id=9))
    runner.write_file(result.state, "keep.txt", b"x")
    claim = k8s_api.get("persistentvolumeclaims", NS, runner.home_claim_name(9))
    volume = claim_volume(claim["metadata"]["uid"])
    engine = docker.from_env()
    assert engine.volumes.get(volume).attrs["Labels"]["labs.k8s-double.claim-uid"] == claim["metadata"]["uid"]
    assert runner.remove_home(9) is True
    # In use: the claim's protection keeps it (and the session's files) until the session ends.
    time.sleep(0.5)
    kept = k8s_api.get("persistentvolumeclaims", NS, runner.home_claim_name(9))
    assert kept["metadata"]["deletionTimestamp"] and kept["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert runner.read_file(result.state, "keep.txt") == b"x"
    runner.stop(result.state, timeout=1)
    k8s_api.wait_for(lambda: k8s_api.cluster.get("persistentvolumeclaims", NS, runner.home_claim_name(9)) is None,
                     20, "the claim to go")
    deadline = time.monotonic() + 20
    while volume in {v.name for v in engine.volumes.list()}:
        assert time.monotonic() < deadline, "the claim's volume is still there"
        time.sleep(0.2)
    assert runner.remove_home(9) is False
    # The next session starts with an empty home.
    again = sessions(runner, spec_of(user_id=9))
    assert runner.list_files(again.state) == []
    # What the chart's Role must grant on claims (besides pods, configmaps and events).
    assert {c.verb for c in k8s_api.calls if c.resource == "persistentvolumeclaims"} <= {"create", "get", "delete"}


@pytest.mark.docker
def test_a_home_in_an_unknown_storage_class_keeps_the_pod_pending_and_says_why(make_runner, k8s_api):
    runner = make_runner(home_storage_class="fast-ssd")
    steps: list[str] = []
    spec = spec_of()
    with pytest.raises(RunnerError) as failure:
        runner.start(spec, progress=steps.append, timeout=3)
    assert not failure.value.permanent and "not ready after 3 s" in str(failure.value)
    assert any("unbound immediate PersistentVolumeClaims" in step for step in steps), steps
    claim = k8s_api.get("persistentvolumeclaims", NS, runner.home_claim_name(7))
    assert claim["status"]["phase"] == "Pending"
    reasons = {(e["reason"], e["message"]) for e in k8s_api.list("events", NS)
               if e["involvedObject"]["uid"] == claim["metadata"]["uid"]}
    assert ("ProvisioningFailed", 'storageclass.storage.k8s.io "fast-ssd" not found') in reasons
    # The failed start removed the session, not the home.
    k8s_api.wait_for(lambda: k8s_api.cluster.get("pods", NS, object_name(spec.session_id)) is None, 20,
                     "the pod to go")
    runner.remove_home(7)


@pytest.mark.docker
def test_a_pod_naming_a_missing_claim_stays_pending_like_on_a_real_scheduler(k8s_api):
    pod = k8s_api.create("pods", NS, {"metadata": {"name": "needs-claim"}, "spec": {
        "containers": [{"name": "main", "image": TINY, "command": ["sleep", "60"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "nowhere"}}]}})

    def said_why() -> bool:
        return any(e["reason"] == "FailedScheduling" and 'persistentvolumeclaim "nowhere" not found' in e["message"]
                   for e in k8s_api.cluster.select("events", NS)
                   if e["involvedObject"]["uid"] == pod["metadata"]["uid"])
    k8s_api.wait_for(said_why, 10, "FailedScheduling")
    current = k8s_api.get("pods", NS, "needs-claim")
    assert current["status"]["phase"] == "Pending" and "nodeName" not in current["spec"]
    # Once the claim exists (and is bound), the scheduler places the pod and it runs with the volume.
    k8s_api.create("persistentvolumeclaims", NS, {"metadata": {"name": "nowhere"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    k8s_api.wait_for(lambda: k8s_api.cluster.get("pods", NS, "needs-claim")["status"].get("phase") == "Running",
                     20, "the pod to run")


# Docker-in-Docker -------------------------------------------------------------------------------------------
@pytest.mark.docker
def test_a_dind_lab_without_the_dind_option_is_refused_before_any_object(make_runner, k8s_api,
                                                                          settings):
    settings.LAB_ALLOW_UNSAFE_DIND = False
    before = len(k8s_api.calls)
    for options, words in (({}, "`dind` option"), ({"dind": {"image": DIND_IMAGE}}, "`dind` option"),
                           ({"dind": {"namespace": PRIVILEGED_NS, "mode": "privileged"}}, "LAB_ALLOW_UNSAFE_DIND"),
                           ({"dind": {"namespace": PRIVILEGED_NS, "mode": "root"}}, "runtime_class_name"),
                           ({"dind": {"namespace": PRIVILEGED_NS, "mode": "sideways"}}, "unknown dind mode")):
        with pytest.raises(RunnerError) as failure:
            make_runner(**options).start(spec_of(docker_access=True), timeout=30)
        assert failure.value.permanent and words in str(failure.value)
    assert not [c for c in k8s_api.calls[before:] if c.verb == "create"]
    assert not k8s_api.list("pods", NS) and not k8s_api.list("configmaps", NS)


def test_under_a_runtime_class_the_engine_is_not_privileged_and_main_never_is():
    runner = KubernetesRunner("kubernetes-test", {"agent_image": TINY, "dind": {"runtime_class_name": "sysbox-runc",
                                                                                "mode": "root"}})
    anchor = {"metadata": {"name": "lab-x", "uid": "u-1"}}
    pod = runner.pod_manifest(spec_of(docker_access=True), anchor)
    assert pod["spec"]["runtimeClassName"] == "sysbox-runc"
    main, engine, agent = pod["spec"]["containers"]
    assert (main["name"], engine["name"], agent["name"]) == ("main", "docker", "agent")
    assert engine["securityContext"] == {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False}
    assert engine["image"] == DIND_IMAGE
    assert not [v for v in pod["spec"]["volumes"] if "hostPath" in v]
    assert {"name": "DOCKER_HOST", "value": ENGINE_HOST} in main["env"]
    ordinary = runner.pod_manifest(spec_of(), anchor)
    assert "runtimeClassName" not in ordinary["spec"] and len(ordinary["spec"]["containers"]) == 2
    for container in [main, agent, *ordinary["spec"]["containers"]]:
        assert not container["securityContext"].get("privileged")
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.docker
def test_pod_security_of_a_baseline_namespace_refuses_the_engine(make_runner, k8s_api, settings):
    settings.LAB_ALLOW_UNSAFE_DIND = True
    label_namespace(k8s_api, NS, "baseline")
    # A misconfiguration: DinD sessions sent to the sessions namespace, whose Pod Security is baseline.
    privileged = make_runner(dind={"namespace": NS, "mode": "privileged"})
    spec = spec_of(docker_access=True, image=DIND_IMAGE)
    with pytest.raises(RunnerError) as failure:
        privileged.start(spec, timeout=30)
    assert failure.value.permanent
    assert 'violates PodSecurity "baseline:latest": privileged (container "docker" must not set ' \
           "securityContext.privileged=true)" in str(failure.value)
    rootless = make_runner(dind={"namespace": NS})
    with pytest.raises(RunnerError) as failure:
        rootless.start(spec, timeout=30)
    assert failure.value.permanent
    for problem in ('hostPath volumes ("dev-net-tun")', 'procMount (container "docker" must not set '
                    'securityContext.procMount to "Unmasked")', 'seccompProfile (pod or container "docker" must '
                    'not set securityContext.seccompProfile.type to "Unconfined")'):
        assert problem in str(failure.value)
    k8s_api.wait_for(lambda: k8s_api.cluster.get("configmaps", NS, object_name(spec.session_id)) is None, 10,
                     "the anchor to go")


def test_a_privileged_dind_session_lives_in_the_privileged_namespace(k8s_api_light, kubeconfig_light,
                                                                     settings):
    settings.LAB_ALLOW_UNSAFE_DIND = True
    # The double without containers: this machine's Docker engine cannot run privileged containers
    # ("unable to apply caps: operation not permitted"), so this mode's inner `docker run` is not
    # exercised here (the rootless mode's is, below).
    label_namespace(k8s_api_light, NS, "baseline")
    label_namespace(k8s_api_light, PRIVILEGED_NS, "privileged")
    runner = KubernetesRunner("kubernetes-test", {"kubeconfig": str(kubeconfig_light), "namespace": NS,
                                                  "instance": "dindtest", "api_timeout": 20,
                                                  "dind": {"namespace": PRIVILEGED_NS, "mode": "privileged"}})
    spec = spec_of(docker_access=True, image=DIND_IMAGE, memory_mb=768)
    result = runner.start(spec, timeout=30)
    assert result.state["namespace"] == PRIVILEGED_NS and result.state["docker_access"] is True
    name = object_name(spec.session_id)
    assert k8s_api_light.get("pods", NS, name) is None
    pod = k8s_api_light.get("pods", PRIVILEGED_NS, name)
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    engine, main = containers["docker"], containers["main"]
    assert engine["securityContext"] == {"runAsUser": 0, "runAsNonRoot": False, "privileged": True}
    assert engine["image"] == DIND_IMAGE and engine["startupProbe"]["exec"]["command"] == ["test", "-e",
                                                                                           "/run/dind-ready"]
    assert {"name": "DOCKERD_ARGS", "value": f"--host {ENGINE_HOST}"} in engine["env"]
    assert engine["resources"]["limits"] == {"cpu": "500m", "memory": "768Mi"}
    assert not main["securityContext"].get("privileged") and main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "DOCKER_HOST", "value": ENGINE_HOST} in main["env"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["docker-socket"]["emptyDir"]["medium"] == "Memory"
    mounts = {(m["name"], m["mountPath"]) for m in engine["volumeMounts"]}
    assert {("docker-socket", "/run/labs-docker"), ("docker-data", "/var/lib/docker"),
            ("workspace", "/workspace")} <= mounts
    assert ("docker-socket", "/run/labs-docker") in {(m["name"], m["mountPath"]) for m in main["volumeMounts"]}
    assert runner.poll(result.state) is PollStatus.RUNNING
    managed = runner.list_managed()
    assert [(env.session_id, env.detail["namespace"]) for env in managed] == [(spec.session_id, PRIVILEGED_NS)]
    ordinary = runner.start(spec_of(), timeout=30)
    assert ordinary.state["namespace"] == NS
    runner.remove_managed(next(env for env in runner.list_managed() if env.session_id == spec.session_id))
    assert k8s_api_light.get("pods", PRIVILEGED_NS, name) is None
    before = len(k8s_api_light.calls)
    runner.remove_all_managed()  # both namespaces
    assert {(c.verb, c.resource, c.namespace) for c in k8s_api_light.calls[before:]} == {
        ("deletecollection", "configmaps", NS), ("deletecollection", "pods", NS),
        ("deletecollection", "configmaps", PRIVILEGED_NS), ("deletecollection", "pods", PRIVILEGED_NS)}
    runner.stop(result.state, timeout=1)
    assert runner.poll(result.state) is PollStatus.MISSING


@pytest.mark.docker
def test_a_rootless_dind_session_runs_containers_with_its_own_engine(make_runner, sessions, k8s_api):
    label_namespace(k8s_api, NS, "baseline")
    label_namespace(k8s_api, PRIVILEGED_NS, "privileged")
    runner = make_runner(dind={"namespace": PRIVILEGED_NS})
    spec = spec_of(docker_access=True, image=DIND_IMAGE, cpu=1.0, memory_mb=768, disk_mb=2048)
    result = sessions(runner, spec, timeout=150)
    assert result.state["namespace"] == PRIVILEGED_NS
    pod = k8s_api.get("pods", PRIVILEGED_NS, object_name(spec.session_id))
    engine = next(c for c in pod["spec"]["containers"] if c["name"] == "docker")
    assert engine["securityContext"]["runAsUser"] == 1000 and not engine["securityContext"].get("privileged")
    assert engine["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SETUID", "SETGID"]}
    # The engine runs as the learner's uid on the node: no process of the pod is root there but main's.
    container = docker.from_env().containers.get(k8s_api.docker_container(PRIVILEGED_NS, pod["metadata"]["name"],
                                                                          "docker"))
    assert container.attrs["HostConfig"]["Privileged"] is False and container.attrs["Config"]["User"] == "1000:1000"
    # The learner's docker CLI reaches the engine over the shared socket; the image comes in through
    # `docker load` (an inner engine has no registry access here).
    tarball = b"".join(docker.from_env().images.get(TINY).save(named=True))
    loaded = runner.exec(result.state, ["docker", "load"], stdin=tarball, timeout=120)
    assert loaded.ok, loaded
    ran = runner.exec(result.state, ["docker", "run", "--rm", TINY, "echo", "hi"], timeout=120)
    assert (ran.exit_code, ran.stdout, ran.timed_out) == (0, b"hi\n", False), ran
    # The engine sees the workspace at the same path: bind mounts of it work.
    runner.write_file(result.state, "from-main.txt", b"shared\n")
    mounted = runner.exec(result.state, ["docker", "run", "--rm", "-v", "/workspace:/w", TINY, "cat",
                                         "/w/from-main.txt"], timeout=60)
    assert mounted.stdout == b"shared\n", mounted
    runner.stop(result.state, timeout=2)
    assert runner.poll(result.state) is PollStatus.MISSING
