"""Kubernetes runner: each session is a bare Pod in a sessions namespace, owned by an anchor ConfigMap.

Per session (KubeSpawner's approach: objects created directly, no operator):
1. ConfigMap `lab-<session>`, the anchor, created first and holding the session's spec. Everything
   else has an ownerReference to it, so one foreground delete of the anchor removes the session.
2. Pod `lab-<session>`: no service account token, no service links, seccomp RuntimeDefault,
   requests = limits for CPU and memory, an ephemeral-storage limit from the lab's disk size,
   activeDeadlineSeconds as a backstop, container `main` (no privilege escalation, capabilities
   dropped but for the few the Docker runner keeps, a startup probe) and, when `agent_image` is
   set, a trusted container `agent` that reads the shared workspace for the judge.
Labels: app.kubernetes.io/managed-by, labs.managed-by (the instance), labs.session, labs.lab,
labs.user, labs.network-mode; values cut to 63 characters, the raw ones in annotations. The
chart's NetworkPolicies select pods by labs.network-mode; the runner only sets the label.

OPTIONS (all optional):
    kubeconfig        path of a kubeconfig (default: the in-cluster service account; never ~/.kube/config)
    context           kubeconfig context
    namespace         where sessions live ("labs-sessions")
    instance          value of the labs.managed-by label ("labs")
    image_pull_policy the pods' imagePullPolicy ("IfNotPresent")
    image_pull_secrets names of Secrets for private registries
    node_selector, tolerations, runtime_class_name, service_account: copied into the pod spec
                      (the service account's token is never mounted)
    extra_labels, extra_annotations: added to every object
    cap_add           capabilities kept after dropping all (the Docker runner's default set)
    agent_image       image of the trusted `agent` container (none: the judge reads through `main`)
    active_deadline_seconds  the pod's backstop lifetime (43200)
    endpoint_mode     "pod-ip" (the platform runs in the cluster and reaches pod IPs), or "proxy" (it runs
                      outside: loopback forwarders through the API server's pods/proxy, runners/k8s_forward.py)
    api_timeout       seconds for one API call (30)
    dind              where Docker-in-Docker labs (docker_access) may run; without it they are refused at
                      start and no pod ever gets more than baseline. {"namespace": a namespace whose Pod
                      Security admits the engine (labs-privileged), and/or "runtime_class_name": a runtime
                      for it (sysbox-runc), "image": the engine ("labs/dind:bookworm", the Docker runner's),
                      "mode": "rootless" (default), "privileged" or "root" (see _engine_container),
                      "tun_resource": a device plugin resource giving /dev/net/tun (default: hostPath)}.
                      The pod gets an engine container `docker` beside `main`; main reaches it at
                      DOCKER_HOST=unix:///run/labs-docker/docker.sock
    home_storage_class  a StorageClass: each user's workspace is then a PersistentVolumeClaim
                      `home-<instance>-<user id>` (label labs.role=home, owned by no session) that later
                      sessions of the same user mount again; remove_home(user_id) deletes it
    home_size         the size of such a claim ("1Gi")
    home_access_mode  its access mode ("ReadWriteOnce": two sessions of one user must share a node)

Exec (judge, step scripts, files, terminals) goes over the pods/exec WebSocket (v5.channel.k8s.io,
v4 as a fallback). Exec cannot send signals, so every command runs under `timeout -s KILL`.
Not enforced here: the pids limit (Kubernetes has no per-pod limit yet; start() says so).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import os
import posixpath
import re
import selectors
import socket
import ssl
import tarfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runners.base import (
    VM_IMAGE_KINDS,
    Endpoint,
    ExecResult,
    FileEntry,
    FileStat,
    ManagedEnvironment,
    PlacedFile,
    PollStatus,
    ProgressCallback,
    Runner,
    RunnerError,
    RunnerStats,
    SessionSpec,
    StartResult,
    clean_workspace_path,
    no_progress,
)
from runners.session_shell import (
    CONFINE,
    DEFAULT_CAPS,
    KEEPALIVE,
    LIST_SCRIPT,
    OOM_FIRST,
    WRITE_SCRIPT,
    parse_listing,
    read_script,
    terminal_shell,
    tmux_probe,
)

log = logging.getLogger(__name__)

LABEL_APP_MANAGED = "app.kubernetes.io/managed-by"
LABEL_MANAGED = "labs.managed-by"
LABEL_SESSION = "labs.session"
LABEL_LAB = "labs.lab"
LABEL_USER = "labs.user"
LABEL_NETWORK = "labs.network-mode"
ANNOTATION_PREFIX = "labs.platform/"  # raw values of the labels, uncut, and the username
MANAGED_BY = "browser-labs"
MAIN, AGENT = "main", "agent"
WORKSPACE_VOLUME = "workspace"
HOSTNAME = "lab"  # the Docker runner's hostname, so labs read the same on both
STARTER_MARKER = "/run/labs-starter-copied"
MAX_OUTPUT = 4 * 1024 * 1024
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
# Container waiting reasons that no amount of waiting fixes: the session fails at once.
PERMANENT_WAITING = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                     "CreateContainerConfigError"}
LABEL_VALUE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(raw: str) -> str:
    """A valid label value (at most 63 characters, alphanumeric at both ends) from any string."""
    value = LABEL_VALUE_CHARS.sub("-", raw)[:63]
    return value.strip("-_.")


def object_name(session_id: str) -> str:
    """`lab-<session>`, a DNS-1123 label (it is also the pod's name); long or odd ids are hashed."""
    name = "lab-" + re.sub(r"[^a-z0-9-]", "-", session_id.lower()).strip("-")
    if len(name) > 63 or name != "lab-" + session_id:
        name = name[:50].rstrip("-") + "-" + hashlib.sha256(session_id.encode()).hexdigest()[:12]
    return name


def is_pod_ready(pod: dict[str, Any]) -> bool:
    """KubeSpawner's is_pod_running: phase Running, an IP, not terminating, every container ready."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    return (status.get("phase") == "Running" and bool(status.get("podIP"))
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and bool(statuses) and all(item.get("ready") for item in statuses))


def permanent_failure(pod: dict[str, Any]) -> str:
    """Why a starting pod will never run ("" while it still may)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"the session's pod stopped ({status.get('reason') or status.get('phase')}: " \
               f"{status.get('message') or 'its container exited'})"
    for item in status.get("containerStatuses") or []:
        waiting = (item.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in PERMANENT_WAITING:
            return f"{item.get('name')}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
        if waiting.get("reason") == "CrashLoopBackOff":
            return f"{item.get('name')} keeps crashing: {waiting.get('message') or ''}".rstrip(": ")
    return ""


def progress_of(pod: dict[str, Any]) -> str:
    """A short, learner-readable step from the pod's conditions and container states."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return "Waiting for room in the cluster"
    for item in status.get("containerStatuses") or []:
        waiting = (item.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "ContainerCreating":
            return "Creating container"
    if status.get("phase") == "Running":
        return "Container started; waiting for it to be ready"
    if (pod.get("spec") or {}).get("nodeName"):
        return "Scheduled"
    return "Waiting for a node"


EVENT_TEXT = {
    "Scheduled": "Scheduled on a node",
    "Pulling": "Pulling the image",
    "Pulled": "Image ready",
    "Created": "Container created",
    "Started": "Container started",
}


def event_progress(event: dict[str, Any]) -> str:
    reason = str(event.get("reason") or "")
    if reason in EVENT_TEXT:
        return EVENT_TEXT[reason]
    if reason == "FailedScheduling":
        return f"Waiting for room in the cluster: {event.get('message', '')}".strip()
    if event.get("type") == "Warning":
        return f"{reason}: {event.get('message', '')}"
    return ""


# Docker-in-Docker: the engine container beside `main` (see _engine_container) -----------------------------
ENGINE = "docker"
DEFAULT_ENGINE_IMAGE = "labs/dind:bookworm"  # the Docker runner's engine image (its engine_image default)
ENGINE_SOCKET_DIR = "/run/labs-docker"  # where the Docker runner's sessions find their engine too
ENGINE_HOST = f"unix://{ENGINE_SOCKET_DIR}/docker.sock"
ENGINE_READY = "/run/dind-ready"  # labs/dind's entrypoint writes it once its root dockerd answers
ROOTLESS_ENGINE_READY = f"{ENGINE_SOCKET_DIR}/ready"  # ... and this once its rootless dockerd does
ROOTLESS_DATA_VOLUME = "/var/lib/labs-engine"
ROOTLESS_UID = 1000  # labs/dind's learner, who owns the rootless engine
DIND_ENGINE_MODES = ("rootless", "privileged", "root")
TUN_VOLUME, TUN_DEVICE = "dev-net-tun", "/dev/net/tun"
ENGINE_SOCKET_VOLUME, ENGINE_DATA_VOLUME = "docker-socket", "docker-data"
# Persistent homes: one PersistentVolumeClaim per user (see home_manifest).
LABEL_ROLE = "labs.role"
HOME_ROLE = "home"
# stats: CPU use of main's cgroup over $1 seconds (usage in microseconds, then /proc/uptime's seconds),
# then memory in use, its limit and the number of processes.
STATS_INTERVAL = 0.5
STATS_SCRIPT = (
    "d=/sys/fs/cgroup; "
    "cpu() { if [ -e $d/cpu.stat ]; then sed -n 's/^usage_usec //p' $d/cpu.stat; "
    "elif [ -e $d/cpuacct/cpuacct.usage ]; then echo $(( $(cat $d/cpuacct/cpuacct.usage) / 1000 )); "
    "else echo 0; fi; }; "
    "up() { cut -d' ' -f1 /proc/uptime; }; "
    'c1=$(cpu); u1=$(up); sleep "$1"; c2=$(cpu); u2=$(up); '
    "if [ -e $d/memory.current ]; then m=$(cat $d/memory.current); l=$(cat $d/memory.max); "
    "p=$(cat $d/pids.current 2>/dev/null); "
    "else m=$(cat $d/memory/memory.usage_in_bytes); l=$(cat $d/memory/memory.limit_in_bytes); "
    "p=$(cat $d/pids/pids.current 2>/dev/null); fi; "
    'echo "$c1 $u1 $c2 $u2 $m $l ${p:-0}"'
)


class KubernetesRunner(Runner):
    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(name, options)
        self.instance = str(self.options.get("instance", "labs"))
        self.namespace = str(self.options.get("namespace", "labs-sessions"))
        self.api_timeout = float(self.options.get("api_timeout", 30))
        self._api_client: Any = None
        self._lock = threading.Lock()
        self._exec_protocol: str | None = None  # learned from the first exec
        self._forwarder: Any = None  # endpoint_mode "proxy": runners/k8s_forward.py, made on first use

    # the API ----------------------------------------------------------------------------------------
    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @property
    def api_client(self) -> Any:
        from kubernetes import client, config

        with self._lock:
            if self._api_client is None:
                if not self.configured():
                    raise RunnerError("the Kubernetes runner is not configured: set its kubeconfig option, or run "
                                      "the platform in the cluster", permanent=True)
                try:
                    if self.options.get("kubeconfig"):
                        self._api_client = config.new_client_from_config(
                            config_file=str(self.options["kubeconfig"]), context=self.options.get("context"))
                    else:
                        configuration = client.Configuration()
                        config.load_incluster_config(client_configuration=configuration)
                        self._api_client = client.ApiClient(configuration)
                except (config.ConfigException, OSError, ValueError) as exc:
                    raise RunnerError(f"Kubernetes API not configured: {exc}", permanent=True) from exc
            return self._api_client

    def call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call, its errors turned into RunnerError with the API server's own words."""
        kwargs.setdefault("_request_timeout", self.api_timeout)
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            raise self._translate(what, exc) from exc

    def _translate(self, what: str, exc: Exception) -> RunnerError:
        from kubernetes.client import ApiException

        if isinstance(exc, RunnerError):
            return exc
        if isinstance(exc, ApiException):
            code, reason, message = _status_of(exc)
            # 403 (RBAC, or a quota), 422 (an invalid object), 400 and 404 do not get better by retrying.
            permanent = code in (400, 403, 404, 409, 410, 422)
            return RunnerError(f"{what}: {message or reason or code}", permanent=permanent)
        return RunnerError(f"{what}: Kubernetes API unreachable ({type(exc).__name__}: {exc})")

    def configured(self) -> bool:
        """A kubeconfig named in the options, or the service account of a pod in the cluster. Never
        ~/.kube/config by accident: an operator's own credentials must not become the platform's."""
        return bool(self.options.get("kubeconfig")) or bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    def preload(self) -> None:
        if not self.configured():
            return
        # The client's API and model modules take a second or more to import (CoreV1Api alone is
        # tens of thousands of lines); a worker that forks per job would pay it in every start.
        import kubernetes.client  # every API and model module
        import kubernetes.stream
        import kubernetes.watch  # noqa: F401

    def available(self) -> bool:
        from kubernetes import client

        if not self.configured():
            return False
        try:
            client.CoreApi(self.api_client).get_api_versions(_request_timeout=5)
        except Exception:
            return False
        return True

    # naming ------------------------------------------------------------------------------------------
    def labels_for(self, spec: SessionSpec) -> dict[str, str]:
        labels = {str(k): str(v) for k, v in (self.options.get("extra_labels") or {}).items()}
        labels.update({
            LABEL_APP_MANAGED: MANAGED_BY,
            LABEL_MANAGED: label_value(self.instance),
            LABEL_SESSION: label_value(spec.session_id),
            LABEL_LAB: label_value(spec.lab_slug),
            LABEL_USER: label_value(str(spec.user_id)),
            LABEL_NETWORK: label_value(spec.network_mode),
        })
        return labels

    def annotations_for(self, spec: SessionSpec) -> dict[str, str]:
        annotations = {str(k): str(v) for k, v in (self.options.get("extra_annotations") or {}).items()}
        annotations.update({f"{ANNOTATION_PREFIX}session": spec.session_id, f"{ANNOTATION_PREFIX}lab": spec.lab_slug,
                            f"{ANNOTATION_PREFIX}username": spec.username,
                            f"{ANNOTATION_PREFIX}instance": self.instance})
        return annotations

    def anchor_manifest(self, spec: SessionSpec) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": object_name(spec.session_id), "labels": self.labels_for(spec),
                             "annotations": self.annotations_for(spec)},
                "data": {"spec.json": json.dumps(asdict(spec), sort_keys=True)}}

    def pod_manifest(self, spec: SessionSpec, anchor: dict[str, Any]) -> dict[str, Any]:
        cpu = f"{max(1, round(spec.cpu * 1000))}m"
        memory = f"{int(spec.memory_mb)}Mi"
        storage = f"{int(spec.disk_mb)}Mi"
        main: dict[str, Any] = {
            "name": MAIN, "image": spec.image,
            "imagePullPolicy": str(self.options.get("image_pull_policy", "IfNotPresent")),
            "command": KEEPALIVE, "workingDir": self.workspace,
            "env": [{"name": "LAB_SESSION", "value": spec.session_id}, {"name": "TERM", "value": "xterm-256color"}],
            "resources": {"requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage},
                          "limits": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage}},
            # Root in the container with the Docker runner's few capabilities, as on Docker: the platform
            # places files and runs step scripts as root, shells and learner commands switch to the lab's
            # user with su (exec has no user option). Without runAsUser the image's USER would apply.
            "securityContext": {"allowPrivilegeEscalation": False, "runAsUser": 0, "runAsGroup": 0,
                                "capabilities": {"drop": ["ALL"],
                                                 "add": list(self.options.get("cap_add", DEFAULT_CAPS))}},
            "startupProbe": {"exec": {"command": ["/bin/sh", "-c", "true"]}, "periodSeconds": 1,
                             "failureThreshold": 60, "timeoutSeconds": 5},
            "volumeMounts": [{"name": WORKSPACE_VOLUME, "mountPath": self.workspace}],
        }
        if spec.exposed_ports:
            main["ports"] = [{"containerPort": int(port), "protocol": "TCP"} for port in spec.exposed_ports]
        containers = [main]
        if spec.docker_access:
            dind = self._dind()
            main["env"].append({"name": "DOCKER_HOST", "value": ENGINE_HOST})
            main["volumeMounts"].append({"name": ENGINE_SOCKET_VOLUME, "mountPath": ENGINE_SOCKET_DIR})
            containers.append(self._engine_container(spec, dind))
        if self.options.get("agent_image"):
            containers.append({
                "name": AGENT, "image": str(self.options["agent_image"]),
                "imagePullPolicy": str(self.options.get("image_pull_policy", "IfNotPresent")),
                "command": KEEPALIVE,
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "100m", "memory": "32Mi", "ephemeral-storage": "16Mi"}},
                # Root with DAC_OVERRIDE (allowed by Pod Security baseline) reads every file of the
                # workspace, whoever owns it and whatever the image's USER; the mount is read-only.
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsUser": 0, "runAsGroup": 0,
                                    "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}},
                "volumeMounts": [{"name": WORKSPACE_VOLUME, "mountPath": self.workspace, "readOnly": True}],
            })
        pod_spec: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostname": HOSTNAME,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "activeDeadlineSeconds": int(self.options.get("active_deadline_seconds", 43200)),
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": containers,
            "volumes": [{"name": WORKSPACE_VOLUME, "emptyDir": {"sizeLimit": storage}}],
        }
        if self.options.get("home_storage_class"):
            pod_spec["volumes"] = [{"name": WORKSPACE_VOLUME,
                                    "persistentVolumeClaim": {"claimName": self.home_claim_name(spec.user_id)}}]
        if spec.docker_access:
            pod_spec["volumes"] += [
                {"name": ENGINE_SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": ENGINE_DATA_VOLUME, "emptyDir": {"sizeLimit": storage}}]
            if self._dind()["mode"] == "rootless" and not self._dind()["tun_resource"]:
                pod_spec["volumes"].append({"name": TUN_VOLUME, "hostPath": {"path": TUN_DEVICE,
                                                                             "type": "CharDevice"}})
        for option, key in (("node_selector", "nodeSelector"), ("tolerations", "tolerations"),
                            ("runtime_class_name", "runtimeClassName"), ("service_account", "serviceAccountName")):
            if self.options.get(option):
                pod_spec[key] = self.options[option]
        if spec.docker_access and self._dind()["runtime_class_name"]:
            pod_spec["runtimeClassName"] = self._dind()["runtime_class_name"]
        if self.options.get("image_pull_secrets"):
            pod_spec["imagePullSecrets"] = [{"name": str(n)} for n in self.options["image_pull_secrets"]]
        meta = anchor["metadata"]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": object_name(spec.session_id), "labels": self.labels_for(spec),
                             "annotations": self.annotations_for(spec),
                             "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"],
                                                  "uid": meta["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": pod_spec}

    # start -------------------------------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        if spec.image_kind in VM_IMAGE_KINDS:
            raise RunnerError("VM labs do not run on the Kubernetes runner yet", permanent=True)
        if len(spec.hosts) > 1:
            raise RunnerError("labs with several hosts do not run on the Kubernetes runner yet", permanent=True)
        # Docker-in-Docker only where the operator said privileged engines may run (refused before any
        # object exists otherwise); such sessions may live in a namespace of their own.
        namespace = self._dind()["namespace"] if spec.docker_access else self.namespace
        runner = self if namespace == self.namespace else self._in_namespace(namespace)
        deadline = time.monotonic() + timeout
        try:
            return runner._start(spec, progress, deadline, timeout)
        except BaseException:
            # Nothing half-made stays behind: the anchor's foreground delete takes the pod with it (a
            # user's home claim is no part of the session and stays).
            try:
                runner._delete_anchor(object_name(spec.session_id))
            except RunnerError as exc:
                log.warning("cleaning up after the failed start of %s: %s", spec.session_id, exc)
            raise

    def _start(self, spec: SessionSpec, progress: ProgressCallback, deadline: float, timeout: float) -> StartResult:
        progress(f"Note: the process limit of {spec.pids_limit} is not enforced on Kubernetes")
        if self.options.get("home_storage_class"):
            progress("Preparing your home directory")
            self._ensure_home(spec, deadline)
        progress("Creating the session's pod")
        anchor = self._ensure(spec, "configmaps", lambda: self.anchor_manifest(spec), deadline)
        pod = self._ensure(spec, "pods", lambda: self.pod_manifest(spec, anchor), deadline, owner=anchor)
        pod = self._wait_until_ready(pod, progress, deadline, timeout)
        name = pod["metadata"]["name"]
        state: dict[str, Any] = {"namespace": self.namespace, "pod": name, "uid": pod["metadata"]["uid"],
                                 "anchor": anchor["metadata"]["name"], "user": spec.shell_user,
                                 "agent": bool(self.options.get("agent_image"))}
        if self.options.get("home_storage_class"):
            state["home"] = self.home_claim_name(spec.user_id)
        if spec.docker_access:
            state["docker_access"] = True
        if spec.starter_dir:
            marker = self.exec(state, ["test", "-e", STARTER_MARKER], timeout=10)
            if marker.exit_code != 0:
                progress("Copying starter files")
                self._copy_starter(state, spec.starter_dir)
        progress("Container ready")
        ip = pod["status"]["podIP"]
        endpoints: dict[str, Any] = {"host": ip}
        if "vnc" in spec.consoles:
            endpoints["vnc"] = {"host": ip, "port": int(self.options.get("vnc_port", 5900))}
        return StartResult(state=state, endpoints=endpoints)

    def _ensure(self, spec: SessionSpec, plural: str, manifest: Any, deadline: float,
                owner: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the object, or adopt the one an earlier start made; a terminating one is waited out."""
        from kubernetes.client import ApiException

        kind = "pod" if plural == "pods" else "anchor ConfigMap"
        create = getattr(self.core, "create_namespaced_pod" if plural == "pods" else
                         "create_namespaced_config_map")
        name = object_name(spec.session_id)
        while True:
            try:
                created = create(self.namespace, manifest(), _request_timeout=self.api_timeout)
                return self.api_client.sanitize_for_serialization(created)  # type: ignore[no-any-return]
            except ApiException as exc:
                if exc.status != 409:
                    raise self._translate(f"creating the session's {kind}", exc) from exc
            existing = self._read(plural, name)
            if existing is None:
                continue  # deleted meanwhile: create again
            meta = existing["metadata"]
            owned = owner is None or any(ref.get("uid") == owner["metadata"]["uid"]
                                         for ref in meta.get("ownerReferences") or [])
            if not meta.get("deletionTimestamp") and owned:
                return existing
            if not meta.get("deletionTimestamp"):
                # Left by an anchor that is gone: it would be collected; remove it now.
                self._delete(plural, name, grace=0)
            self._wait_gone(plural, name, deadline)

    def _read(self, plural: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client import ApiException

        read = {"pods": self.core.read_namespaced_pod, "configmaps": self.core.read_namespaced_config_map,
                "persistentvolumeclaims": self.core.read_namespaced_persistent_volume_claim}[plural]
        try:
            found = read(name, self.namespace, _request_timeout=self.api_timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._translate(f"reading {plural} {name}", exc) from exc
        except Exception as exc:
            raise self._translate(f"reading {plural} {name}", exc) from exc
        return self.api_client.sanitize_for_serialization(found)  # type: ignore[no-any-return]

    def _wait_gone(self, plural: str, name: str, deadline: float) -> None:
        if not self._wait_deleted(plural, name, deadline):
            raise RunnerError(f"the session's previous {plural[:-1]} is still being deleted")

    def _wait_deleted(self, plural: str, name: str, deadline: float) -> bool:
        """Whether the object is gone by the deadline: one list, then a watch until its DELETED event
        (relisting on 410 Gone), never a read every few hundred milliseconds."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        listing = getattr(self.core, "list_namespaced_pod" if plural == "pods" else "list_namespaced_config_map")
        selector = f"metadata.name={name}"
        found = self.call(f"waiting for the session's {plural[:-1]} to go", listing, self.namespace,
                          field_selector=selector)
        version = found.metadata.resource_version
        while found.items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                for event in watch.Watch().stream(listing, self.namespace, field_selector=selector,
                                                  resource_version=version,
                                                  timeout_seconds=max(1, math.ceil(min(remaining, 30))),
                                                  _request_timeout=self.api_timeout + 30):
                    if event["type"] == "DELETED":
                        return True
                    version = event["object"].metadata.resource_version
                return False if time.monotonic() >= deadline else self._wait_deleted(plural, name, deadline)
            except ApiException as exc:
                if exc.status != 410:
                    raise self._translate(f"waiting for the session's {plural[:-1]} to go", exc) from exc
                found = self.call(f"waiting for the session's {plural[:-1]} to go", listing, self.namespace,
                                  field_selector=selector)
                version = found.metadata.resource_version
        return True

    def _wait_until_ready(self, pod: dict[str, Any], progress: ProgressCallback, deadline: float,
                          timeout: float) -> dict[str, Any]:
        """Watch the pod by name (relisting on 410 Gone) and report its steps, until it is ready."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        reported: set[str] = set()
        last = ""
        version = pod["metadata"]["resourceVersion"]

        def report(message: str) -> None:
            nonlocal last
            if message and message != last:
                last = message
                progress(message)

        events_listed = 0.0

        def check(current: dict[str, Any]) -> bool:
            # Events are listed at most once a second while the pod changes (a start brings half a
            # dozen changes in well under a second, and a real API server scans the namespace's
            # Events for each list), and once more at the end so the last steps are shown.
            nonlocal events_listed
            failure, ready = permanent_failure(current), is_pod_ready(current)
            if failure or ready or time.monotonic() - events_listed >= 1.0:
                events_listed = time.monotonic()
                self._report_events(uid, reported, report)
            if failure:
                raise RunnerError(failure, permanent=True)
            if ready:
                return True
            report(progress_of(current))
            return False

        if check(pod):
            return pod
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunnerError(f"the session's pod was not ready after {timeout:g} s ({last or 'no progress'})")
            stream = watch.Watch()
            try:
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace,
                                           field_selector=f"metadata.name={name}", resource_version=version,
                                           timeout_seconds=max(1, min(5, math.ceil(remaining))),
                                           _request_timeout=self.api_timeout + 5):
                    current = self.api_client.sanitize_for_serialization(event["object"])
                    if current["metadata"]["uid"] != uid:
                        continue
                    version = current["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        raise RunnerError("the session's pod was deleted while it started")
                    if check(current):
                        stream.stop()
                        return current
            except ApiException as exc:
                if exc.status != 410:
                    raise self._translate("watching the session's pod", exc) from exc
                # Our version is too old for the watch cache: relist and watch on from there.
                listed = self.call("listing the session's pod", self.core.list_namespaced_pod, self.namespace,
                                   field_selector=f"metadata.name={name}")
                version = listed.metadata.resource_version
                items = [self.api_client.sanitize_for_serialization(p) for p in listed.items]
                current = next((p for p in items if p["metadata"]["uid"] == uid), None)
                if current is None:
                    raise RunnerError("the session's pod was deleted while it started") from exc
                if check(current):
                    return current  # type: ignore[no-any-return]
            except RunnerError:
                raise
            except Exception as exc:
                raise self._translate("watching the session's pod", exc) from exc
            # A quiet window: Events may have come without a pod change.
            self._report_events(uid, reported, report)

    def _report_events(self, uid: str, reported: set[str], report: Any) -> None:
        events = self.call("reading the pod's events", self.core.list_namespaced_event, self.namespace,
                           field_selector=f"involvedObject.uid={uid}")
        for event in events.items:
            if event.metadata.name in reported:
                continue
            reported.add(event.metadata.name)
            report(event_progress({"reason": event.reason, "message": event.message, "type": event.type}))

    def _copy_starter(self, state: dict[str, Any], starter_dir: str) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for entry in sorted(Path(starter_dir).rglob("*")):
                if entry.is_symlink():
                    raise RunnerError(f"starter file {entry.relative_to(starter_dir)} is a symlink; lab files "
                                      "must be plain files and directories", permanent=True)
                archive.add(str(entry), arcname=str(entry.relative_to(starter_dir)), recursive=False)
        user = state.get("user") or ""
        owner = 'chown -R "$2" "$1" && ' if user and user != "root" else ""
        # Images without /run (busybox) get it; a failed chown fails the start (the learner could
        # not write their own files).
        unpack = 'tar -x -f - -C "$1"'
        if state.get("home"):
            # A persistent home already holds the learner's work: starter files only fill in what is
            # missing, never replace a file the learner has (a later session of the lab, or another lab).
            unpack = ('t=$(mktemp -d) && tar -x -f - -C "$t" && (cd "$t" && '
                      'find . -type d | while IFS= read -r d; do mkdir -p "$1/$d" || exit 1; done && '
                      'find . ! -type d | while IFS= read -r f; do [ -e "$1/$f" ] || [ -L "$1/$f" ] || '
                      'cp -p "$f" "$1/$f" || exit 1; done); r=$?; rm -rf "$t"; [ "$r" = 0 ]')
        script = f'{unpack} && {owner}mkdir -p "$(dirname "$3")" && touch "$3"'
        result = self.exec(state, ["sh", "-c", script, "labs-starter", self.workspace, user, STARTER_MARKER],
                           stdin=buffer.getvalue(), timeout=60, user="root")
        if not result.ok:
            raise RunnerError(f"copying starter files: {result.stderr.decode(errors='replace').strip()[-300:]}")

    # stop and supervision ------------------------------------------------------------------------------
    def _delete(self, plural: str, name: str, *, grace: int | None = None, policy: str | None = None) -> None:
        from kubernetes import client
        from kubernetes.client import ApiException

        delete = self.core.delete_namespaced_pod if plural == "pods" else self.core.delete_namespaced_config_map
        body = client.V1DeleteOptions(grace_period_seconds=grace, propagation_policy=policy)
        try:
            delete(name, self.namespace, body=body, _request_timeout=self.api_timeout)
        except ApiException as exc:
            if exc.status != 404:  # already gone counts as done
                raise self._translate(f"deleting {plural} {name}", exc) from exc
        except Exception as exc:
            raise self._translate(f"deleting {plural} {name}", exc) from exc

    def _delete_anchor(self, name: str) -> None:
        self._delete("configmaps", name, policy="Foreground")

    def stop(self, state: dict[str, Any], timeout: float = 10.0) -> None:
        if state.get("namespace", self.namespace) != self.namespace:
            return self._in_namespace(state["namespace"]).stop(state, timeout)
        pod, anchor = state.get("pod"), state.get("anchor")
        if self._forwarder is not None and pod:
            self._forwarder.close_pod(pod)  # its loopback listeners go with it
        grace = max(0, math.ceil(timeout))
        if pod:
            self._delete("pods", pod, grace=grace)
        if anchor:
            self._delete_anchor(anchor)
        # Wait for the pod to go, so a stopped session's resources are really free. The anchor's
        # foreground deletion ends only after the pod it owns is gone: watching it is enough.
        deadline = time.monotonic() + timeout + 15
        if anchor:
            self._wait_deleted("configmaps", anchor, deadline)
        elif pod:
            self._wait_deleted("pods", pod, deadline)

    def poll(self, state: dict[str, Any]) -> PollStatus:
        if state.get("namespace", self.namespace) != self.namespace:
            return self._in_namespace(state["namespace"]).poll(state)
        pod = self._read("pods", state.get("pod", ""))
        if pod is None or (state.get("uid") and pod["metadata"]["uid"] != state["uid"]):
            return PollStatus.MISSING
        if pod["metadata"].get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
            return PollStatus.STOPPED
        return PollStatus.RUNNING

    def list_managed(self) -> list[ManagedEnvironment]:
        found = self._list_managed_here()
        for namespace in self._other_namespaces():
            found += self._in_namespace(namespace)._list_managed_here()
        return found

    def _other_namespaces(self) -> list[str]:
        """Namespaces besides the runner's own where its sessions may live (the DinD one)."""
        dind = self.options.get("dind")
        other = str(dind.get("namespace") or "") if isinstance(dind, dict) else ""
        return [other] if other and other != self.namespace else []

    def _list_managed_here(self) -> list[ManagedEnvironment]:
        selector = f"{LABEL_MANAGED}={label_value(self.instance)}"
        anchors = self.call("listing sessions", self.core.list_namespaced_config_map, self.namespace,
                            label_selector=selector)
        pods = self.call("listing sessions", self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        pods_by_session = {}
        for pod in pods.items:
            pods_by_session[(pod.metadata.labels or {}).get(LABEL_SESSION, "")] = pod
        found = []
        for anchor in anchors.items:
            session = (anchor.metadata.annotations or {}).get(f"{ANNOTATION_PREFIX}session") or \
                (anchor.metadata.labels or {}).get(LABEL_SESSION, "")
            pod = pods_by_session.pop((anchor.metadata.labels or {}).get(LABEL_SESSION, ""), None)
            running = pod is not None and pod.status is not None and pod.status.phase == "Running"
            found.append(ManagedEnvironment(session, f"configmap:{anchor.metadata.name}", running,
                                            {"name": anchor.metadata.name, "namespace": self.namespace,
                                             "pod": pod.metadata.name if pod is not None else ""}))
        for label, pod in pods_by_session.items():  # a pod whose anchor is gone (the GC will get it too)
            session = (pod.metadata.annotations or {}).get(f"{ANNOTATION_PREFIX}session") or label
            found.append(ManagedEnvironment(session, f"pod:{pod.metadata.name}",
                                            pod.status is not None and pod.status.phase == "Running",
                                            {"name": pod.metadata.name, "namespace": self.namespace}))
        return found

    def remove_managed(self, env: ManagedEnvironment) -> None:
        if env.detail.get("namespace", self.namespace) != self.namespace:
            return self._in_namespace(env.detail["namespace"]).remove_managed(env)
        kind, _, name = env.ref.partition(":")
        plural = "pods" if kind == "pod" else "configmaps"
        if kind == "pod":
            self._delete("pods", name, grace=0)
        else:
            self._delete_anchor(name)
        self._wait_gone(plural, name, time.monotonic() + 30)

    def remove_all_managed(self) -> None:
        """Staff's "stop all": one deletecollection per kind on this instance's label."""
        from kubernetes import client

        selector = f"{LABEL_MANAGED}={label_value(self.instance)}"
        body = client.V1DeleteOptions(propagation_policy="Foreground")
        self.call("stopping all sessions", self.core.delete_collection_namespaced_config_map, self.namespace,
                  label_selector=selector, body=body)
        self.call("stopping all sessions", self.core.delete_collection_namespaced_pod, self.namespace,
                  label_selector=selector, body=client.V1DeleteOptions(grace_period_seconds=5))
        for namespace in self._other_namespaces():
            self._in_namespace(namespace).remove_all_managed()

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        """From `main`'s own cgroup (v2, or v1's cpuacct/memory/pids): memory and pids now, CPU as the
        usage over STATS_INTERVAL seconds (100 = one core busy, as `docker stats` counts). The API has
        no cheaper source the runner's Role may read (metrics.k8s.io lags by a scrape period)."""
        result = self.exec(state, ["sh", "-c", STATS_SCRIPT, "labs-stats", str(STATS_INTERVAL)], timeout=10)
        values = result.stdout.decode(errors="replace").split()
        try:
            cpu_before, up_before, cpu_after, up_after = (float(v) for v in values[:4])
            used = int(values[4])
            limit = int(values[5]) if values[5].isdigit() else 0
            pids = int(values[6]) if values[6].isdigit() else 0
        except (IndexError, ValueError) as exc:
            why = result.stderr.decode(errors="replace").strip()[-200:]
            raise RunnerError(f"cannot read the session's resource use ({why})") from exc
        elapsed = up_after - up_before
        percent = (cpu_after - cpu_before) / (elapsed * 1e6) * 100.0 if elapsed > 0 else 0.0
        # cgroup v1 reports "no limit" as a huge number; the pod's limit is what applies then.
        return RunnerStats(cpu_percent=round(max(0.0, percent), 2), memory_bytes=used,
                           memory_limit_bytes=limit if limit < 1 << 62 else 0, pids=pids)

    # lab files outside the workspace -------------------------------------------------------------------
    def place_files(self, state: dict[str, Any], files: list[PlacedFile], host: str = "") -> None:
        """One tar archive (owner root, each file's mode) unpacked by root in `main` over exec; parent
        directories are made as needed, existing files replaced, as the Docker runner's archive upload
        does. Exec runs the container's own tar, so this is for a lab's assets at start, before the
        learner could have replaced it; an image whose user is not root cannot take files there."""
        if host:
            raise RunnerError(f"this session has no host named {host!r}", permanent=True)
        if not files:
            return
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for placed in files:
                path = posixpath.normpath(placed.path)
                if not placed.path.startswith("/") or path == "/" or "\x00" in path:
                    raise RunnerError(f"{placed.path!r} is not an absolute file path", permanent=True)
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(placed.data), placed.mode & 0o7777, int(time.time())
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                archive.addfile(info, io.BytesIO(placed.data))
        result = self.exec(state, ["tar", "-x", "--numeric-owner", "-f", "-", "-C", "/"], stdin=buffer.getvalue(),
                           timeout=60, user="root", workdir="/")
        if not result.ok:
            reason = result.stderr.decode(errors="replace").strip()[-300:] or f"exit {result.exit_code}"
            raise RunnerError(f"placing the lab's files: {reason}", permanent=result.exit_code == 2)

    # Docker-in-Docker -------------------------------------------------------------------------------------
    def _dind(self) -> dict[str, Any]:
        """The operator's `dind` option, checked; a permanent RunnerError naming it when it is not set."""
        dind = self.options.get("dind")
        if not isinstance(dind, dict) or not (dind.get("namespace") or dind.get("runtime_class_name")):
            raise RunnerError(
                "this lab needs Docker-in-Docker, whose engine needs more than Pod Security's baseline allows; "
                "the Kubernetes runner runs one only where the operator allows it: set the runner's `dind` "
                'option, e.g. {"namespace": "labs-privileged"} (a namespace whose Pod Security admits such '
                'pods) or {"runtime_class_name": "sysbox-runc"}', permanent=True)
        from django.conf import settings

        mode = str(dind.get("mode") or "rootless")
        if mode not in DIND_ENGINE_MODES:
            raise RunnerError(f"unknown dind mode {mode!r} (use one of {', '.join(DIND_ENGINE_MODES)})",
                              permanent=True)
        if mode == "privileged" and not settings.LAB_ALLOW_UNSAFE_DIND:
            # As the Docker runner's privileged dind_mode: root in the session would be root on the node.
            raise RunnerError('dind mode "privileged" makes root in a session root on the node; it is refused '
                              "unless the operator sets LAB_ALLOW_UNSAFE_DIND=true for trusted labs", permanent=True)
        if mode == "root" and not dind.get("runtime_class_name"):
            raise RunnerError('dind mode "root" needs a runtime_class_name that confines a root engine (sysbox-runc)',
                              permanent=True)
        return {"namespace": str(dind.get("namespace") or self.namespace),
                "runtime_class_name": str(dind.get("runtime_class_name") or ""),
                "image": str(dind.get("image") or DEFAULT_ENGINE_IMAGE), "mode": mode,
                "tun_resource": str(dind.get("tun_resource") or "")}

    def _in_namespace(self, namespace: str) -> KubernetesRunner:
        """This runner working in another namespace (the DinD sessions'), sharing its API client."""
        self.api_client  # noqa: B018  (made once, shared by both)
        view = copy.copy(self)
        view.namespace = namespace
        return view

    def _engine_container(self, spec: SessionSpec, dind: dict[str, Any]) -> dict[str, Any]:
        """The session's own Docker engine (labs/dind's entrypoint), beside `main` in the pod.

        It serves a unix socket in a small in-memory emptyDir that only the two containers mount, not
        TCP on localhost: nothing else in the pod's network namespace (inner containers run with
        --network host, a program of the lab listening there, anyone reaching the pod IP) can reach
        the engine, and labs find it at the Docker runner's path (/run/labs-docker/docker.sock). It
        sees the workspace at the same path, so `docker run -v /workspace/x:/x` works; its data lives
        in an emptyDir (overlay2 cannot sit on the container's own overlay). It gets the session's CPU
        and memory: the learner's inner containers run in its cgroup.

        Modes (the option's "mode"):
        - "rootless" (default, as the Docker runner's): the engine runs as the image's learner (uid
          1000) through rootlesskit, in a user namespace whose root is that uid on the node; it needs
          SETUID/SETGID (newuidmap's file capabilities, so privilege escalation stays allowed), seccomp
          and AppArmor Unconfined, an unmasked /proc (procMount, beta since 1.31) and /dev/net/tun (a
          hostPath char device, or the device plugin resource named by "tun_resource").
        - "privileged": a classic root dockerd in a privileged container: root in the session is root
          on the node. Only for trusted labs, and only with LAB_ALLOW_UNSAFE_DIND=true (as on Docker).
        - "root": a root dockerd, not privileged, for a runtime class that confines it (sysbox-runc).
        All three need more than Pod Security's baseline, hence the dedicated namespace (or runtime)."""
        cpu = f"{max(1, round(spec.cpu * 1000))}m"
        memory = f"{int(spec.memory_mb)}Mi"
        resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory},
                                     "limits": {"cpu": cpu, "memory": memory}}
        env = [{"name": "DIND_WAIT_SECONDS", "value": "90"}]
        mounts = [{"name": ENGINE_SOCKET_VOLUME, "mountPath": ENGINE_SOCKET_DIR},
                  {"name": WORKSPACE_VOLUME, "mountPath": self.workspace}]
        context: dict[str, Any]
        if dind["mode"] == "rootless":
            context = {"runAsUser": ROOTLESS_UID, "runAsGroup": ROOTLESS_UID, "runAsNonRoot": True,
                       "allowPrivilegeEscalation": True,
                       "capabilities": {"drop": ["ALL"], "add": ["SETUID", "SETGID"]},
                       "seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"},
                       "procMount": "Unmasked"}
            ready = ROOTLESS_ENGINE_READY
            # An emptyDir is root's (mode 0777) and dockerd chmods its data root, which only the owner
            # may: the data root is a directory the engine makes itself inside the volume.
            mounts.append({"name": ENGINE_DATA_VOLUME, "mountPath": ROOTLESS_DATA_VOLUME})
            env.append({"name": "DIND_DATA_ROOT", "value": f"{ROOTLESS_DATA_VOLUME}/docker"})
            command = ["/usr/bin/tini", "-g", "--", "/bin/sh", "-c",
                       'mkdir -p "$DIND_DATA_ROOT" && exec /usr/local/bin/dind-entrypoint "$@"', "dind",
                       "sleep", "infinity"]
            if dind["tun_resource"]:
                resources["limits"][dind["tun_resource"]] = "1"
                resources["requests"][dind["tun_resource"]] = "1"
            else:
                mounts.append({"name": TUN_VOLUME, "mountPath": TUN_DEVICE})
        else:
            context = {"runAsUser": 0, "runAsNonRoot": False}
            if dind["mode"] == "privileged":
                context["privileged"] = True
            else:
                context["allowPrivilegeEscalation"] = False
            # The root entrypoint serves /var/run/docker.sock; the shared socket is a second listener.
            env.append({"name": "DOCKERD_ARGS", "value": f"--host {ENGINE_HOST}"})
            ready = ENGINE_READY
            mounts.append({"name": ENGINE_DATA_VOLUME, "mountPath": "/var/lib/docker"})
            command = []  # the image's entrypoint (a root dockerd) and command
        engine: dict[str, Any] = {
            "name": ENGINE, "image": dind["image"],
            "imagePullPolicy": str(self.options.get("image_pull_policy", "IfNotPresent")),
            "env": env, "resources": resources, "securityContext": context,
            "startupProbe": {"exec": {"command": ["test", "-e", ready]}, "periodSeconds": 1,
                             "failureThreshold": 120, "timeoutSeconds": 5},
            "volumeMounts": mounts,
        }
        if command:
            engine["command"] = command
        return engine

    # persistent homes ------------------------------------------------------------------------------------
    def home_claim_name(self, user_id: int) -> str:
        """`home-<instance>-<user id>`: one claim per user and install, found again by name."""
        instance = re.sub(r"[^a-z0-9-]", "-", self.instance.lower()).strip("-")[:40].rstrip("-") or "labs"
        return f"home-{instance}-{int(user_id)}"

    def home_manifest(self, spec: SessionSpec) -> dict[str, Any]:
        labels = {k: v for k, v in self.labels_for(spec).items() if k not in (LABEL_SESSION, LABEL_LAB, LABEL_NETWORK)}
        labels[LABEL_ROLE] = HOME_ROLE
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": self.home_claim_name(spec.user_id), "labels": labels,
                             "annotations": {f"{ANNOTATION_PREFIX}username": spec.username,
                                             f"{ANNOTATION_PREFIX}instance": self.instance}},
                "spec": {"accessModes": [str(self.options.get("home_access_mode", "ReadWriteOnce"))],
                         "storageClassName": str(self.options["home_storage_class"]),
                         "resources": {"requests": {"storage": str(self.options.get("home_size", "1Gi"))}}}}

    def _ensure_home(self, spec: SessionSpec, deadline: float) -> dict[str, Any]:
        """The user's claim: created on their first session, found again on later ones. It has no owner
        (no session's anchor takes it along); one being removed by staff is waited out, then made anew."""
        from kubernetes.client import ApiException

        name = self.home_claim_name(spec.user_id)
        while True:
            try:
                created = self.core.create_namespaced_persistent_volume_claim(
                    self.namespace, self.home_manifest(spec), _request_timeout=self.api_timeout)
                return self.api_client.sanitize_for_serialization(created)  # type: ignore[no-any-return]
            except ApiException as exc:
                if exc.status != 409:
                    raise self._translate("creating your home directory's volume claim", exc) from exc
            except Exception as exc:
                raise self._translate("creating your home directory's volume claim", exc) from exc
            existing = self._read_claim(name)
            if existing is not None and not existing["metadata"].get("deletionTimestamp"):
                return existing
            if time.monotonic() > deadline:
                raise RunnerError("your previous home directory is still being removed")
            time.sleep(0.2)

    def _read_claim(self, name: str) -> dict[str, Any] | None:
        return self._read("persistentvolumeclaims", name)

    def remove_home(self, user_id: int) -> bool:
        """Staff's removal of a user's home: delete their claim (in the DinD namespace too); whether
        there was one. A running session keeps using it until it ends (the claim's protection
        finalizer), then the volume goes with the claim (as its StorageClass's reclaim policy says)."""
        from kubernetes.client import ApiException

        found = False
        for runner in [self, *(self._in_namespace(n) for n in self._other_namespaces())]:
            name = runner.home_claim_name(user_id)
            try:
                runner.core.delete_namespaced_persistent_volume_claim(name, runner.namespace,
                                                                      _request_timeout=self.api_timeout)
                found = True
            except ApiException as exc:
                if exc.status != 404:
                    raise self._translate(f"removing volume claim {name}", exc) from exc
            except Exception as exc:
                raise self._translate(f"removing volume claim {name}", exc) from exc
        return found

    # reaching the session ------------------------------------------------------------------------------
    def endpoint(self, state: dict[str, Any], port: int) -> Endpoint:
        """pod-ip: the pod's own address (the platform runs in the cluster). proxy: a loopback listener
        of this process that reaches the port through the API server's pods/proxy (runners/k8s_forward.py)."""
        mode = str(self.options.get("endpoint_mode", "pod-ip"))
        if mode not in ("pod-ip", "proxy"):
            raise RunnerError(f"unknown endpoint_mode {mode!r} (pod-ip or proxy)", permanent=True)
        namespace = str(state.get("namespace", self.namespace))
        view = self if namespace == self.namespace else self._in_namespace(namespace)
        pod = view._read("pods", state.get("pod", ""))
        ip = ((pod or {}).get("status") or {}).get("podIP")
        if not ip or (state.get("uid") and (pod or {}).get("metadata", {}).get("uid") != state["uid"]):
            raise RunnerError("the session's pod has no IP address (is it running?)")
        if mode == "pod-ip":
            return Endpoint(host=ip, port=port)
        from runners.k8s_forward import api_server_of, forwarder_for

        self._forwarder = forwarder_for(self, lambda: api_server_of(self.api_client.configuration))
        try:
            host, local_port = self._forwarder.address(namespace, str(state["pod"]), int(port))
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise RunnerError(f"cannot forward port {port} of the session through the API server: {exc}") from exc
        return Endpoint(host=host, port=local_port)

    # exec --------------------------------------------------------------------------------------------
    def _open_exec(self, state: dict[str, Any], command: list[str], *, container: str = MAIN, stdin: bool,
                   tty: bool, protocols: str | None = None) -> Any:
        from kubernetes.stream import stream

        headers = {"sec-websocket-protocol": protocols} if protocols else None
        try:
            ws = stream(self.core.connect_get_namespaced_pod_exec, state["pod"], state.get("namespace",
                        self.namespace), command=command, container=container, stdin=stdin, stdout=True,
                        stderr=not tty, tty=tty, _preload_content=False, binary=True,
                        _request_timeout=self.api_timeout, **({"_headers": headers} if headers else {}))
        except Exception as exc:
            raise self._translate("running a command in the session", exc) from exc
        self._exec_protocol = ws.subprotocol or V4
        return ws

    def _protocol(self, state: dict[str, Any]) -> str:
        """The exec protocol the API server speaks, learned once with a command that takes no input."""
        if self._exec_protocol is None:
            ws = self._open_exec(state, ["true"], stdin=False, tty=False)
            _drain(ws, time.monotonic() + 10)
        return self._exec_protocol or V4

    def exec(
        self,
        state: dict[str, Any],
        command: list[str],
        *,
        timeout: float = 15.0,
        stdin: bytes | None = None,
        user: str | None = None,
        workdir: str | None = None,
        environment: dict[str, str] | None = None,
        container: str = MAIN,
    ) -> ExecResult:
        seconds = str(max(1, math.ceil(timeout)))
        wrapped = ["sh", "-c", OOM_FIRST + 'cd "$1" || exit 125; shift; exec "$@"', "labs-exec",
                   workdir or self.workspace, "env", *[f"{k}={v}" for k, v in (environment or {}).items()],
                   "timeout", "-s", "KILL", seconds, *command]
        who = user if user is not None else state.get("user") or ""
        if who not in ("", "root", "0"):
            # Exec has no user option: switch inside (the container keeps SETUID/SETGID for this).
            # Options first and "--" before the user: util-linux su would take the command's own options
            # (timeout -s KILL) for its own.
            wrapped = ["su", "-s", "/bin/sh", "-c", 'exec "$0" "$@"', "--", who, *wrapped]
        if stdin is not None and self._protocol(state) != V5:
            # v4 cannot close stdin alone: the command gets exactly the bytes sent, then end of input.
            wrapped = ["sh", "-c", 'n="$1"; shift; head -c "$n" | "$@"', "labs-stdin", str(len(stdin)), *wrapped]
        started = time.monotonic()
        ws = self._open_exec(state, wrapped, container=container, stdin=stdin is not None, tty=False)
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=_feed, args=(ws, stdin), name="k8s-exec-stdin", daemon=True)
            feeder.start()
        stdout, stderr, status = _drain(ws, started + timeout + 5)
        if feeder is not None:
            feeder.join(timeout=1)
        elapsed = time.monotonic() - started
        if status is None:
            return ExecResult(124, stdout, stderr, timed_out=True)
        code = _exit_code(status)
        timed_out = code in (124, 137) and elapsed >= timeout - 0.05
        return ExecResult(code, stdout, stderr, timed_out=timed_out)

    # files: the Docker runner's scripts, run through exec -----------------------------------------------
    def _file_command(self, state: dict[str, Any], script: str, path: str, *, stdin: bytes | None = None,
                      container: str = MAIN) -> ExecResult:
        relative = clean_workspace_path(path)
        target = f"{self.workspace}/{relative}" if relative else self.workspace
        return self.exec(state, ["sh", "-c", CONFINE + script, "sh", target], stdin=stdin, timeout=20,
                         container=container, user="root" if container == AGENT else None)

    def list_files(self, state: dict[str, Any], path: str = "") -> list[FileEntry]:
        result = self._file_command(state, LIST_SCRIPT, path)
        if result.exit_code != 0:
            raise RunnerError(f"{path or '.'}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return parse_listing(result.stdout, self.workspace)

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        result = self._file_command(state, read_script(max_bytes), path)
        if result.exit_code != 0:
            raise RunnerError(f"{path}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return result.stdout

    def write_file(self, state: dict[str, Any], path: str, data: bytes) -> None:
        if not clean_workspace_path(path):
            raise RunnerError("Give a file name.", permanent=True)
        result = self._file_command(state, WRITE_SCRIPT, path, stdin=data)
        if result.exit_code != 0:
            reason = result.stderr.decode(errors="replace").strip() or f"the save failed (exit {result.exit_code})"
            raise RunnerError(f"{path}: {reason}", permanent=True)

    # files the judge reads: through the trusted agent container, when there is one ----------------------
    # The agent shares the workspace (read-only) but none of the learner's programs: a learner who
    # replaced sh, stat or cat in `main` changes nothing the agent runs. Symlinks are resolved in the
    # agent and must stay inside the workspace; the agent's own files hold nothing secret.
    def stat_file(self, state: dict[str, Any], path: str) -> FileStat | None:
        if not state.get("agent"):
            return super().stat_file(state, path)
        script = ('r=$(realpath "$p" 2>/dev/null) || exit 4; '
                  'case "$r" in /workspace|/workspace/*) ;; *) exit 4;; esac; [ -e "$r" ] || exit 4; '
                  'stat -c "%F|%s|%a|%n" "$r"')
        result = self._file_command(state, script, path, container=AGENT)
        if result.exit_code == 4 or (result.exit_code == 3 and b"outside" in result.stderr):
            return None
        if result.exit_code != 0:
            raise RunnerError(f"reading the workspace: {result.stderr.decode(errors='replace').strip()}")
        kind, size, mode, name = result.stdout.decode(errors="replace").rstrip("\n").split("|", 3)
        relative = name.removeprefix(self.workspace).lstrip("/")
        return FileStat(path=relative, is_dir=kind == "directory", is_file=kind.startswith("regular"),
                        size=int(size), mode=int(mode, 8))

    def read_file_untrusted(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576) -> bytes:
        if not state.get("agent"):
            return super().read_file_untrusted(state, path, max_bytes=max_bytes)
        shown = clean_workspace_path(path)
        found = self.stat_file(state, shown)
        if found is None or not found.is_file:
            raise RunnerError(f"{shown}: no such file", permanent=True)
        result = self._file_command(state, read_script(max_bytes), found.path, container=AGENT)
        if result.exit_code != 0:
            raise RunnerError(f"{shown}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return result.stdout

    # terminals -----------------------------------------------------------------------------------------
    def terminal_exists(self, state: dict[str, Any], name: str) -> bool:
        try:
            return self.exec(state, ["sh", "-c", tmux_probe(name)], timeout=5).exit_code == 0
        except RunnerError:
            return False

    def open_terminal(self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1") -> K8sTerminal:
        shell = terminal_shell(name, self.workspace)
        # No SHELL: su set it to /bin/sh (its -s), and tmux would start that instead of the user's
        # login shell (bash) from /etc/passwd, as it does on Docker.
        command = ["env", "-u", "SHELL", "TERM=xterm-256color", "LANG=C.UTF-8", "sh", "-c", shell]
        user = state.get("user") or ""
        if user not in ("", "root", "0"):
            command = ["su", "-s", "/bin/sh", "-c", 'exec "$0" "$@"', "--", user, *command]
        ws = self._open_exec(state, command, stdin=True, tty=True)
        terminal = K8sTerminal(ws)
        terminal.resize(cols, rows)
        return terminal


class K8sTerminal:
    """A TTY exec, bridged to a socketpair by a pump thread.

    The terminal machinery (consoles/terminals.py) waits on `fileno()` with the event loop's
    add_reader and reads and writes without blocking; a WebSocket with TLS cannot offer that (data
    can sit decrypted in the TLS buffer, invisible to poll). So one thread owns the exec session:
    it copies channel 1 into the socketpair and what is written to the socketpair out on channel 0.
    Reading stops while the consumer has not taken what was copied, so a slow browser slows the
    shell (flow control stays end to end)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._outer, self._inner = socket.socketpair()
        self._inner.setblocking(False)
        self._closed = False
        self._thread = threading.Thread(target=self._pump, name="k8s-terminal", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._outer.fileno()

    def read(self, max_bytes: int = 65536) -> bytes:
        try:
            return self._outer.recv(max_bytes)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        try:
            self._outer.sendall(data)
        except OSError as exc:
            raise RunnerError(f"the terminal is closed ({exc})") from exc

    def resize(self, cols: int, rows: int) -> None:
        try:
            self._ws.write_channel(RESIZE, json.dumps({"Width": int(cols), "Height": int(rows)}).encode())
        except Exception as exc:
            raise RunnerError(f"resize failed: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._outer.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._outer.close()
        self._thread.join(timeout=5)

    def _pump(self) -> None:
        pending = b""
        selector = selectors.DefaultSelector()
        raw = self._ws.sock.sock
        watching_raw = False
        try:
            selector.register(self._inner, selectors.EVENT_READ)
            while self._ws.is_open():
                # Output the consumer has not taken yet: read no more from the API server until it has.
                if pending and watching_raw:
                    selector.unregister(raw)
                    watching_raw = False
                elif not pending and not watching_raw:
                    selector.register(raw, selectors.EVENT_READ)
                    watching_raw = True
                selector.modify(self._inner, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0))
                buffered = not pending and isinstance(raw, ssl.SSLSocket) and raw.pending() > 0
                ready = {key.fileobj: mask for key, mask in selector.select(0 if buffered else 1.0)}
                inner_mask = ready.get(self._inner, 0)
                if inner_mask & selectors.EVENT_READ:
                    data = self._inner.recv(65536)
                    if not data:
                        break  # the consumer closed the terminal
                    self._ws.write_channel(STDIN, data)
                if pending and inner_mask & selectors.EVENT_WRITE:
                    pending = pending[self._inner.send(pending):]
                if not pending and (buffered or raw in ready):
                    self._ws.update(timeout=0)
                    pending = (self._ws.read_channel(STDOUT) or b"") + (self._ws.read_channel(STDERR) or b"")
            # The shell ended: hand over what is left, then end of file.
            pending += (self._ws.read_channel(STDOUT) or b"") + (self._ws.read_channel(STDERR) or b"")
            self._inner.setblocking(True)
            if pending:
                self._inner.sendall(pending)
        except Exception as exc:  # the connection broke: the consumer sees end of file
            log.info("kubernetes terminal pump ended: %s", exc)
        finally:
            selector.close()
            try:
                self._inner.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._inner.close()
            try:
                self._ws.close()
            except Exception as exc:
                log.debug("closing the exec connection: %s", exc)


def _feed(ws: Any, data: bytes) -> None:
    """Send a command's input, then close its stdin (v5) so it sees end of input."""
    try:
        for start in range(0, len(data), 65536):
            ws.write_channel(STDIN, data[start:start + 65536])
        ws.close_channel(STDIN)
    except Exception as exc:  # the command ended without reading it all
        log.debug("exec input not fully sent: %s", exc)


def _drain(ws: Any, deadline: float) -> tuple[bytes, bytes, dict[str, Any] | None]:
    """Read a command's output until the server closes the exec; (stdout, stderr, exit Status)."""
    out, err = bytearray(), bytearray()
    status: dict[str, Any] | None = None

    def take() -> None:
        nonlocal status
        for channel, target in ((STDOUT, out), (STDERR, err)):
            chunk = ws.read_channel(channel) or b""
            if len(target) < MAX_OUTPUT:
                target.extend(chunk[: MAX_OUTPUT - len(target)])
        raw = ws.read_channel(ERROR)
        if raw:
            try:
                status = json.loads(raw)
            except ValueError:
                status = {"status": "Failure", "message": raw.decode(errors="replace")}

    try:
        while ws.is_open() and time.monotonic() < deadline:
            ws.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            take()
        take()
    except Exception as exc:
        raise RunnerError(f"the command's connection broke: {exc}") from exc
    finally:
        try:
            ws.close()
        except Exception as exc:
            log.debug("closing the exec connection: %s", exc)
    return bytes(out), bytes(err), status


def _exit_code(status: dict[str, Any]) -> int:
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    raise RunnerError(f"the command could not run: {status.get('message') or status.get('reason')}")


def _status_of(exc: Any) -> tuple[int, str, str]:
    """(code, reason, message) of an ApiException, from the Status body where there is one."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    return int(exc.status or 0), str(body.get("reason") or exc.reason or ""), str(body.get("message") or "")
