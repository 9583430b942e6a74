"""The Kubernetes API server double answers like a real API server, to two real clients: the Python
`kubernetes` client (the one the runner uses) and Debian's kubectl 1.20.

Pods run as real Docker containers where a test needs exec (`k8s_api`); the others use the double
without containers (`k8s_api_light`), whose kubelet still walks pods through their phases.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import kubernetes_validate
import pytest
import requests
from kubernetes import client, config, watch
from kubernetes.stream import stream

from tests.k8s.apiserver import ApiServerDouble
from tests.k8s.fixtures import SESSIONS_NAMESPACE, debian_kubectl

NS = SESSIONS_NAMESPACE
TINY = "labs/busybox:latest"
KEEPALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def core(kubeconfig_path: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig_path)))


@pytest.fixture
def v1(kubeconfig_light: Path) -> client.CoreV1Api:
    return core(kubeconfig_light)


def configmap(name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}, **extra},
            "data": {"spec": "{}"}}


def pod(name: str, owner: Any = None, containers: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": "lab"}}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name,
                                    "uid": owner.metadata.uid, "blockOwnerDeletion": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                     "containers": containers or [{"name": "main", "image": TINY, "command": KEEPALIVE}], **spec}}


def failure(exc: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def raw_request(server: ApiServerDouble, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, server.url + path, json=body, timeout=30,
                            headers={"Authorization": f"Bearer {server.token}"},
                            verify=str(server.tls_dir / "apiserver.crt") if server.tls_dir else True)


def wait_running(server: ApiServerDouble, name: str, timeout: float = 30) -> dict[str, Any]:
    return server.wait_for(lambda: (lambda p: p if p and p.get("status", {}).get("phase") == "Running"
                                    and all(s.get("ready") for s in p["status"].get("containerStatuses", []))
                                    else None)(server.cluster.get("pods", NS, name)), timeout, f"pod {name} ready")


# discovery and CRUD ---------------------------------------------------------------------------------
def test_discovery_answers_like_a_1_33_api_server(kubeconfig_light):
    api_client = config.new_client_from_config(config_file=str(kubeconfig_light))
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.33.")
    assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
    resources = {r.name: r for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert resources["pods"].namespaced and "watch" in resources["pods"].verbs
    assert set(resources["pods/exec"].verbs) == {"create", "get"}
    assert {"configmaps", "events", "namespaces", "secrets"} <= set(resources)


def test_created_objects_carry_uid_resource_version_and_creation_time(v1):
    created = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    assert uuid.UUID(created.metadata.uid)
    assert int(created.metadata.resource_version) > 0 and created.metadata.creation_timestamp is not None
    again = v1.read_namespaced_config_map("lab-a", NS)
    assert (again.metadata.uid, again.metadata.resource_version) == (created.metadata.uid,
                                                                     created.metadata.resource_version)
    listed = v1.list_namespaced_config_map(NS)
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    named = v1.create_namespaced_config_map(NS, {"metadata": {"generateName": "lab-"}})
    assert named.metadata.name.startswith("lab-") and len(named.metadata.name) == 9


def test_errors_are_real_status_objects(v1):
    v1.create_namespaced_config_map(NS, configmap("lab-a"))
    with pytest.raises(client.ApiException) as exists:
        v1.create_namespaced_config_map(NS, configmap("lab-a"))
    assert exists.value.status == 409
    assert failure(exists.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'configmaps "lab-a" already exists', "reason": "AlreadyExists",
        "details": {"name": "lab-a", "kind": "configmaps"}, "code": 409}
    with pytest.raises(client.ApiException) as missing:
        v1.read_namespaced_pod("nope", NS)
    assert (missing.value.status, failure(missing.value)["reason"]) == (404, "NotFound")
    assert failure(missing.value)["message"] == 'pods "nope" not found'
    with pytest.raises(client.ApiException) as no_namespace:
        v1.create_namespaced_config_map("nowhere", configmap("lab-a"))
    assert failure(no_namespace.value)["message"] == 'namespaces "nowhere" not found'


def test_a_stale_resource_version_is_a_conflict(v1):
    first = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    body = v1.read_namespaced_config_map("lab-a", NS)
    body.metadata.labels = {"claimed": "yes"}
    updated = v1.replace_namespaced_config_map("lab-a", NS, body)
    assert int(updated.metadata.resource_version) > int(first.metadata.resource_version)
    stale = configmap("lab-a", {"claimed": "twice"}, resourceVersion=first.metadata.resource_version)
    with pytest.raises(client.ApiException) as lost:
        v1.replace_namespaced_config_map("lab-a", NS, stale)
    assert lost.value.status == 409 and failure(lost.value)["reason"] == "Conflict"
    assert "the object has been modified" in failure(lost.value)["message"]
    # A patch carrying a resourceVersion is a precondition too; one without applies to the latest.
    with pytest.raises(client.ApiException) as lost_patch:
        v1.patch_namespaced_config_map("lab-a", NS, {"metadata": {"resourceVersion": first.metadata.resource_version,
                                                                  "labels": {"x": "y"}}})
    assert lost_patch.value.status == 409
    patched = v1.patch_namespaced_config_map("lab-a", NS, {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {"claimed": "yes", "x": "y"}


def test_label_and_field_selectors_filter_lists(v1):
    v1.create_namespaced_config_map(NS, configmap("lab-a", {"labs.session": "a", "labs.lab": "web"}))
    v1.create_namespaced_config_map(NS, configmap("lab-b", {"labs.session": "b", "labs.lab": "web"}))
    v1.create_namespaced_config_map(NS, configmap("other"))

    def names(**selectors: str) -> list[str]:
        return [cm.metadata.name for cm in v1.list_namespaced_config_map(NS, **selectors).items]

    assert names(label_selector="labs.lab=web") == ["lab-a", "lab-b"]
    assert names(label_selector="labs.lab=web,labs.session!=a") == ["lab-b"]
    assert names(label_selector="labs.session in (a, c)") == ["lab-a"]
    assert names(label_selector="!labs.session") == ["other"]
    assert names(label_selector="labs.session") == ["lab-a", "lab-b"]
    assert names(field_selector="metadata.name=lab-b") == ["lab-b"]
    assert names(field_selector="metadata.name!=lab-b", label_selector="labs.lab") == ["lab-a"]
    with pytest.raises(client.ApiException) as unsupported:
        v1.list_namespaced_config_map(NS, field_selector="data.spec={}")
    assert unsupported.value.status == 400
    assert failure(unsupported.value)["message"] == "field label not supported: data.spec"
    first = v1.list_namespaced_config_map(NS, limit=2)
    assert len(first.items) == 2 and first.metadata.var_continue
    rest = v1.list_namespaced_config_map(NS, limit=2, _continue=first.metadata.var_continue)
    assert [cm.metadata.name for cm in rest.items] == ["other"] and not rest.metadata.var_continue


def test_invalid_objects_are_refused_like_a_real_server(v1, k8s_api_light):
    too_long = "x" * 64
    with pytest.raises(client.ApiException) as label:
        v1.create_namespaced_config_map(NS, configmap("lab-a", {"labs.lab": too_long}))
    assert label.value.status == 422 and failure(label.value)["reason"] == "Invalid"
    assert failure(label.value)["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "metadata.labels",
        "message": f"Invalid value: '{too_long}': must be no more than 63 characters"}]
    with pytest.raises(client.ApiException) as no_image:
        v1.create_namespaced_pod(NS, pod("lab-a", containers=[{"name": "main"}]))
    assert failure(no_image.value)["details"]["causes"][0]["field"] == "spec.containers[0].image"
    with pytest.raises(client.ApiException) as bad_name:
        v1.create_namespaced_config_map(NS, configmap("Lab_A"))
    assert bad_name.value.status == 422
    # An unknown (misspelt) field: the strict decoder's 400, not a silently dropped field. (The
    # Python client refuses to send one, so this goes as plain HTTP.)
    misspelt = pod("lab-a")
    misspelt["spec"]["containers"][0]["securityContex"] = {}
    unknown = raw_request(k8s_api_light, "POST", f"/api/v1/namespaces/{NS}/pods", misspelt)
    assert unknown.status_code == 400
    assert 'unknown field "spec.containers.0.securityContex"' in unknown.json()["message"]
    assert v1.list_namespaced_pod(NS).items == []


def test_denied_verbs_answer_forbidden(v1, k8s_api_light):
    k8s_api_light.deny("create", "pods", "exceeded quota: sessions, requested: pods=1, used: pods=4, limited: pods=4")
    with pytest.raises(client.ApiException) as quota:
        v1.create_namespaced_pod(NS, pod("lab-a"))
    assert quota.value.status == 403
    assert failure(quota.value)["reason"] == "Forbidden"
    assert failure(quota.value)["message"] == ("pods is forbidden: exceeded quota: sessions, requested: pods=1, "
                                               "used: pods=4, limited: pods=4")


def test_every_stored_object_passes_the_official_strict_schema(v1, k8s_api_light):
    anchor = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    v1.create_namespaced_pod(NS, pod("lab-a", anchor))
    wait_running(k8s_api_light, "lab-a")
    stored = [obj for plural in ("pods", "configmaps", "events", "namespaces") for obj in k8s_api_light.list(plural)]
    assert {obj["kind"] for obj in stored} == {"Pod", "ConfigMap", "Event", "Namespace"}
    for obj in stored:
        kubernetes_validate.validate(obj, "1.33", strict=True)


# watches -----------------------------------------------------------------------------------------------
def test_a_watch_from_a_resource_version_sees_only_later_changes(v1):
    v1.create_namespaced_config_map(NS, configmap("before"))
    since = v1.list_namespaced_config_map(NS).metadata.resource_version
    v1.create_namespaced_config_map(NS, configmap("after", {"pick": "me"}))
    v1.patch_namespaced_config_map("after", NS, {"metadata": {"labels": {"pick": "not-me"}}})
    v1.delete_namespaced_config_map("before", NS)
    seen = [(event["type"], event["object"].metadata.name)
            for event in watch.Watch().stream(v1.list_namespaced_config_map, NS, resource_version=since,
                                              timeout_seconds=1)]
    assert seen == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]
    # With a label selector, an object that stops matching is DELETED for that watch.
    filtered = [(event["type"], event["object"].metadata.name)
                for event in watch.Watch().stream(v1.list_namespaced_config_map, NS, resource_version=since,
                                                  label_selector="pick=me", timeout_seconds=1)]
    assert filtered == [("ADDED", "after"), ("DELETED", "after")]


def test_a_watch_from_a_compacted_resource_version_is_gone(v1, k8s_api_light):
    v1.create_namespaced_config_map(NS, configmap("lab-a"))
    old = v1.list_namespaced_config_map(NS).metadata.resource_version
    v1.create_namespaced_config_map(NS, configmap("lab-b"))
    newest = k8s_api_light.compact()
    with pytest.raises(client.ApiException) as expired:
        list(watch.Watch().stream(v1.list_namespaced_config_map, NS, resource_version=old, timeout_seconds=1))
    assert expired.value.status == 410
    assert f"too old resource version: {old} ({newest})" in expired.value.reason
    # The caller relists and watches on from the list's version.
    relisted = v1.list_namespaced_config_map(NS)
    assert [cm.metadata.name for cm in relisted.items] == ["lab-a", "lab-b"]
    assert list(watch.Watch().stream(v1.list_namespaced_config_map, NS,
                                     resource_version=relisted.metadata.resource_version, timeout_seconds=1)) == []


def test_a_watch_asking_for_bookmarks_gets_them_while_nothing_changes(v1, k8s_api_light):
    k8s_api_light.bookmark_interval = 0.2
    v1.create_namespaced_config_map(NS, configmap("lab-a"))
    current = v1.list_namespaced_config_map(NS).metadata.resource_version
    events = list(watch.Watch().stream(v1.list_namespaced_config_map, NS, resource_version=current,
                                       allow_watch_bookmarks=True, timeout_seconds=1))
    assert events and {event["type"] for event in events} == {"BOOKMARK"}
    assert events[-1]["object"]["metadata"]["resourceVersion"] == current  # left raw by the client


# deletion -----------------------------------------------------------------------------------------------
def test_deleting_the_anchor_in_the_foreground_removes_its_pods_first(v1, k8s_api_light):
    anchor = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    v1.create_namespaced_pod(NS, pod("lab-a", anchor))
    wait_running(k8s_api_light, "lab-a")
    v1.delete_namespaced_config_map("lab-a", NS, propagation_policy="Foreground")
    # The anchor waits, with its foreground finalizer, while the pod it owns terminates.
    waiting = k8s_api_light.get("configmaps", NS, "lab-a")
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert waiting["metadata"]["deletionTimestamp"]
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.get("pods", NS, "lab-a") is None, 10, "the pod to go")
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.get("configmaps", NS, "lab-a") is None, 10, "the anchor")


def test_background_and_orphan_propagation(v1, k8s_api_light):
    anchor = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    v1.create_namespaced_pod(NS, pod("lab-a", anchor))
    status = v1.delete_namespaced_config_map("lab-a", NS)  # background: the anchor goes at once
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"] == {"name": "lab-a", "kind": "configmaps", "uid": anchor.metadata.uid}
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.get("pods", NS, "lab-a") is None, 10, "the pod to go")
    kept = v1.create_namespaced_config_map(NS, configmap("lab-b"))
    v1.create_namespaced_pod(NS, pod("lab-b", kept))
    v1.delete_namespaced_config_map("lab-b", NS, propagation_policy="Orphan")
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.get("configmaps", NS, "lab-b") is None, 10, "the anchor")
    time.sleep(0.3)
    assert v1.read_namespaced_pod("lab-b", NS).metadata.owner_references is None


def test_an_object_whose_owner_never_existed_is_collected(v1, k8s_api_light):
    ghost = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ghost", uid=str(uuid.uuid4())))
    v1.create_namespaced_config_map(NS, {"metadata": {"name": "orphaned", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": ghost.metadata.uid}]}})
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.get("configmaps", NS, "orphaned") is None, 10,
                           "the garbage collector")


def test_a_pod_deleted_with_a_grace_period_terminates_before_it_goes(v1, k8s_api_light):
    v1.create_namespaced_pod(NS, pod("lab-a"))
    wait_running(k8s_api_light, "lab-a")
    answer = v1.delete_namespaced_pod("lab-a", NS, grace_period_seconds=5)
    assert answer.metadata.deletion_timestamp is not None and answer.metadata.deletion_grace_period_seconds == 5
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.get("pods", NS, "lab-a") is None, 10, "the pod to go")
    with pytest.raises(client.ApiException) as gone:
        v1.delete_namespaced_pod("lab-a", NS)
    assert gone.value.status == 404


def test_deletecollection_removes_what_the_label_selects(v1, k8s_api_light):
    for name, instance in (("lab-a", "mine"), ("lab-b", "mine"), ("lab-c", "theirs")):
        v1.create_namespaced_config_map(NS, configmap(name, {"labs.managed-by": instance}))
    v1.delete_collection_namespaced_config_map(NS, label_selector="labs.managed-by=mine")
    assert [cm.metadata.name for cm in v1.list_namespaced_config_map(NS).items] == ["lab-c"]


# the kubelet ----------------------------------------------------------------------------------------------
def test_pods_go_pending_then_running_with_an_ip_and_events(v1, k8s_api_light):
    created = v1.create_namespaced_pod(NS, pod("lab-a"))
    assert created.status.phase == "Pending" and created.spec.restart_policy == "Always"
    phases = []
    stream_ = watch.Watch()
    for event in stream_.stream(v1.list_namespaced_pod, NS, field_selector="metadata.name=lab-a", timeout_seconds=10):
        status = event["object"].status
        phases.append(status.phase)
        if status.phase == "Running" and all(c.ready for c in status.container_statuses or []):
            stream_.stop()
    assert phases[0] == "Pending" and phases[-1] == "Running"
    running = v1.read_namespaced_pod("lab-a", NS)
    assert running.status.pod_ip and running.spec.node_name
    assert {c.type: c.status for c in running.status.conditions} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True", "ContainersReady": "True",
        "PodScheduled": "True"}
    events = v1.list_namespaced_event(NS, field_selector=f"involvedObject.uid={created.metadata.uid}").items
    assert [e.reason for e in events] == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]


def test_a_failing_image_pull_reports_err_image_pull_then_back_off(v1, k8s_api_light):
    k8s_api_light.fail_image("labs/does-not-exist:*")
    v1.create_namespaced_pod(NS, pod("lab-a", containers=[{"name": "main", "image": "labs/does-not-exist:1"}]))
    reasons = []
    stream_ = watch.Watch()
    for event in stream_.stream(v1.list_namespaced_pod, NS, field_selector="metadata.name=lab-a", timeout_seconds=10):
        for status in event["object"].status.container_statuses or []:
            if status.state.waiting and status.state.waiting.reason not in reasons:
                reasons.append(status.state.waiting.reason)
        if "ImagePullBackOff" in reasons:
            stream_.stop()
    assert reasons == ["ContainerCreating", "ErrImagePull", "ImagePullBackOff"]
    events = [(e.type, e.reason) for e in v1.list_namespaced_event(NS).items]
    assert ("Warning", "Failed") in events and ("Normal", "BackOff") in events


def test_unschedulable_pods_stay_pending_with_a_failed_scheduling_event(v1, k8s_api_light):
    k8s_api_light.unschedulable("lab-*")
    v1.create_namespaced_pod(NS, pod("lab-a"))
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.select("events", NS), 10, "an event")
    event = v1.list_namespaced_event(NS).items[0]
    assert (event.type, event.reason, event.source.component) == ("Warning", "FailedScheduling", "default-scheduler")
    condition = v1.read_namespaced_pod("lab-a", NS).status.conditions[0]
    assert (condition.type, condition.status, condition.reason) == ("PodScheduled", "False", "Unschedulable")


def test_device_resources_are_validated_like_extended_resources_and_scheduled_by_the_node(v1, k8s_api_light):
    kvm = "devices.kubevirt.io/kvm"

    def asking(resources: dict[str, Any], name: str = "lab-a") -> dict[str, Any]:
        return pod(name, containers=[{"name": "main", "image": TINY, "command": KEEPALIVE, "resources": resources}])

    refused = [
        ({"limits": {kvm: "1"}, "requests": {kvm: "0"}}, f"Invalid value: '0': must be equal to {kvm} limit of 1"),
        ({"limits": {kvm: "500m"}}, "Invalid value: '500m': must be an integer"),
        ({"requests": {kvm: "1"}}, "Required value: Limit must be set for non overcommitable resources"),
        ({"limits": {"kvm": "1"}}, "Invalid value: 'kvm': must be a standard resource for containers"),
    ]
    for resources, message in refused:
        with pytest.raises(client.ApiException) as invalid:
            v1.create_namespaced_pod(NS, asking(resources))
        assert invalid.value.status == 422
        assert message in [cause["message"] for cause in failure(invalid.value)["details"]["causes"]], resources
    # Valid, and the limit alone is enough: the request defaults to it. A node without the device keeps
    # the pod Pending, as the scheduler does; once the node has it (a device plugin), it runs.
    created = v1.create_namespaced_pod(NS, asking({"limits": {kvm: "1", "cpu": "100m", "memory": "32Mi"}}))
    assert created.spec.containers[0].resources.requests[kvm] == "1"
    k8s_api_light.wait_for(lambda: k8s_api_light.cluster.select("events", NS), 10, "an event")
    event = v1.list_namespaced_event(NS).items[0]
    assert (event.reason, event.message.split(". ")[0]) == ("FailedScheduling",
                                                           f"0/1 nodes are available: 1 Insufficient {kvm}")
    k8s_api_light.kubelet.extended_resources[kvm] = 110
    wait_running(k8s_api_light, "lab-a")


def test_sub_paths_must_stay_below_their_volume(v1, k8s_api_light):
    for sub, message in (("/etc", "must be a relative path"), ("a/../../b", "must not contain '..'")):
        body = pod("lab-a", containers=[{"name": "main", "image": TINY, "command": KEEPALIVE, "volumeMounts": [
            {"name": "data", "mountPath": "/data", "subPath": sub}]}], volumes=[{"name": "data", "emptyDir": {}}])
        with pytest.raises(client.ApiException) as invalid:
            v1.create_namespaced_pod(NS, body)
        assert failure(invalid.value)["details"]["causes"] == [{
            "reason": "FieldValueInvalid", "field": "spec.containers[0].volumeMounts[0].subPath",
            "message": f"Invalid value: '{sub}': {message}"}]


def pod_status_cell(server: ApiServerDouble, name: str) -> str:
    """The STATUS column kubectl prints (the server's Table)."""
    table = requests.get(f"{server.url}/api/v1/namespaces/{NS}/pods/{name}", timeout=30,
                         headers={"Authorization": f"Bearer {server.token}",
                                  "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
                         verify=str(server.tls_dir / "apiserver.crt") if server.tls_dir else True).json()
    return str(table["rows"][0]["cells"][2])


@pytest.mark.docker
def test_init_containers_run_in_order_to_completion_sharing_volumes_with_the_containers(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    volumes = [{"name": "shared", "emptyDir": {}}]
    mount = [{"name": "shared", "mountPath": "/shared"}]
    init = [{"name": "first", "image": TINY, "command": ["sh", "-c", "sleep 1; echo one > /shared/log"],
             "volumeMounts": mount},
            {"name": "second", "image": TINY, "command": ["sh", "-c", "echo two >> /shared/log; mkdir /shared/dir; "
                                                                      "echo inside > /shared/dir/file"],
             "volumeMounts": mount}]
    # subPath: one file of the volume, read-only, where the container wants it.
    main = {"name": "main", "image": TINY, "command": KEEPALIVE, "volumeMounts": [
        *mount, {"name": "shared", "mountPath": "/etc/lab-file", "subPath": "dir/file", "readOnly": True}]}
    created = v1.create_namespaced_pod(NS, pod("lab-a", containers=[main], initContainers=init, volumes=volumes))
    # While the first runs: Init:0/2, every container waiting as PodInitializing, the pod not Initialized.
    initializing = k8s_api.wait_for(lambda: (lambda p: p if p and ((p["status"].get("initContainerStatuses") or [{}])[0]
                                                                   .get("state") or {}).get("running") else None)(
        k8s_api.cluster.get("pods", NS, "lab-a")), 20, "the first init container to run")
    assert initializing["status"]["phase"] == "Pending"
    assert initializing["status"]["initContainerStatuses"][1]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert initializing["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    conditions = {c["type"]: c for c in initializing["status"]["conditions"]}
    assert (conditions["Initialized"]["status"], conditions["Initialized"]["reason"],
            conditions["Initialized"]["message"]) == ("False", "ContainersNotInitialized",
                                                      "containers with incomplete status: [first second]")
    assert pod_status_cell(k8s_api, "lab-a") == "Init:0/2"
    running = wait_running(k8s_api, "lab-a")
    inits = running["status"]["initContainerStatuses"]
    assert [(s["name"], s["state"]["terminated"]["reason"], s["state"]["terminated"]["exitCode"], s["ready"])
            for s in inits] == [("first", "Completed", 0, True), ("second", "Completed", 0, True)]
    assert {c["type"]: c["status"] for c in running["status"]["conditions"]}["Initialized"] == "True"
    assert pod_status_cell(k8s_api, "lab-a") == "Running"
    out, _, code, _ = _exec(v1, "lab-a", ["sh", "-c", "cat /shared/log /etc/lab-file; touch /etc/lab-file"])
    assert (out, code) == (b"one\ntwo\ninside\n", 1)  # in order; the subPath file is read-only
    # Each ran to completion as a container of its own, and stays for its logs until the pod goes.
    assert v1.read_namespaced_pod_log("lab-a", NS, container="first") == ""
    events = [e.message for e in v1.list_namespaced_event(
        NS, field_selector=f"involvedObject.uid={created.metadata.uid}").items if e.reason == "Started"]
    assert events == ["Started container first", "Started container second", "Started container main"]


@pytest.mark.docker
def test_a_failed_init_container_fails_a_pod_that_never_restarts_with_its_log_as_the_message(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    init = [{"name": "copy", "image": TINY, "command": ["sh", "-c", "echo 'cp: no such file: base.qcow2' >&2; exit 7"],
             "terminationMessagePolicy": "FallbackToLogsOnError"}]
    v1.create_namespaced_pod(NS, pod("lab-a", initContainers=init, restartPolicy="Never"))
    failed = k8s_api.wait_for(lambda: (lambda p: p if p and p["status"].get("phase") == "Failed" else None)(
        k8s_api.cluster.get("pods", NS, "lab-a")), 20, "the pod to fail")
    terminated = failed["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"], terminated["message"]) == (
        "Error", 7, "cp: no such file: base.qcow2\n")
    assert failed["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert pod_status_cell(k8s_api, "lab-a") == "Init:Error"
    assert k8s_api.docker_container(NS, "lab-a", "main") is None  # never created
    # restartPolicy Always would restart it: the double reports the back-off instead.
    v1.create_namespaced_pod(NS, pod("lab-b", initContainers=init))
    k8s_api.wait_for(lambda: (((k8s_api.cluster.get("pods", NS, "lab-b") or {}).get("status", {})
                               .get("initContainerStatuses") or [{}])[0].get("state") or {}).get("waiting", {})
                     .get("reason") == "CrashLoopBackOff",
                     20, "the back-off")
    assert pod_status_cell(k8s_api, "lab-b") == "Init:CrashLoopBackOff"
    assert v1.read_namespaced_pod("lab-b", NS).status.phase == "Pending"


# exec (real containers) -----------------------------------------------------------------------------------
def _exec(api: client.CoreV1Api, name: str, command: list[str], stdin: bytes | None = None, **options: Any
          ) -> tuple[bytes, bytes, int, Any]:
    ws = stream(api.connect_get_namespaced_pod_exec, name, NS, command=command, stdin=stdin is not None,
                stdout=True, stderr=True, tty=False, _preload_content=False, binary=True, **options)
    if stdin is not None:
        ws.write_stdin(stdin)
        ws.close_channel(0)
    out, err = b"", b""
    while ws.is_open():
        ws.update(timeout=1)
        out += ws.read_stdout(timeout=0) or b""
        err += ws.read_stderr(timeout=0) or b""
    out += ws.read_stdout(timeout=0) or b""
    err += ws.read_stderr(timeout=0) or b""
    return out, err, ws.returncode, ws


@pytest.mark.docker
def test_exec_over_v5_carries_stdin_stdout_stderr_and_the_exit_code(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    v1.create_namespaced_pod(NS, pod("lab-a"))
    wait_running(k8s_api, "lab-a")
    out, err, code, ws = _exec(v1, "lab-a", ["sh", "-c", "tr a-z A-Z; echo oops >&2; exit 3"], stdin=b"hello")
    assert ws.subprotocol == "v5.channel.k8s.io"
    assert (out, err, code) == (b"HELLO", b"oops\n", 3)
    assert _exec(v1, "lab-a", ["true"])[2] == 0
    # The command ran in the pod's own container.
    assert _exec(v1, "lab-a", ["hostname"])[0] == b"lab-a\n"
    # v4 has no CLOSE frame: a command that needs no input still reports its exit code.
    out, _, code, ws = _exec(v1, "lab-a", ["sh", "-c", "echo four; exit 4"],
                             _headers={"sec-websocket-protocol": "v4.channel.k8s.io"})
    assert (ws.subprotocol, out, code) == ("v4.channel.k8s.io", b"four\n", 4)


@pytest.mark.docker
def test_exec_with_a_tty_resizes_on_channel_four(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    v1.create_namespaced_pod(NS, pod("lab-a"))
    wait_running(k8s_api, "lab-a")
    ws = stream(v1.connect_get_namespaced_pod_exec, "lab-a", NS, command=["sh"], stdin=True, stdout=True,
                stderr=True, tty=True, _preload_content=False, binary=True)
    ws.write_channel(4, b'{"Width":100,"Height":30}')
    time.sleep(0.2)
    ws.write_stdin(b"stty size; exit 5\n")
    seen = b""
    deadline = time.monotonic() + 10
    while ws.is_open() and time.monotonic() < deadline:
        ws.update(timeout=1)
        seen += ws.read_stdout(timeout=0) or b""
    assert b"30 100" in seen
    assert ws.returncode == 5


@pytest.mark.docker
def test_exec_refusals_read_like_the_real_ones(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    hold = k8s_api.hold("lab-held")
    v1.create_namespaced_pod(NS, pod("lab-held"))
    with pytest.raises(client.ApiException) as pending:
        stream(v1.connect_get_namespaced_pod_exec, "lab-held", NS, command=["true"], stdout=True, stderr=True,
               stdin=False, tty=False, _preload_content=False)
    # The client reports a refused upgrade as status 0 with the handshake's answer.
    assert "Handshake status 400" in str(pending.value.reason)
    hold()
    two = [{"name": "main", "image": TINY, "command": KEEPALIVE}, {"name": "agent", "image": TINY,
                                                                    "command": KEEPALIVE}]
    v1.create_namespaced_pod(NS, pod("lab-two", containers=two))
    wait_running(k8s_api, "lab-two")
    with pytest.raises(client.ApiException) as ambiguous:
        stream(v1.connect_get_namespaced_pod_exec, "lab-two", NS, command=["true"], stdout=True, stderr=True,
               stdin=False, tty=False, _preload_content=False)
    assert "Handshake status 400" in str(ambiguous.value.reason)
    assert _exec(v1, "lab-two", ["hostname"], container="agent")[:3] == (b"lab-two\n", b"", 0)


@pytest.mark.docker
def test_pod_security_settings_reach_the_containers(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    engine = docker.from_env()
    main = {"name": "main", "image": TINY, "command": KEEPALIVE,
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "runAsUser": 1000, "runAsGroup": 1000},
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}
    v1.create_namespaced_pod(NS, pod("lab-a", containers=[main], volumes=[{"name": "workspace", "emptyDir": {}}]))
    wait_running(k8s_api, "lab-a")
    host = engine.api.inspect_container(k8s_api.docker_container(NS, "lab-a", "main"))["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
    assert (host["Memory"], host["NanoCpus"]) == (64 * 1024 * 1024, 500_000_000)
    out, _, code, _ = _exec(v1, "lab-a", ["sh", "-c", "id -u; touch /workspace/f && echo writable"])
    assert (out, code) == (b"1000\nwritable\n", 0)
    # runAsNonRoot with an image that runs as root: the kubelet refuses to create the container.
    root = {"name": "main", "image": TINY, "command": KEEPALIVE, "securityContext": {"runAsNonRoot": True}}
    v1.create_namespaced_pod(NS, pod("lab-root", containers=[root]))
    waiting = k8s_api.wait_for(lambda: next(
        ((s["state"].get("waiting") or {}).get("reason") == "CreateContainerConfigError" and s for s in
         (k8s_api.cluster.get("pods", NS, "lab-root") or {}).get("status", {}).get("containerStatuses", [])), None),
        20, "the config error")
    assert waiting["state"]["waiting"]["message"] == "container has runAsNonRoot and image will run as root"


@pytest.mark.docker
def test_a_deleted_pod_takes_its_containers_with_it(k8s_api, kubeconfig):
    v1 = core(kubeconfig)
    engine = docker.from_env()
    anchor = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    created = v1.create_namespaced_pod(NS, pod("lab-a", anchor, volumes=[{"name": "workspace", "emptyDir": {}}]))
    wait_running(k8s_api, "lab-a")
    label = f"labs.k8s-double.pod-uid={created.metadata.uid}"
    assert len(engine.containers.list(filters={"label": label})) == 2  # the sandbox and main
    v1.delete_namespaced_config_map("lab-a", NS, propagation_policy="Foreground")
    k8s_api.wait_for(lambda: k8s_api.cluster.get("configmaps", NS, "lab-a") is None, 20, "the cascade")
    assert engine.containers.list(all=True, filters={"label": label}) == []
    assert engine.volumes.list(filters={"label": label}) == []


# NetworkPolicies (networking.k8s.io/v1): stored and validated, not enforced ------------------------------
def network_policy(name: str, owner: Any = None, **spec: Any) -> dict[str, Any]:
    peers = {"matchLabels": {"labs.session": "a"}}
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name,
                                    "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": peers, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"podSelector": peers}]}], "egress": [{"to": [{"podSelector": peers}]}],
                     **spec}}


def test_network_policies_are_served_under_their_group_validated_and_collected_with_their_owner(
        v1, kubeconfig_light, k8s_api_light):
    api_client = config.new_client_from_config(config_file=str(kubeconfig_light))
    groups = {g.name: g for g in client.ApisApi(api_client).get_api_versions().groups}
    assert groups["networking.k8s.io"].preferred_version.group_version == "networking.k8s.io/v1"
    networking = client.NetworkingV1Api(api_client)
    resources = {r.name: r for r in networking.get_api_resources().resources}
    assert resources["networkpolicies"].namespaced and "create" in resources["networkpolicies"].verbs
    anchor = v1.create_namespaced_config_map(NS, configmap("lab-a"))
    created = networking.create_namespaced_network_policy(NS, network_policy("lab-a", anchor))
    assert created.api_version == "networking.k8s.io/v1" and uuid.UUID(created.metadata.uid)
    assert networking.read_namespaced_network_policy("lab-a", NS).metadata.uid == created.metadata.uid
    assert [p.metadata.name for p in networking.list_namespaced_network_policy(NS).items] == ["lab-a"]
    # In RBAC terms, with their group: what a Role must grant.
    assert ("networking.k8s.io", "networkpolicies", "create") in {
        (c.group, c.resource, c.verb) for c in k8s_api_light.calls}
    # Not the core group's path, and not another group's.
    assert raw_request(k8s_api_light, "GET", f"/api/v1/namespaces/{NS}/networkpolicies").status_code == 404
    assert raw_request(k8s_api_light, "GET", f"/apis/apps/v1/namespaces/{NS}/networkpolicies").status_code == 404
    # What the real server refuses: a peer with an ipBlock and a selector, an except outside its cidr,
    # a bad operator; and (strict decoding) an unknown field.
    for bad, field in (
            ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
             "spec.ingress[0].from[0]"),
            ({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]},
             "spec.egress[0].to[0].ipBlock.except[0]"),
            ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}},
             "spec.podSelector.matchExpressions[0].operator")):
        with pytest.raises(client.ApiException) as refused:
            networking.create_namespaced_network_policy(NS, network_policy("lab-b", **bad))
        assert refused.value.status == 422 and failure(refused.value)["details"]["causes"][0]["field"] == field
    misspelt = network_policy("lab-b")
    misspelt["spec"]["ingres"] = []
    unknown = raw_request(k8s_api_light, "POST", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies",
                          misspelt)
    assert unknown.status_code == 400 and 'unknown field "spec.ingres"' in unknown.json()["message"]
    # The anchor's foreground deletion takes its policy along.
    v1.delete_namespaced_config_map("lab-a", NS, propagation_policy="Foreground")
    k8s_api_light.wait_for(lambda: not k8s_api_light.cluster.select("networkpolicies", NS), 10, "the policy to go")


