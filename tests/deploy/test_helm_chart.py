"""The Helm chart in deploy/helm/browser-labs, checked offline: helm lint --strict and rendering
through helm-python-sdk (Helm itself, embedded), every rendered document against the strict
Kubernetes 1.33 schemas (kubernetes-validate), the values schema, and what the Role, the
NetworkPolicies and the pods' security settings really allow.

No cluster is involved: admission, RBAC and NetworkPolicy enforcement are a real cluster's (the
chart's `helm test` checks the last). Both tools are in requirements-dev.txt; without them these
tests fail, they never skip.
"""

from __future__ import annotations

import ipaddress
import json
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.chart import CHART, NAMESPACE, RELEASE, REQUIRED, SESSIONS, merged, render, tool
from tests.settings_env import settings_values

KUBERNETES_VERSION = "1.33"
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "existing-secret": {"database": {"url": ""}, "redis": {"url": ""}, "secret": {"existingSecret": "labs-env"}},
    "namespace-creation-off": {"sessions": {"createNamespace": False}},
    "ingress-off": {"ingress": {"enabled": False}},
    # VM labs on the Kubernetes runner, their images from a claim the chart makes in the sessions namespace.
    "vms-from-a-claim": {
        "kubernetesRunner": {"vms": {"diskSource": "claim", "image": "registry.example.org/labs/qemu:bookworm",
                                     "kvmResource": "devices.kubevirt.io/kvm", "kvmGroup": 36}},
        "persistence": {"vmImages": {"sessionsClaim": {"create": True, "volumeName": "labs-vm-images-sessions"}}},
    },
    "everything-else": {
        "kubernetesRunner": {"enabled": True, "options": {"instance": "prod"}},
        "rbac": {"portForward": True, "metrics": True},
        "staticRoot": "",  # static files collected per pod by an init container
        "previewHost": "",
        "ingress": {"tls": {"enabled": False}, "nginx": {"enabled": False}, "className": ""},
        "persistence": {"data": {"existingClaim": "labs-data"}, "vmImages": {"enabled": False}},
        "housekeeping": {"reapSessions": {"mode": "cron"}, "gcSnapshots": {"mode": "loop"}},
        "networkPolicy": {"extraDenyCIDRs": ["203.0.113.10/32", "2001:db8::/32"]},
        "migrate": {"enabled": False},
        "tests": {"enabled": False},
        "env": {"LAB_START_TIMEOUT_SECONDS": "180"},
        "runners": {"docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {"base_url": "tcp://dockerd:2376"}}},
        "defaultRunner": "docker",
    },
}
POD_KINDS = {"Deployment", "Job", "CronJob", "Pod"}
SPEC_ROLE = {
    ("", "pods"): {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
    ("", "pods/exec"): {"get", "create"},
    ("", "pods/log"): {"get"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete", "deletecollection"},
    ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete", "deletecollection"},
    ("", "events"): {"get", "list", "watch"},
    # Labs with several hosts: the runner's per-session NetworkPolicy (rbac.sessionNetworkPolicies).
    ("networking.k8s.io", "networkpolicies"): {"get", "create"},
}
NETWORK_MODES = ("none", "isolated", "bridge", "unrestricted")


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    return tool("helm_python")


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    return tool("kubernetes_validate")


def only(documents: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    if document["kind"] == "Pod":
        return document["spec"]
    if document["kind"] == "CronJob":
        return document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return document["spec"]["template"]["spec"]


def pod_labels(document: dict[str, Any]) -> dict[str, str]:
    if document["kind"] == "CronJob":
        return document["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return document["spec"]["template"]["metadata"]["labels"]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector applied to a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
    return True


def session_pod(mode: str) -> dict[str, str]:
    """The labels the Kubernetes runner gives a session pod (kubernetes.md spec)."""
    return {
        "labs.session": "42",
        "labs.network-mode": mode,
        "labs.lab": "intro-to-linux",
        "labs.user": "7",
        "labs.managed-by": "labs",
        "app.kubernetes.io/managed-by": "browser-labs",
    }


def policies_selecting(documents: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"].removeprefix(f"{RELEASE}-browser-labs-"): d
        for d in documents
        if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == SESSIONS
        and selects(d["spec"]["podSelector"], labels)
    }


def egress_admits_address(policies: dict[str, dict[str, Any]], address: str) -> bool:
    """Whether any egress rule of these policies lets traffic out to `address` (on any port)."""
    ip = ipaddress.ip_address(address)
    for policy in policies.values():
        for rule in policy["spec"].get("egress") or []:
            for peer in rule.get("to") or []:
                block = peer.get("ipBlock")
                if not block:
                    continue
                cidr = ipaddress.ip_network(block["cidr"])
                if ip.version != cidr.version or ip not in cidr:
                    continue
                if not any(ip in ipaddress.ip_network(e) for e in block.get("except") or []):
                    return True
    return False


def ingress_admits_pod(policies: dict[str, dict[str, Any]], namespace_labels: dict[str, str],
                       labels: dict[str, str]) -> bool:
    for policy in policies.values():
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                if "ipBlock" in peer:
                    return True  # an address range would admit session pods in some CNIs
                if selects(peer.get("namespaceSelector", {}), namespace_labels) and selects(
                        peer.get("podSelector", {}), labels):
                    return True
    return False


# Lint and schema validation.

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict_passes(helm, variant):
    report = helm.lint(CHART, merged(REQUIRED, VARIANTS[variant]), strict=True, namespace=NAMESPACE,
                       kube_version=f"v{KUBERNETES_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_helm_lint_strict_passes_on_the_charts_own_values(helm):
    report = helm.lint(CHART, None, strict=True, namespace=NAMESPACE)
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"], report


def test_the_chart_says_which_urls_it_needs_before_rendering_anything(helm):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError, match=r"database\.url is required"):
        chart.render({}, name=RELEASE, namespace=NAMESPACE)
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError, match=r"redis\.url is required"):
        chart.render({"database": REQUIRED["database"]}, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(("misspelled", "key"), [
    ({"ingres": {"enabled": False}}, "ingres"),
    ({"web": {"replicaz": 3}}, "replicaz"),
    ({"networkPolicy": {"extraDenyCidrs": ["10.0.0.0/8"]}}, "extraDenyCidrs"),
    ({"sessions": {"resourceQuota": {"enable": False}}}, "enable"),
])
def test_values_schema_rejects_a_misspelled_key(helm, misspelled, key):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(REQUIRED)  # the same values without the typo pass
        with pytest.raises(helm.HelmValuesError, match=f"additional properties '{key}' not allowed"):
            chart.validate_schema(merged(REQUIRED, misspelled))
        with pytest.raises(helm.HelmValuesError, match=key):
            chart.render(merged(REQUIRED, misspelled), name=RELEASE, namespace=NAMESPACE)
    report = helm.lint(CHART, merged(REQUIRED, misspelled), strict=True, namespace=NAMESPACE)
    assert any(key in error for error in report["errors"]), report


@pytest.mark.parametrize("bad", [
    {"env": {"DATABASE_URL": "sqlite://"}},  # the chart sets it from the Secret
    {"kubernetesRunner": {"options": {"namespace": "default"}}},  # always the sessions namespace
    {"sessions": {"namespace": "Labs_Sessions"}},
    {"previewHost": "localhost:8001"},
    {"securityContext": {"runAsUser": 0}},
    {"housekeeping": {"reapSessions": {"mode": "sometimes"}}},
    {"housekeeping": {"watchdog": {"mode": "cron"}}},  # its windows live in the process: a loop only
    {"networkPolicy": {"extraDenyCIDRs": ["db.example.org"]}},
])
def test_values_schema_rejects_unsafe_or_malformed_values(helm, bad):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(merged(REQUIRED, bad))


# Every rendered document against the Kubernetes API schemas.

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_document_validates_strictly(kubernetes_validate, variant):
    documents = render(VARIANTS[variant])
    assert len(documents) >= 10
    failures = []
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            failures.append(f"{document['kind']} {document['metadata']['name']}: {where}: {exc.message[:300]}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{document['kind']} {document['metadata']['name']}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_rendered_kinds():
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted([
        "CronJob", "CronJob", "Deployment", "Deployment", "Deployment", "Deployment", "Ingress", "Job", "LimitRange",
        "Namespace", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy",
        "PersistentVolumeClaim", "PersistentVolumeClaim", "Pod", "ResourceQuota", "Role", "RoleBinding",
        "Secret", "Service", "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ])


# RBAC: only the spec's verbs, only in the sessions namespace.

def _role_rules(documents: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    role = only(documents, "Role")
    assert role["metadata"]["namespace"] == SESSIONS
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_role_grants_exactly_the_specs_verbs():
    granted = _role_rules(render())
    assert granted == SPEC_ROLE
    assert not any("*" in verbs for verbs in granted.values())


def test_role_extras_are_opt_in_and_network_policies_can_only_be_made():
    granted = _role_rules(render({"rbac": {"portForward": True, "metrics": True}}))
    assert granted == {**SPEC_ROLE, ("", "pods/portforward"): {"get", "create"},
                       ("metrics.k8s.io", "pods"): {"get", "list"}}
    # Never update, patch or delete: the chart's static policies stay as they are.
    assert granted[("networking.k8s.io", "networkpolicies")] == {"get", "create"}
    # Switched off (no lab has several hosts), the platform has no NetworkPolicy rights at all.
    granted = _role_rules(render({"rbac": {"sessionNetworkPolicies": False}}))
    assert not any(resource == "networkpolicies" for _, resource in granted)
    assert granted == {key: verbs for key, verbs in SPEC_ROLE.items() if key[1] != "networkpolicies"}


def test_persistent_homes_add_only_the_claims_the_runner_makes():
    granted = _role_rules(render({"kubernetesRunner": {"options": {"home_storage_class": "fast"}}}))
    assert granted == {**SPEC_ROLE, ("", "persistentvolumeclaims"): {"get", "create", "delete"}}


def test_role_binding_binds_the_platforms_service_account_only():
    documents = render()
    binding = only(documents, "RoleBinding")
    account = only(documents, "ServiceAccount")
    assert binding["metadata"]["namespace"] == SESSIONS
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": only(documents, "Role")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_nothing_cluster_scoped_is_rendered_but_the_sessions_namespace(variant):
    documents = render(VARIANTS[variant])
    kinds = {d["kind"] for d in documents}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
                        "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration",
                        "MutatingWebhookConfiguration", "IngressClass"}
    for document in documents:
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == SESSIONS
            continue
        if document["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            # The guard on the Role's NetworkPolicy right: it narrows what the platform may do, grants nothing.
            assert document["metadata"]["name"] == f"{RELEASE}-browser-labs-session-network-policies"
            continue
        assert document["metadata"].get("namespace") in (NAMESPACE, SESSIONS), document["metadata"]


# The sessions namespace, its quota and limits.

def test_sessions_namespace_has_baseline_pod_security():
    namespace = only(render(), "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"


def test_namespace_creation_off_keeps_everything_else_in_the_sessions_namespace():
    documents = render(VARIANTS["namespace-creation-off"])
    assert not [d for d in documents if d["kind"] == "Namespace"]
    in_sessions = sorted(d["kind"] for d in documents if d["metadata"].get("namespace") == SESSIONS)
    assert in_sessions == sorted(["LimitRange", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy",
                                  "Pod", "ResourceQuota", "Role", "RoleBinding"])


def test_quota_and_limit_range_come_from_values():
    documents = render({"sessions": {
        "resourceQuota": {"hard": {"pods": "5", "requests.cpu": "2"}},
        "limitRange": {"limits": [{"type": "Container", "max": {"cpu": "2", "memory": "2Gi"}}]},
    }})
    quota = only(documents, "ResourceQuota")
    assert quota["spec"]["hard"]["pods"] == "5" and quota["spec"]["hard"]["requests.cpu"] == "2"
    assert quota["metadata"]["namespace"] == SESSIONS
    assert only(documents, "LimitRange")["spec"]["limits"] == [
        {"type": "Container", "max": {"cpu": "2", "memory": "2Gi"}}]
    off = render({"sessions": {"resourceQuota": {"enabled": False}, "limitRange": {"enabled": False}}})
    assert not {"ResourceQuota", "LimitRange"} & {d["kind"] for d in off}


# NetworkPolicies, evaluated on the labels the runner will give session pods.

@pytest.mark.parametrize("mode", NETWORK_MODES)
def test_default_deny_selects_every_session_pod(mode):
    documents = render()
    policies = policies_selecting(documents, session_pod(mode))
    deny = policies["default-deny"]["spec"]
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert not deny.get("ingress") and not deny.get("egress")
    # Even a pod carrying nothing but the session label is covered.
    assert "default-deny" in policies_selecting(documents, {"labs.session": "1"})


def test_no_session_policy_selects_platform_pods():
    documents = render()
    for document in documents:
        if document["kind"] in ("Deployment", "CronJob", "Job"):
            assert policies_selecting(documents, pod_labels(document)) == {}, document["metadata"]["name"]


@pytest.mark.parametrize("mode", ["none", "isolated", "Bridge", ""])
def test_isolated_none_and_unknown_modes_stay_denied(mode):
    policies = policies_selecting(render(), session_pod(mode))
    assert set(policies) == {"default-deny", "allow-platform"}
    assert not any(policy["spec"].get("egress") for policy in policies.values())


BLOCKED_FOR_BRIDGE = ["10.0.0.1", "10.96.0.10", "172.16.0.1", "172.31.255.254", "192.168.1.1", "100.64.0.1",
                      "169.254.169.254", "169.254.0.1", "127.0.0.1", "fd00::1", "fe80::1", "::ffff:10.0.0.1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"]


def test_bridge_policy_reaches_the_internet_but_no_private_or_link_local_range():
    documents = render()
    policies = policies_selecting(documents, session_pod("bridge"))
    assert set(policies) == {"default-deny", "allow-platform", "bridge"}
    for address in BLOCKED_FOR_BRIDGE:
        assert not egress_admits_address(policies, address), address
    for address in PUBLIC:
        assert egress_admits_address(policies, address), address
    blocks = [peer["ipBlock"] for rule in policies["bridge"]["spec"]["egress"]
              for peer in rule["to"] if "ipBlock" in peer]
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(blocks[0]["except"])
    assert {"fc00::/7", "fe80::/10"} <= set(blocks[1]["except"])


@pytest.mark.parametrize("mode", ["bridge", "unrestricted"])
def test_dns_is_the_only_other_egress_and_only_to_the_cluster_dns(mode):
    policy = policies_selecting(render(), session_pod(mode))[mode]
    selector_rules = [rule for rule in policy["spec"]["egress"] if any("ipBlock" not in p for p in rule["to"])]
    assert len(selector_rules) == 1
    rule = selector_rules[0]
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)]


def test_unrestricted_policy_excludes_the_metadata_server():
    policies = policies_selecting(render(), session_pod("unrestricted"))
    assert set(policies) == {"default-deny", "allow-platform", "unrestricted"}
    blocks = [peer["ipBlock"] for rule in policies["unrestricted"]["spec"]["egress"]
              for peer in rule["to"] if "ipBlock" in peer]
    assert blocks == [{"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}]
    assert not egress_admits_address(policies, "169.254.169.254")
    for address in ["8.8.8.8", "10.1.2.3", "169.254.1.1"]:
        assert egress_admits_address(policies, address), address


def test_extra_deny_cidrs_are_excluded_from_both_egress_policies():
    documents = render(VARIANTS["everything-else"])
    for mode in ("bridge", "unrestricted"):
        policies = policies_selecting(documents, session_pod(mode))
        assert not egress_admits_address(policies, "203.0.113.10"), mode
        assert egress_admits_address(policies, "203.0.113.11"), mode
    assert not egress_admits_address(policies_selecting(documents, session_pod("bridge")), "2001:db8::5")


def test_only_the_platforms_web_and_worker_pods_may_connect_to_sessions():
    documents = render()
    release_namespace = {"kubernetes.io/metadata.name": NAMESPACE}
    sessions_namespace = {"kubernetes.io/metadata.name": SESSIONS}
    for mode in NETWORK_MODES:
        policies = policies_selecting(documents, session_pod(mode))
        web = pod_labels(only(documents, "Deployment", "-web"))
        worker = pod_labels(only(documents, "Deployment", "-worker"))
        reaper = pod_labels(only(documents, "Deployment", "-reap-sessions"))
        assert ingress_admits_pod(policies, release_namespace, web)
        assert ingress_admits_pod(policies, release_namespace, worker)
        assert not ingress_admits_pod(policies, release_namespace, reaper)
        # Not the same labels from another namespace, and never another session.
        assert not ingress_admits_pod(policies, {"kubernetes.io/metadata.name": "elsewhere"}, web)
        for other in NETWORK_MODES:
            assert not ingress_admits_pod(policies, sessions_namespace, session_pod(other))


def test_network_policies_can_be_left_to_other_means():
    documents = render({"networkPolicy": {"enabled": False}})
    assert not [d for d in documents if d["kind"] == "NetworkPolicy"]
    assert not [d for d in documents if d["kind"] == "Pod"]  # the helm test checks the policies


def test_helm_test_pod_is_a_denied_session_pod_probing_the_web_service():
    documents = render()
    pod = only(documents, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["namespace"] == SESSIONS
    assert set(policies_selecting(documents, pod["metadata"]["labels"])) == {"default-deny", "allow-platform"}
    script = pod["spec"]["containers"][0]["args"][-1]
    service = only(documents, "Service")
    assert f'"{service["metadata"]["name"]}.{NAMESPACE}.svc", {service["spec"]["ports"][0]["port"]}' in script


# Pods: probes, security context, resources, settings.

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_containers_keep_the_images_entrypoint(variant):
    """args, never command: tini (the image's ENTRYPOINT) stays PID 1, forwards SIGTERM to the
    worker and the loops, and reaps what the runners start."""
    for document in render(VARIANTS[variant]):
        if document["kind"] in POD_KINDS:
            spec = pod_spec(document)
            for container in spec["containers"] + spec.get("initContainers", []):
                assert "command" not in container and container["args"][0] == "python", document["metadata"]["name"]


def test_static_files_come_from_the_image_or_an_init_container():
    web = pod_spec(only(render(), "Deployment", "-web"))
    assert "initContainers" not in web
    assert container_env(web["containers"][0])["LAB_STATIC_ROOT"]["value"] == "/app/staticfiles"
    web = pod_spec(only(render({"staticRoot": ""}), "Deployment", "-web"))
    [init] = web["initContainers"]
    assert init["args"] == ["python", "manage.py", "collectstatic", "--noinput", "-v0"]
    root = container_env(web["containers"][0])["LAB_STATIC_ROOT"]["value"]
    assert {"name": "static", "mountPath": root} in init["volumeMounts"]
    assert {"name": "static", "mountPath": root, "readOnly": True} in web["containers"][0]["volumeMounts"]


def test_web_probes_hit_healthz_and_readyz():
    web = only(render(), "Deployment", "-web")
    container = next(c for c in pod_spec(web)["containers"] if c["name"] == "web")
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        # The platform's own host name, so DJANGO_ALLOWED_HOSTS accepts the kubelet's request.
        assert {"name": "Host", "value": "labs.example.org"} in container[probe]["httpGet"]["httpHeaders"]
    assert container["args"][:3] == ["python", "-m", "webserver.serve"]
    assert container["args"][-1] == "labsite.asgi:application"
    assert container["args"][3:7] == ["-b", "0.0.0.0", "-p", "8000"]


def test_service_targets_the_web_pods():
    documents = render()
    service = only(documents, "Service")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(only(documents, "Deployment", "-web")))
    assert not selects({"matchLabels": service["spec"]["selector"]},
                       pod_labels(only(documents, "Deployment", "-worker")))
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_containers_run_as_non_root_without_privilege_escalation(variant):
    pods = [d for d in render(VARIANTS[variant]) if d["kind"] in POD_KINDS]
    assert pods
    for document in pods:
        spec = pod_spec(document)
        pod_context = spec.get("securityContext") or {}
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert pod_context.get("runAsUser", 0) != 0
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{document['kind']} {document['metadata']['name']} {container['name']}"
            context = container["securityContext"]
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod_context.get("runAsUser")) not in (None, 0), where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged") is not True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["readOnlyRootFilesystem"] is True, where
            seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile")
            assert seccomp == {"type": "RuntimeDefault"}, where
            names = [item["name"] for item in container.get("env", [])]
            assert len(names) == len(set(names)), f"{where}: duplicate env {names}"


def test_platform_pods_get_a_writable_tmp_and_the_shared_volumes():
    for document in render():
        if document["kind"] not in ("Deployment", "CronJob", "Job"):
            continue
        spec = pod_spec(document)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"
            env = container_env(container)
            assert mounts[env["LAB_DATA_DIR"]["value"]] == "data"
            assert mounts[env["LAB_VM_IMAGE_DIR"]["value"]] == "vm-images"
        if document["kind"] == "Job":
            # The migrate hook runs before the release's claims exist.
            assert "persistentVolumeClaim" not in volumes["data"]
        else:
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-browser-labs-data"


def test_resources_come_from_values():
    web_resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}
    worker_resources = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    reaper_resources = {"requests": {"cpu": "10m", "memory": "100Mi"}, "limits": {"memory": "200Mi"}}
    documents = render({"web": {"resources": web_resources, "replicas": 3},
                        "worker": {"resources": worker_resources},
                        "housekeeping": {"reapSessions": {"resources": reaper_resources}}})
    web = only(documents, "Deployment", "-web")
    assert web["spec"]["replicas"] == 3
    assert pod_spec(web)["containers"][0]["resources"] == web_resources
    assert pod_spec(only(documents, "Deployment", "-worker"))["containers"][0]["resources"] == worker_resources
    assert pod_spec(only(documents, "Deployment", "-reap-sessions"))["containers"][0]["resources"] == reaper_resources


def test_worker_and_housekeeping_commands():
    documents = render()
    worker = pod_spec(only(documents, "Deployment", "-worker"))["containers"][0]
    assert worker["args"] == ["python", "manage.py", "run_worker", "default", "judge"]
    reaper = pod_spec(only(documents, "Deployment", "-reap-sessions"))["containers"][0]
    assert reaper["args"] == ["python", "manage.py", "reap_sessions", "--loop", "30"]
    reconcile = only(documents, "CronJob", "-reconcile-runners")
    assert reconcile["spec"]["schedule"] == "*/5 * * * *" and reconcile["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_spec(reconcile)["containers"][0]["args"] == ["python", "manage.py", "reconcile_runners"]
    gc = only(documents, "CronJob", "-gc-snapshots")
    assert pod_spec(gc)["containers"][0]["args"] == ["python", "manage.py", "gc_snapshots"]
    assert pod_spec(gc)["restartPolicy"] == "Never"
    watchdog = pod_spec(only(documents, "Deployment", "-run-watchdog"))["containers"][0]
    assert watchdog["args"] == ["python", "manage.py", "run_watchdog", "--loop", "30"]

    flipped = render(VARIANTS["everything-else"])
    assert pod_spec(only(flipped, "CronJob", "-reap-sessions"))["containers"][0]["args"] == [
        "python", "manage.py", "reap_sessions"]
    assert pod_spec(only(flipped, "Deployment", "-gc-snapshots"))["containers"][0]["args"] == [
        "python", "manage.py", "gc_snapshots", "--loop", "3600"]


def test_migrate_runs_as_a_hook_after_its_secret():
    documents = render()
    job = only(documents, "Job", "-migrate")
    secret = only(documents, "Secret")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"])
    container = pod_spec(job)["containers"][0]
    assert container["args"] == ["python", "manage.py", "migrate", "--noinput"]
    assert pod_spec(job)["automountServiceAccountToken"] is False
    assert container_env(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_chart_secret_holds_the_urls_and_a_generated_key():
    secret = only(render(), "Secret")
    data = secret["stringData"]
    assert data["DATABASE_URL"] == REQUIRED["database"]["url"]
    assert data["REDIS_URL"] == REQUIRED["redis"]["url"]
    assert len(data["DJANGO_SECRET_KEY"]) >= 50
    assert "GITHUB_CLIENT_SECRET" not in data


def test_existing_secret_replaces_the_charts_secret():
    documents = render(VARIANTS["existing-secret"])
    assert not [d for d in documents if d["kind"] == "Secret"]
    for document in documents:
        if document["kind"] in ("Deployment", "CronJob", "Job"):
            for container in pod_spec(document)["containers"]:
                env = container_env(container)
                for name in ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GEMINI_API_KEY"):
                    assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "labs-env"
                assert env["GEMINI_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_ingress_serves_the_platform_and_previews_on_their_own_hosts_with_long_websocket_timeouts():
    documents = render({"ingress": {"nginx": {"proxyReadTimeout": "7200"}}})
    ingress = only(documents, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == ["labs.example.org", "labs-preview.example.net"]
    service = only(documents, "Service")["metadata"]["name"]
    for rule in ingress["spec"]["rules"]:
        assert rule["http"]["paths"][0]["backend"]["service"] == {"name": service, "port": {"name": "http"}}
    assert [t["hosts"] for t in ingress["spec"]["tls"]] == [["labs.example.org"], ["labs-preview.example.net"]]
    web = container_env(pod_spec(only(documents, "Deployment", "-web"))["containers"][0])
    assert web["LAB_PREVIEW_HOST"]["value"] == "labs-preview.example.net"
    assert web["DJANGO_ALLOWED_HOSTS"]["value"] == "labs.example.org"


def test_ingress_off_and_no_preview_host():
    assert not [d for d in render(VARIANTS["ingress-off"]) if d["kind"] == "Ingress"]
    ingress = only(render({"previewHost": ""}), "Ingress")
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["labs.example.org"]


@pytest.mark.parametrize("hosts", [
    {"previewHost": "labs.example.org"},
    {"previewHost": "labs.example.net", "django": {"extraAllowedHosts": ["LABS.example.net"]}},
])
def test_preview_host_must_not_be_a_platform_host(helm, hosts):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError, match="previewHost must differ"):
        chart.render(merged(REQUIRED, hosts), name=RELEASE, namespace=NAMESPACE)


def test_sessions_run_on_the_kubernetes_runner_unless_it_is_switched_off():
    documents = render()
    for kind, suffix in (("Deployment", "-web"), ("Deployment", "-worker"), ("Deployment", "-reap-sessions"),
                         ("CronJob", "-reconcile-runners")):
        spec = pod_spec(only(documents, kind, suffix))
        assert spec["automountServiceAccountToken"] is True
        env = container_env(spec["containers"][0])
        assert json.loads(env["LAB_RUNNERS"]["value"]) == {"kubernetes": {
            "BACKEND": "runners.kubernetes.KubernetesRunner",
            # The platform's image reads the workspace for the judge: no learner program decides a verdict.
            "OPTIONS": {"namespace": SESSIONS, "agent_image": "labs/platform:0.1.0"}}}
        assert env["LAB_DEFAULT_RUNNER"]["value"] == "kubernetes"
    assert pod_spec(only(documents, "Job", "-migrate"))["automountServiceAccountToken"] is False

    documents = render({"kubernetesRunner": {"enabled": False}})
    web = pod_spec(only(documents, "Deployment", "-web"))
    assert json.loads(container_env(web["containers"][0])["LAB_RUNNERS"]["value"]) == {}
    assert "LAB_DEFAULT_RUNNER" not in container_env(web["containers"][0])
    assert web["automountServiceAccountToken"] is False

    documents = render(VARIANTS["everything-else"])
    for suffix in ("-web", "-worker", "-gc-snapshots"):
        spec = pod_spec(only(documents, "Deployment", suffix))
        assert spec["automountServiceAccountToken"] is True
        env = container_env(spec["containers"][0])
        runners = json.loads(env["LAB_RUNNERS"]["value"])
        assert runners["kubernetes"] == {"BACKEND": "runners.kubernetes.KubernetesRunner",
                                         "OPTIONS": {"namespace": SESSIONS, "instance": "prod",
                                                     "agent_image": "labs/platform:0.1.0"}}
        assert runners["docker"]["OPTIONS"] == {"base_url": "tcp://dockerd:2376"}
        assert env["LAB_DEFAULT_RUNNER"]["value"] == "docker"


def _settings_env(documents: list[dict[str, Any]]) -> dict[str, str]:
    """The web container's environment, with the Secret's values filled in."""
    secret = {"DJANGO_SECRET_KEY": "chart-test-key", "DATABASE_URL": REQUIRED["database"]["url"],
              "REDIS_URL": REQUIRED["redis"]["url"]}
    env = {}
    for name, item in container_env(pod_spec(only(documents, "Deployment", "-web"))["containers"][0]).items():
        if "value" in item:
            env[name] = item["value"]
        elif name in secret:
            env[name] = secret[name]
    return env


@pytest.mark.parametrize("variant", ["defaults", "everything-else"])
def test_rendered_environment_passes_the_platforms_own_settings_checks(variant, tmp_path):
    env = _settings_env(render(VARIANTS[variant]))
    env["LAB_DATA_DIR"] = str(tmp_path)  # the pod's path does not exist here; nothing else changes
    values = settings_values(
        "ALLOWED_HOSTS", "LAB_PREVIEW_HOST", "LAB_RUNNERS", "SESSION_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER",
        "LAB_DEFAULT_RUNNER", "RQ_ASYNC",
        unset=["DATABASE_TEST_NAME", "LAB_RQ_ASYNC", "DJANGO_CSRF_TRUSTED_ORIGINS", "LAB_DEFAULT_RUNNER"], **env)
    assert values["ALLOWED_HOSTS"] == ["labs.example.org"]
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["RQ_ASYNC"] is True
    if variant == "defaults":
        assert values["LAB_PREVIEW_HOST"] == "labs-preview.example.net"
        assert values["LAB_RUNNERS"] == {"kubernetes": {"BACKEND": "runners.kubernetes.KubernetesRunner",
                                                        "OPTIONS": {"namespace": SESSIONS,
                                                                    "agent_image": "labs/platform:0.1.0"}}}
        assert values["LAB_DEFAULT_RUNNER"] == "kubernetes"
    else:
        assert values["LAB_PREVIEW_HOST"] == ""
        assert values["LAB_DEFAULT_RUNNER"] == "docker"
        assert values["LAB_RUNNERS"]["kubernetes"]["OPTIONS"]["namespace"] == SESSIONS


# VM labs on the Kubernetes runner: the chart's values become the runner's OPTIONS.

def _runner_options(documents: list[dict[str, Any]]) -> dict[str, Any]:
    env = container_env(pod_spec(only(documents, "Deployment", "-worker"))["containers"][0])
    options: dict[str, Any] = json.loads(env["LAB_RUNNERS"]["value"])["kubernetes"]["OPTIONS"]
    return options


def test_vm_values_become_the_runners_options_and_its_claim_in_the_sessions_namespace():
    from runners.kubernetes import KubernetesRunner

    documents = render(VARIANTS["vms-from-a-claim"])
    options = _runner_options(documents)
    assert options == {"namespace": SESSIONS, "agent_image": "labs/platform:0.1.0", "vm_disk_source": "claim",
                       "vm_disks_claim": f"{RELEASE}-browser-labs-vm-images",
                       "vm_image": "registry.example.org/labs/qemu:bookworm",
                       "kvm_resource": "devices.kubevirt.io/kvm", "kvm_group": 36}
    claims = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in documents
              if d["kind"] == "PersistentVolumeClaim"}
    claim = claims[(SESSIONS, options["vm_disks_claim"])]
    # Bound to the operator's volume on the platform's storage, read-only, never provisioned empty.
    assert claim["spec"] == {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                             "volumeName": "labs-vm-images-sessions", "resources": {"requests": {"storage": "50Gi"}}}
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert (NAMESPACE, f"{RELEASE}-browser-labs-vm-images") in claims  # the platform's own, unchanged
    # The runner takes the rendered options: its VM side finds a usable disk source.
    runner = KubernetesRunner("kubernetes", options)
    assert runner.vm.disk_source() == "claim" and runner.vm.accel() == "kvm"

    documents = render({"kubernetesRunner": {"vms": {"diskSource": "init", "diskImage": "reg/labs/vm-disks:1",
                                                     "diskImageRoot": "/images", "disksRoot": "/srv/vm"}}})
    options = _runner_options(documents)
    assert {k: v for k, v in options.items() if k.startswith("vm_")} == {
        "vm_disk_source": "init", "vm_disk_image": "reg/labs/vm-disks:1", "vm_disk_image_root": "/images",
        "vm_disks_root": "/srv/vm"}
    assert KubernetesRunner("kubernetes", options).vm.disk_source() == "init"
    assert not [d for d in documents if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["namespace"] == SESSIONS]
    # A claim the operator manages, named as it is.
    options = _runner_options(render({"kubernetesRunner": {"vms": {"diskSource": "claim", "claim": "vm-disks"}}}))
    assert options["vm_disks_claim"] == "vm-disks"


def test_no_vm_values_leave_the_runner_refusing_vm_labs_with_its_own_words():
    from runners.base import RunnerError
    from runners.kubernetes import KubernetesRunner

    options = _runner_options(render())
    assert not [key for key in options if key.startswith(("vm_", "kvm_"))]
    with pytest.raises(RunnerError, match="vm_disks_claim"):
        KubernetesRunner("kubernetes", options).vm.disk_source()


@pytest.mark.parametrize(("values", "message"), [
    ({"kubernetesRunner": {"vms": {"diskSource": "claim"}}}, "needs a claim in the sessions namespace"),
    ({"kubernetesRunner": {"vms": {"diskSource": "init"}}}, "needs kubernetesRunner.vms.diskImage"),
    ({"persistence": {"vmImages": {"sessionsClaim": {"create": True}}}}, "sessionsClaim.volumeName is required"),
])
def test_vm_values_that_could_never_boot_refuse_to_render(helm, values, message):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError, match=message):
        chart.render(merged(REQUIRED, values), name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("bad", [
    {"kubernetesRunner": {"options": {"vm_disks_claim": "vm-disks"}}},  # set in kubernetesRunner.vms
    {"kubernetesRunner": {"options": {"kvm_resource": "devices.kubevirt.io/kvm"}}},
    {"kubernetesRunner": {"vms": {"diskSource": "pvc"}}},
    {"kubernetesRunner": {"vms": {"kvmGroup": "kvm"}}},
    {"kubernetesRunner": {"vms": {"diskImageRoot": "disks"}}},
    {"persistence": {"vmImages": {"sessionsClaim": {"accessModes": ["ReadMostly"]}}}},
])
def test_values_schema_rejects_misplaced_or_malformed_vm_values(helm, bad):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(merged(REQUIRED, bad))


# The admission policy that narrows the Role's NetworkPolicy right, its CEL evaluated here (cel-python).

def _cel(expression: str, activation: dict[str, Any]) -> Any:
    celpy = tool("celpy")
    environment = celpy.Environment()
    return environment.program(environment.compile(expression)).evaluate(celpy.json_to_cel(activation))


def _cel_bool(expression: str, activation: dict[str, Any]) -> bool:
    result = _cel(expression, activation)
    # An evaluation error comes back as a value (celpy's CELEvalError), never as False.
    assert isinstance(result, tool("celpy").celtypes.BoolType), (expression, result)
    return bool(result)


def _guard_admits(guard: dict[str, Any], policy: dict[str, Any]) -> bool:
    spec = guard["spec"]
    variables = {item["name"]: _cel(item["expression"], {"object": policy}) for item in spec["variables"]}
    return all(_cel_bool(rule["expression"], {"object": policy, "variables": variables})
               for rule in spec["validations"])


def _runners_own_policy(session: str) -> dict[str, Any]:
    """What the Kubernetes runner creates for a session with several hosts (runners/k8s_hosts.py)."""
    from runners.base import SessionSpec
    from runners.kubernetes import KubernetesRunner

    spec = SessionSpec(session_id=session, user_id=7, username="olivia", lab_slug="two-nodes", image="labs/x",
                       hosts=("controlplane", "node01"))
    anchor = {"metadata": {"name": f"lab-{session}", "uid": "0b1c2d3e-0000-4000-8000-000000000000"}}
    return KubernetesRunner("kubernetes", {"namespace": SESSIONS}).hosts.policy_manifest(spec, anchor)


def test_the_platform_may_create_only_network_policies_pinned_to_one_session():
    documents = render()
    guard = only(documents, "ValidatingAdmissionPolicy")
    binding = only(documents, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": guard["metadata"]["name"], "validationActions": ["Deny"]}
    assert guard["spec"]["failurePolicy"] == "Fail"
    assert guard["spec"]["matchConstraints"]["resourceRules"] == [{
        "apiGroups": ["networking.k8s.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
        "resources": ["networkpolicies"]}]
    # Only the platform's own requests: the chart's static policies (Helm's) are not its business.
    [condition] = guard["spec"]["matchConditions"]
    account = f"system:serviceaccount:{NAMESPACE}:{only(documents, 'ServiceAccount')['metadata']['name']}"
    assert _cel_bool(condition["expression"], {"request": {"userInfo": {"username": account}}})
    assert not _cel_bool(condition["expression"], {"request": {"userInfo": {"username": "kubernetes-admin"}}})

    own = _runners_own_policy("4f1b8c9e-7d2a-4c3b-9e8f-0a1b2c3d4e5f")
    assert _guard_admits(guard, own)
    peers = own["spec"]["podSelector"]
    other = {"matchLabels": {**peers["matchLabels"], "labs.session": "another-session"}}
    hostile = {
        "an address block": {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
        "egress anywhere": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
        "a rule without peers (everyone)": {"ingress": [{"ports": [{"port": 22}]}]},
        "an empty peer list (everyone)": {"egress": [{"to": []}]},
        "another namespace": {"ingress": [{"from": [{"namespaceSelector": {}, "podSelector": peers}]}]},
        "another session's pods": {"egress": [{"to": [{"podSelector": other}]}]},
        "any session pod": {"ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "labs.session", "operator": "Exists"}]}}]}]},
        "every pod of the namespace": {"podSelector": {}},
    }
    for why, change in hostile.items():
        assert not _guard_admits(guard, {**own, "spec": {**own["spec"], **change}}), why


def test_the_guard_goes_with_the_right_it_guards_or_on_request():
    assert not [d for d in render({"rbac": {"sessionNetworkPolicies": False}}) if "Admission" in d["kind"]]
    assert not [d for d in render({"rbac": {"guardSessionNetworkPolicies": False}}) if "Admission" in d["kind"]]
