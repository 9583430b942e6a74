"""What the API server double knows about objects: resource types, Status errors, selectors,
defaulting and validation, as a real kube-apiserver does them for core/v1.

Validation has two layers, like the real server: the official OpenAPI schema (through
`kubernetes-validate`, strict, so an unknown or misspelt field is refused instead of silently
dropped) and the semantic checks the schema cannot express (names, label syntax, required
container images, immutable fields). Schema problems answer 400 (a strict decoding error),
semantic ones 422 Invalid with causes, as kube-apiserver does.
"""

from __future__ import annotations

import copy
import datetime
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import kubernetes_validate

SCHEMA_VERSION = "1.33"
SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-labs-double",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-23T00:00:00Z",
    "goVersion": "go1.24.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceType:
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    #: Field selectors the real server accepts for this resource (besides metadata.name/namespace).
    fields: tuple[str, ...] = ()
    #: Subresources served, with the verbs an authorizer sees for them.
    subresources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The API group ("" for core, served under /api/v1; others under /apis/<group>/<version>).
    group: str = ""
    version: str = "v1"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
RESOURCES: dict[str, ResourceType] = {
    rt.plural: rt
    for rt in (
        ResourceType(
            "pods", "pod", "Pod", True, ALL_VERBS, ("po",),
            fields=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                    "status.phase", "status.podIP", "status.nominatedNodeName"),
            subresources={"exec": ("create", "get"), "log": ("get",), "status": ("get", "patch", "update")},
        ),
        ResourceType("configmaps", "configmap", "ConfigMap", True, ALL_VERBS, ("cm",)),
        ResourceType("secrets", "secret", "Secret", True, ALL_VERBS, (), fields=("type",)),
        ResourceType(
            "events", "event", "Event", True, ALL_VERBS, ("ev",),
            fields=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
                    "reason", "reportingComponent", "source", "type"),
        ),
        ResourceType("persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", True, ALL_VERBS,
                     ("pvc",), subresources={"status": ("get", "patch", "update")}),
        ResourceType("namespaces", "namespace", "Namespace", False, ("create", "get", "list", "watch"), ("ns",),
                     fields=("status.phase",)),
        # Stored and validated; not enforced (the kubelet's pods share one Docker bridge).
        ResourceType("networkpolicies", "networkpolicy", "NetworkPolicy", True, ALL_VERBS, ("netpol",),
                     group="networking.k8s.io"),
    )
}
GROUPS = sorted({rt.group for rt in RESOURCES.values() if rt.group})
KIND_TO_PLURAL = {rt.kind: rt.plural for rt in RESOURCES.values()}


# Status errors ----------------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered as a metav1.Status, the way kube-apiserver words it."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def success_status(details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.plural} "{name}" not found', {"name": name, "kind": rt.plural})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.plural} "{name}" already exists', {"name": name, "kind": rt.plural})


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": {why}',
                    {"name": name, "kind": rt.plural})


def stale_conflict(rt: ResourceType, name: str) -> ApiError:
    return conflict(rt, name, "the object has been modified; please apply your changes to the latest version "
                              "and try again")


def forbidden(rt: ResourceType, name: str, why: str) -> ApiError:
    subject = f'{rt.plural} "{name}"' if name else rt.plural
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", {"name": name, "kind": rt.plural})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


@dataclass(frozen=True)
class Cause:
    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueForbidden, FieldValueDuplicate, ...
    message: str


def invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    listed = ", ".join(f"{c.field}: {c.message}" for c in causes)
    message = f'{rt.kind} "{name}" is invalid: ' + (f"[{listed}]" if len(causes) > 1 else listed)
    details = {"name": name, "kind": rt.kind,
               "causes": [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]}
    return ApiError(422, "Invalid", message, details)


# Time and names ---------------------------------------------------------------------------------
def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_in(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime.datetime:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet


def generated_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(length))


DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def subdomain_problem(value: str) -> str | None:
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not DNS1123_SUBDOMAIN.match(value):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character")
    return None


def label_name_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not DNS1123_LABEL.match(value):
        return ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                "start and end with an alphanumeric character")
    return None


def qualified_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or subdomain_problem(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                "an alphanumeric character")
    return None


# Quantities -------------------------------------------------------------------------------------
_SUFFIXES = {
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5, "E": 1000**6,
}
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource.Quantity ("500m", "64Mi", "1", 2) as a number; ValueError when malformed."""
    text = str(value).strip()
    match = QUANTITY.match(text)
    if not match:
        raise ValueError(f"quantities must match the regular expression '{QUANTITY.pattern}'")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError("unparsable quantity") from exc
    if suffix[:1] in ("e", "E"):
        return amount * (Decimal(10) ** int(suffix[1:]))
    return amount * Decimal(_SUFFIXES[suffix])


# Selectors --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        return not present or value not in self.values  # notin


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


_SET_REQUIREMENT = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
_EQUALITY_REQUIREMENT = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    """apimachinery's label selector grammar (equality and set based); 400 BadRequest on junk."""
    if not text:
        return []
    requirements = []
    for part in _split_top_level(text):
        if not part:
            raise bad_request(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        if match := _SET_REQUIREMENT.match(part):
            key, op, values = match.groups()
            items = tuple(v.strip() for v in values.split(",") if v.strip())
            requirement = Requirement(key, op, items)
        elif match := _EQUALITY_REQUIREMENT.match(part):
            key, op, value = match.groups()
            requirement = Requirement(key, "=" if op in ("=", "==") else "!=", (value.strip(),))
        elif part.startswith("!"):
            requirement = Requirement(part[1:].strip(), "!")
        else:
            requirement = Requirement(part, "exists")
        if qualified_key_problem(requirement.key):
            raise bad_request(f"unable to parse requirement: invalid label key {requirement.key!r}: "
                              f"{qualified_key_problem(requirement.key)}")
        for value in requirement.values:
            if len(value) > 63 or not LABEL_VALUE.match(value):
                raise bad_request(f"unable to parse requirement: invalid label value: {value!r}")
        requirements.append(requirement)
    return requirements


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    negated: bool


def parse_field_selector(text: str | None, rt: ResourceType) -> list[FieldRequirement]:
    if not text:
        return []
    allowed = {"metadata.name", "metadata.namespace", *rt.fields}
    requirements = []
    for part in text.split(","):
        part = part.strip()
        match = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path, op, value = match.groups()
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        requirements.append(FieldRequirement(path, value, op == "!="))
    return requirements


def _field_value(obj: dict[str, Any], path: str) -> str:
    if path == "source":  # events: source.component
        return str(((obj.get("source") or {}).get("component")) or "")
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def fields_match(requirements: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all((_field_value(obj, r.path) == r.value) != r.negated for r in requirements)


# Defaulting (what the real server and its admission plugins fill in) -----------------------------
def _image_pull_policy(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    tag = name.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_probe(probe: dict[str, Any] | None) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    if isinstance(container.get("image"), str) and container["image"]:
        container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
    resources = container.setdefault("resources", {})
    if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
        requests = resources.setdefault("requests", {})
        for name, value in resources["limits"].items():
            requests.setdefault(name, value)  # requests default to limits, per resource
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for key in ("startupProbe", "readinessProbe", "livenessProbe"):
        _default_probe(container.get(key))


def qos_class(spec: dict[str, Any]) -> str:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    any_set, guaranteed = False, True
    for container in containers:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if limits or requests:
            any_set = True
        for name in ("cpu", "memory"):
            if (name not in limits or name not in requests
                    or parse_quantity(limits[name]) != parse_quantity(requests[name])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod(pod: dict[str, Any]) -> None:
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    # The ServiceAccount admission plugin: the default account, and its token unless opted out.
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    # DefaultTolerationSeconds admission.
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if isinstance(tolerations, list) and not any(isinstance(t, dict) and t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                  if isinstance(c, dict)]
    for container in containers:
        _default_container(container)
    if spec.get("automountServiceAccountToken") is not False:
        volume_name = f"kube-api-access-{generated_suffix()}"
        spec.setdefault("volumes", []).append({"name": volume_name, "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                              "fieldPath": "metadata.namespace"}}]}},
            ]}})
        for container in containers:
            container.setdefault("volumeMounts", []).append(
                {"name": volume_name, "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict) and isinstance(volume.get("emptyDir"), dict):
            pass  # emptyDir has no defaults worth filling
    try:
        qos = qos_class(spec)
    except ValueError:
        qos = "BestEffort"  # validation refuses the malformed quantity
    pod["status"] = {"phase": "Pending", "qosClass": qos}


PVC_PROTECTION = "kubernetes.io/pvc-protection"
DEFAULT_STORAGE_CLASS = "standard"  # the double's provisioner serves it (tests/k8s/kubelet.py)


def default_object(plural: str, obj: dict[str, Any]) -> None:
    if plural == "pods":
        default_pod(obj)
    elif plural == "secrets":
        obj.setdefault("type", "Opaque")
    elif plural == "persistentvolumeclaims":
        # The storage-protection admission plugin: the claim stays while a pod uses it.
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if PVC_PROTECTION not in finalizers:
            finalizers.append(PVC_PROTECTION)
        if isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("volumeMode", "Filesystem")
            # The DefaultStorageClass admission plugin: a claim naming no class gets the default one.
            if "storageClassName" not in obj["spec"]:
                obj["spec"]["storageClassName"] = DEFAULT_STORAGE_CLASS
        obj["status"] = {"phase": "Pending"}
    elif plural == "namespaces":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


# Validation -------------------------------------------------------------------------------------
def schema_problem(obj: dict[str, Any]) -> str | None:
    """The first problem the official strict schema finds, as the real server's strict decoder says it."""
    try:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        if exc.validator == "additionalProperties":
            unknown = re.findall(r"'([^']+)' was unexpected", exc.message) or re.findall(r"'([^']+)'", exc.message)
            names = ", ".join(f'unknown field "{where + "." if where else ""}{u}"' for u in unknown)
            return f"strict decoding error: {names}"
        return f"{where or '<root>'}: {exc.message.splitlines()[0]}"
    except kubernetes_validate.SchemaNotFoundError:
        return f"no schema for {obj.get('apiVersion')}/{obj.get('kind')}"
    return None


def _meta_causes(rt: ResourceType, obj: dict[str, Any]) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name") or ""
    problem = subdomain_problem(name) if rt.plural != "namespaces" else label_name_problem(name)
    if problem:
        causes.append(Cause("metadata.name", "FieldValueInvalid", f"Invalid value: {name!r}: {problem}"))
    for key, value in (meta.get("labels") or {}).items():
        if problem := qualified_key_problem(key):
            causes.append(Cause("metadata.labels", "FieldValueInvalid", f"Invalid value: {key!r}: {problem}"))
        if len(value) > 63:
            causes.append(Cause("metadata.labels", "FieldValueInvalid",
                                f"Invalid value: {value!r}: must be no more than 63 characters"))
        elif not LABEL_VALUE.match(value):
            causes.append(Cause("metadata.labels", "FieldValueInvalid",
                                f"Invalid value: {value!r}: a valid label must be an empty string or consist of "
                                "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                                "alphanumeric character"))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        if problem := qualified_key_problem(key):
            causes.append(Cause("metadata.annotations", "FieldValueInvalid", f"Invalid value: {key!r}: {problem}"))
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        causes.append(Cause("metadata.annotations", "FieldValueTooLong", "Too long: must have at most 262144 bytes"))
    controllers = 0
    for index, ref in enumerate(meta.get("ownerReferences") or []):
        where = f"metadata.ownerReferences[{index}]"
        if not ref.get("uid"):
            causes.append(Cause(f"{where}.uid", "FieldValueRequired", "Required value: uid must not be empty"))
        if ref.get("controller"):
            controllers += 1
    if controllers > 1:
        causes.append(Cause("metadata.ownerReferences", "FieldValueInvalid",
                            "Invalid value: only one reference can have Controller set to true"))
    return causes


# Resources (pkg/apis/core/helper and validation.ValidateResourceRequirements) ---------------------------
STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def is_native_resource(name: str) -> bool:
    """No domain, or the kubernetes.io domain: the cluster's own resources."""
    return "/" not in name or "kubernetes.io/" in name


def is_extended_resource(name: str) -> bool:
    """A device plugin's or operator's resource (devices.kubevirt.io/kvm): integer, never overcommitted."""
    return not is_native_resource(name) and not name.startswith("requests.") \
        and qualified_key_problem("requests." + name) is None


def _resource_name_causes(path: str, name: str) -> list[Cause]:
    if problem := qualified_key_problem(name):
        return [Cause(path, "FieldValueInvalid", f"Invalid value: {name!r}: {problem}")]
    if "/" not in name:
        if name not in STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            return [Cause(path, "FieldValueInvalid", f"Invalid value: {name!r}: must be a standard resource for "
                                                     "containers")]
    elif not is_native_resource(name) and not is_extended_resource(name):
        return [Cause(path, "FieldValueInvalid", f"Invalid value: {name!r}: doesn't follow extended resource name "
                                                 "standard")]
    return []


def _resource_causes(where: str, resources: dict[str, Any]) -> list[Cause]:
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    causes: list[Cause] = []
    parsed: dict[str, dict[str, Decimal]] = {"limits": {}, "requests": {}}
    for kind, values in (("limits", limits), ("requests", requests)):
        for resource, value in values.items():
            path = f"{where}.resources.{kind}[{resource}]"
            causes += _resource_name_causes(path, resource)
            try:
                quantity = parsed[kind][resource] = parse_quantity(value)
            except ValueError as exc:
                causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {value!r}: {exc}"))
                continue
            if quantity < 0:
                causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {value!r}: must be greater than or "
                                                               "equal to 0"))
            elif is_extended_resource(resource) and quantity != quantity.to_integral_value():
                causes.append(Cause(path, "FieldValueInvalid", f"Invalid value: {value!r}: must be an integer"))
    for resource, request in parsed["requests"].items():
        overcommit = is_native_resource(resource) and not resource.startswith("hugepages-")
        limit = parsed["limits"].get(resource)
        if limit is None:
            if not overcommit:
                causes.append(Cause(f"{where}.resources.limits", "FieldValueRequired",
                                    "Required value: Limit must be set for non overcommitable resources"))
        elif not overcommit and request != limit:
            causes.append(Cause(f"{where}.resources.requests", "FieldValueInvalid",
                                f"Invalid value: {requests[resource]!r}: must be equal to {resource} limit of "
                                f"{limits[resource]}"))
        elif request > limit:
            causes.append(Cause(f"{where}.resources.requests", "FieldValueInvalid",
                                f"Invalid value: {requests[resource]!r}: must be less than or equal to "
                                f"{resource} limit of {limits[resource]}"))
    return causes


def _mount_causes(where: str, container: dict[str, Any], volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    paths: set[str] = set()
    for index, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            causes.append(Cause(f"{where}.volumeMounts[{index}].name", "FieldValueNotFound",
                                f"Not found: {mount.get('name')!r}"))
        path = mount.get("mountPath") or ""
        if path in paths:
            causes.append(Cause(f"{where}.volumeMounts[{index}].mountPath", "FieldValueInvalid",
                                f"Invalid value: {path!r}: must be unique"))
        paths.add(path)
        sub = mount.get("subPath") or ""
        # validateLocalDescendingPath: relative, and never above the volume.
        if sub.startswith("/"):
            causes.append(Cause(f"{where}.volumeMounts[{index}].subPath", "FieldValueInvalid",
                                f"Invalid value: {sub!r}: must be a relative path"))
        if ".." in sub.split("/"):
            causes.append(Cause(f"{where}.volumeMounts[{index}].subPath", "FieldValueInvalid",
                                f"Invalid value: {sub!r}: must not contain '..'"))
    return causes


def _container_causes(where: str, container: dict[str, Any], volumes: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    name = container.get("name") or ""
    if problem := label_name_problem(name):
        causes.append(Cause(f"{where}.name", "FieldValueInvalid", f"Invalid value: {name!r}: {problem}"))
    if not container.get("image"):
        causes.append(Cause(f"{where}.image", "FieldValueRequired", "Required value"))
    causes += _resource_causes(where, container.get("resources") or {})
    causes += _mount_causes(where, container, volumes)
    for index, port in enumerate(container.get("ports") or []):
        number = port.get("containerPort")
        if not isinstance(number, int) or not 0 < number < 65536:
            causes.append(Cause(f"{where}.ports[{index}].containerPort", "FieldValueInvalid",
                                f"Invalid value: {number!r}: must be between 1 and 65535, inclusive"))
    return causes


def _pod_causes(pod: dict[str, Any]) -> list[Cause]:
    spec = pod.get("spec") or {}
    causes: list[Cause] = []
    volumes: set[str] = set()
    for index, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name") or ""
        if problem := label_name_problem(name):
            causes.append(Cause(f"spec.volumes[{index}].name", "FieldValueInvalid",
                                f"Invalid value: {name!r}: {problem}"))
        if name in volumes:
            causes.append(Cause(f"spec.volumes[{index}].name", "FieldValueDuplicate", f"Duplicate value: {name!r}"))
        volumes.add(name)
    containers = spec.get("containers") or []
    if not containers:
        causes.append(Cause("spec.containers", "FieldValueRequired", "Required value"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            where = f"spec.{group}[{index}]"
            causes += _container_causes(where, container, volumes)
            name = container.get("name") or ""
            if name in seen:
                causes.append(Cause(f"{where}.name", "FieldValueDuplicate", f"Duplicate value: {name!r}"))
            seen.add(name)
    if spec.get("restartPolicy") not in (None, "Always", "OnFailure", "Never"):
        causes.append(Cause("spec.restartPolicy", "FieldValueNotSupported",
                            f'Unsupported value: {spec["restartPolicy"]!r}: supported values: "Always", "OnFailure", '
                            '"Never"'))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:
        causes.append(Cause("spec.activeDeadlineSeconds", "FieldValueInvalid",
                            f"Invalid value: {deadline}: must be between 1 and 2147483647, inclusive"))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and grace < 0:
        causes.append(Cause("spec.terminationGracePeriodSeconds", "FieldValueInvalid",
                            f"Invalid value: {grace}: must be greater than or equal to 0"))
    return causes


def _configmap_causes(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    total = 0
    for group in ("data", "binaryData"):
        for key, value in (obj.get(group) or {}).items():
            if len(key) > 253 or not CONFIGMAP_KEY.match(key):
                causes.append(Cause(f"{group}[{key}]", "FieldValueInvalid",
                                    f"Invalid value: {key!r}: a valid config key must consist of alphanumeric "
                                    "characters, '-', '_' or '.'"))
            total += len(key) + len(value or "")
    if total > 1024 * 1024:
        causes.append(Cause("", "FieldValueTooLong", "Too long: must have at most 1048576 bytes"))
    return causes


def _claim_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    if not spec.get("accessModes"):
        causes.append(Cause("spec.accessModes", "FieldValueRequired", "Required value: at least 1 access mode is "
                                                                      "required"))
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None:
        causes.append(Cause("spec.resources[storage]", "FieldValueRequired", "Required value"))
    else:
        try:
            if parse_quantity(storage) <= 0:
                causes.append(Cause("spec.resources[storage]", "FieldValueInvalid",
                                    f"Invalid value: {storage!r}: must be greater than zero"))
        except ValueError as exc:
            causes.append(Cause("spec.resources[storage]", "FieldValueInvalid", f"Invalid value: {storage!r}: {exc}"))
    return causes


PROTOCOLS = ("TCP", "UDP", "SCTP")


def _selector_causes(where: str, selector: Any) -> list[Cause]:
    """metav1.LabelSelector: valid keys and values, known operators with the values each needs."""
    if not isinstance(selector, dict):
        return []
    causes: list[Cause] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        if problem := qualified_key_problem(key):
            causes.append(Cause(f"{where}.matchLabels", "FieldValueInvalid", f"Invalid value: {key!r}: {problem}"))
        if len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(Cause(f"{where}.matchLabels", "FieldValueInvalid",
                                f"Invalid value: {value!r}: a valid label must be an empty string or consist of "
                                "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                                "alphanumeric character"))
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        path = f"{where}.matchExpressions[{index}]"
        operator, values = expression.get("operator"), expression.get("values") or []
        if problem := qualified_key_problem(expression.get("key") or ""):
            causes.append(Cause(f"{path}.key", "FieldValueInvalid", f"Invalid value: {expression.get('key')!r}: "
                                                                    f"{problem}"))
        if operator in ("In", "NotIn") and not values:
            causes.append(Cause(f"{path}.values", "FieldValueRequired",
                                "Required value: must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist") and values:
            causes.append(Cause(f"{path}.values", "FieldValueForbidden",
                                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        elif operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(Cause(f"{path}.operator", "FieldValueInvalid",
                                f"Invalid value: {operator!r}: not a valid selector operator"))
    return causes


def _network_policy_causes(obj: dict[str, Any]) -> list[Cause]:
    """networking/validation.ValidateNetworkPolicySpec: selectors, peers, ports, ipBlocks and policyTypes."""
    import ipaddress

    spec = obj.get("spec") or {}
    causes = _selector_causes("spec.podSelector", spec.get("podSelector"))
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for index, rule in enumerate(spec.get(direction) or []):
            where = f"spec.{direction}[{index}]"
            for number, port in enumerate(rule.get("ports") or []):
                path = f"{where}.ports[{number}]"
                if port.get("protocol", "TCP") not in PROTOCOLS:
                    causes.append(Cause(f"{path}.protocol", "FieldValueNotSupported",
                                        f'Unsupported value: {port.get("protocol")!r}: supported values: "SCTP", '
                                        '"TCP", "UDP"'))
                value = port.get("port")
                if isinstance(value, int) and not 0 < value < 65536:
                    causes.append(Cause(f"{path}.port", "FieldValueInvalid",
                                        f"Invalid value: {value}: must be between 1 and 65535, inclusive"))
                if port.get("endPort") is not None and not isinstance(value, int):
                    causes.append(Cause(f"{path}.endPort", "FieldValueInvalid",
                                        f"Invalid value: {port['endPort']}: may not be specified when `port` is "
                                        "non-numeric"))
            for number, peer in enumerate(rule.get(peers_key) or []):
                path = f"{where}.{peers_key}[{number}]"
                present = [key for key in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(key) is not None]
                if not present:
                    causes.append(Cause(path, "FieldValueRequired", "Required value: must specify a peer"))
                elif "ipBlock" in present and len(present) > 1:
                    causes.append(Cause(path, "FieldValueForbidden",
                                        "Forbidden: may not specify more than 1 peer type when ipBlock is specified"))
                for key in ("podSelector", "namespaceSelector"):
                    causes += _selector_causes(f"{path}.{key}", peer.get(key))
                block = peer.get("ipBlock")
                if not isinstance(block, dict):
                    continue
                try:
                    cidr = ipaddress.ip_network(str(block.get("cidr") or ""), strict=False)
                except ValueError:
                    causes.append(Cause(f"{path}.ipBlock.cidr", "FieldValueInvalid",
                                        f"Invalid value: {block.get('cidr')!r}: must be a valid CIDR value"))
                    continue
                for item, excepted in enumerate(block.get("except") or []):
                    try:
                        inner = ipaddress.ip_network(str(excepted), strict=False)
                    except ValueError:
                        causes.append(Cause(f"{path}.ipBlock.except[{item}]", "FieldValueInvalid",
                                            f"Invalid value: {excepted!r}: must be a valid CIDR value"))
                        continue
                    if inner.version != cidr.version or not inner.subnet_of(cidr) or inner == cidr:  # type: ignore[arg-type]
                        causes.append(Cause(f"{path}.ipBlock.except[{item}]", "FieldValueInvalid",
                                            f"Invalid value: {excepted!r}: must be a strict subset of `cidr`"))
    for index, kind in enumerate(spec.get("policyTypes") or []):
        if kind not in ("Ingress", "Egress"):
            causes.append(Cause(f"spec.policyTypes[{index}]", "FieldValueNotSupported",
                                f'Unsupported value: {kind!r}: supported values: "Egress", "Ingress"'))
    return causes


def validate_object(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Schema first (400), then semantics (422), as the real server orders decoding and validation."""
    if problem := schema_problem(obj):
        raise bad_request(problem) if problem.startswith("strict decoding") else invalid(
            rt, (obj.get("metadata") or {}).get("name", ""), [Cause("", "FieldValueInvalid", problem)])
    causes = _meta_causes(rt, obj)
    if rt.plural == "pods":
        causes += _pod_causes(obj)
    elif rt.plural in ("configmaps", "secrets"):
        causes += _configmap_causes(obj)
    elif rt.plural == "persistentvolumeclaims":
        causes += _claim_causes(obj)
    elif rt.plural == "networkpolicies":
        causes += _network_policy_causes(obj)
    if causes:
        raise invalid(rt, (obj.get("metadata") or {}).get("name", ""), causes)


# Pod fields a PUT may change once the pod exists (pod updates may not change anything else).
MUTABLE_POD_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def validate_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    name = new["metadata"]["name"]
    if rt.plural == "pods":
        def comparable(spec: dict[str, Any]) -> dict[str, Any]:
            spec = copy.deepcopy(spec)
            for key in MUTABLE_POD_SPEC:
                spec.pop(key, None)
            for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                container.pop("image", None)
            return spec

        if comparable(old.get("spec") or {}) != comparable(new.get("spec") or {}):
            raise invalid(rt, name, [Cause("spec", "FieldValueForbidden",
                                           "Forbidden: pod updates may not change fields other than "
                                           "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                                           "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to "
                                           "existing tolerations), `spec.terminationGracePeriodSeconds`")])
    if rt.plural == "persistentvolumeclaims":
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}

        def claim_spec(spec: dict[str, Any]) -> dict[str, Any]:
            spec = copy.deepcopy(spec)
            spec.pop("resources", None)  # expansion
            if not old_spec.get("volumeName"):
                spec.pop("volumeName", None)  # binding sets it, once
            return spec

        if claim_spec(old_spec) != claim_spec(new_spec):
            raise invalid(rt, name, [Cause("spec", "FieldValueForbidden",
                                           "Forbidden: spec is immutable after creation except resources.requests "
                                           "and volumeAttributesClassName for bound claims")])
    immutable_fields = ("data", "binaryData", "stringData", "immutable")
    if (rt.plural in ("configmaps", "secrets") and old.get("immutable")
            and any(old.get(key) != new.get(key) for key in immutable_fields)):
        raise invalid(rt, name, [Cause("data", "FieldValueForbidden",
                                       "Forbidden: field is immutable when `immutable` is set")])


# Tables (kubectl's server-side printing) --------------------------------------------------------
def _age(obj: dict[str, Any]) -> str:
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = int((datetime.datetime.now(datetime.UTC) - parse_rfc3339(created)).total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def _init_cell(pod: dict[str, Any]) -> str:
    """The STATUS of a pod still initializing, as kubectl's printPod words it ("" once it is not)."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    total = len((pod.get("spec") or {}).get("initContainers") or [])
    for index, status in enumerate(statuses):
        state = status.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if terminated is not None and terminated.get("exitCode") == 0:
            continue
        if terminated is not None:
            if terminated.get("reason"):
                return f"Init:{terminated['reason']}"
            if terminated.get("signal"):
                return f"Init:Signal:{terminated['signal']}"
            return f"Init:ExitCode:{terminated.get('exitCode')}"
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return f"Init:{waiting['reason']}"
        return f"Init:{index}/{total}"
    return ""


def _pod_cells(pod: dict[str, Any]) -> list[Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or [])
    phase = (pod.get("status") or {}).get("phase", "Pending")
    initializing = _init_cell(pod)
    if initializing:
        phase = initializing
    else:
        for status in statuses:
            waiting = (status.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason"):
                phase = waiting["reason"]
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses + ((pod.get("status") or {})
                                                                         .get("initContainerStatuses") or []))
    return [f"{ready}/{total}", phase, restarts, _age(pod)]


def table(rt: ResourceType, objects: list[dict[str, Any]], include: str, resource_version: str) -> dict[str, Any]:
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    if rt.plural == "pods":
        for name, kind in (("Ready", "string"), ("Status", "string"), ("Restarts", "integer"), ("Age", "string")):
            columns.append({"name": name, "type": kind, "format": "", "description": name, "priority": 0})
    elif rt.plural == "events":
        for name in ("Last Seen", "Type", "Reason", "Object", "Message"):
            columns.append({"name": name, "type": "string", "format": "", "description": name, "priority": 0})
    elif rt.plural == "configmaps":
        columns += [{"name": "Data", "type": "integer", "format": "", "description": "Data", "priority": 0},
                    {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}]
    else:
        columns.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
    rows = []
    for obj in objects:
        cells: list[Any] = [obj["metadata"]["name"]]
        if rt.plural == "pods":
            cells += _pod_cells(obj)
        elif rt.plural == "events":
            involved = obj.get("involvedObject") or {}
            cells += [_age(obj), obj.get("type", ""), obj.get("reason", ""),
                      f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", obj.get("message", "")]
        elif rt.plural == "configmaps":
            cells += [len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), _age(obj)]
        else:
            cells.append(_age(obj))
        row: dict[str, Any] = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}


def api_resource_list(group: str = "", version: str = "v1") -> dict[str, Any]:
    """What /api/v1 (group "") or /apis/<group>/<version> serves."""
    resources = []
    for rt in RESOURCES.values():
        if (rt.group, rt.version) != (group, version):
            continue
        resources.append({"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                          "kind": rt.kind, "verbs": list(rt.verbs), **({"shortNames": list(rt.short_names)}
                                                                       if rt.short_names else {})})
        for sub, verbs in rt.subresources.items():
            kind = {"exec": "PodExecOptions", "log": "Pod", "status": rt.kind}[sub]
            resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                              "kind": kind, "verbs": list(verbs)})
    if not group:  # the real /api/v1 has no apiVersion; group lists do
        return {"kind": "APIResourceList", "groupVersion": version, "resources": resources}
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}", "resources": resources}


def api_group(group: str) -> dict[str, Any]:
    """/apis/<group>: one group and the versions served (one here)."""
    versions = sorted({rt.version for rt in RESOURCES.values() if rt.group == group})
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(group) for group in GROUPS]}