def test_debian_kubectl_discovers_and_lists_network_policies(kubeconfig_light, k8s_api_light):
    kubectl = debian_kubectl()
    k8s_api_light.create("networkpolicies", NS, network_policy("lab-a"))
    done = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig_light), "get", "networkpolicies", "-o", "name"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "networkpolicy.networking.k8s.io/lab-a\n"), done.stderr
    done = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig_light), "api-resources", "--api-group",
                           "networking.k8s.io", "-o", "name"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "networkpolicies.networking.k8s.io\n"), done.stderr


# kubectl -------------------------------------------------------------------------------------------------
def test_debian_kubectl_gets_creates_and_deletes_against_the_double(kubeconfig_light, k8s_api_light, tmp_path):
    kubectl = debian_kubectl()

    def run(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig_light), *args], input=stdin, text=True,
                              capture_output=True, timeout=60)
        assert (done.returncode == 0) == ok, (args, done.stdout, done.stderr)
        return done

    assert json.loads(run("version", "-o", "json").stdout)["serverVersion"]["gitVersion"].startswith("v1.33.")
    manifest = json.dumps(configmap("lab-a", {"labs.session": "a"}))
    # kubectl 1.20 validates client-side against /openapi/v2 (protobuf), which the double does not
    # serve; the double validates every object server-side against the strict schema instead.
    assert run("create", "--validate=false", "-f", "-", stdin=manifest).stdout == "configmap/lab-a created\n"
    assert "already exists" in run("create", "--validate=false", "-f", "-", stdin=manifest, ok=False).stderr
    run("create", "--validate=false", "-f", "-", stdin=json.dumps(pod("lab-a")))
    wait_running(k8s_api_light, "lab-a")
    assert run("get", "configmaps", "-l", "labs.session=a", "-o", "name").stdout == "configmap/lab-a\n"
    got = json.loads(run("get", "configmap", "lab-a", "-o", "json").stdout)
    assert got["metadata"]["uid"] == k8s_api_light.get("configmaps", NS, "lab-a")["metadata"]["uid"]
    table = run("get", "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:3] == ["lab-a", "1/1", "Running"]
    assert "unknown field" in run("create", "--validate=false", "-f", "-", ok=False,
                                  stdin=json.dumps(configmap("lab-b", bogus="1"))).stderr
    assert run("delete", "pod", "lab-a").stdout == 'pod "lab-a" deleted\n'
    assert run("delete", "configmap", "lab-a").stdout == 'configmap "lab-a" deleted\n'
    assert 'configmaps "lab-a" not found' in run("get", "configmap", "lab-a", ok=False).stderr
    assert k8s_api_light.list("pods", NS) == []
