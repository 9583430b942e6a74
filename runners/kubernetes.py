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

    hosts_cap_add     capabilities the pods of a session with several hosts keep besides cap_add, for the
                      image's sshd (["SYS_CHROOT", "NET_BIND_SERVICE"], both within Pod Security baseline)
    vm_* options, kvm_resource, kvm_group, vnc_websocket_port: VM labs (QEMU in the pod), see k8s_vm.py

Labs with several hosts (runners/k8s_hosts.py): one pod per host, all owned by the anchor, the first the
learner's (terminals, commands and files go there unless `host=` names another), a NetworkPolicy per
session that lets its pods alone reach each other, /etc/hosts entries for their names, and `ssh <host>`
from the first host as on Docker.

VM labs (image kinds "vm" and "iso") run QEMU in the session's pod (runners/k8s_vm.py): the Docker VM
runner's image and launcher, the base disk read-only from a claim (subPath) or copied by an init
container, the overlay in an emptyDir, KVM through a device plugin's resource or TCG, never
privileged; the terminal is the serial console, QMP goes through exec, VNC is on the pod IP (or
tunnelled through the pods/proxy in proxy mode).

Output (Runner.output, staff's live panel): the `main` container's pods/log with timestamps, read after a
sinceTime cursor (container_logs.py, as for Docker), other hosts' and the engine's lines marked "[host] " and
"[engine] "; a VM's is its serial console's log in the pod (k8s_vm.py).

Exec (judge, step scripts, files, terminals) goes over the pods/exec WebSocket (v5.channel.k8s.io,
v4 as a fallback). Exec cannot send signals, so every command runs under `timeout -s KILL`.
Not enforced here: the pids limit (Kubernetes has no per-pod limit yet; start() says so).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import posixpath
import re
import ssl
import tarfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runners import container_logs
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
from runners.k8s_hosts import KubernetesHosts
from runners.k8s_objects import (
    ANNOTATION_PREFIX,
    ERROR,
    LABEL_APP_MANAGED,
    LABEL_HOST,
    LABEL_LAB,
    LABEL_MANAGED,
    LABEL_NETWORK,
    LABEL_SESSION,
    LABEL_USER,
    MANAGED_BY,
    STDERR,
    STDIN,
    STDOUT,
    V4,
    V5,
    K8sTerminal,
    is_pod_ready,
    label_value,
    object_name,
    owner_reference,
    permanent_failure,
)
from runners.k8s_vm import KubernetesVM
from runners.session_shell import (
    CONFINE,
    DEFAULT_CAPS,
    KEEPALIVE,
    LIST_SCRIPT,
    OOM_FIRST,
    SSHD_KEEPALIVE,
    WRITE_SCRIPT,
    parse_listing,
    read_script,
    terminal_shell,
    tmux_probe,
)

log = logging.getLogger(__name__)

MAIN, AGENT = "main", "agent"
WORKSPACE_VOLUME = "workspace"
HOSTNAME = "lab"  # the Docker runner's hostname, so labs read the same on both
STARTER_MARKER = "/run/labs-starter-copied"
MAX_OUTPUT = 4 * 1024 * 1024
def progress_of(pod: dict[str, Any]) -> str:
    """A short, learner-readable step from the pod's conditions and container states."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return "Waiting for room in the cluster"
    for item in status.get("initContainerStatuses") or []:
        if (item.get("state") or {}).get("running"):
            return f"Preparing the session ({item.get('name')})"
    for item in status.get("containerStatuses") or []:
        waiting = (item.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ContainerCreating", "PodInitializing"):
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
        self.vm = KubernetesVM(self)  # VM labs: QEMU in the pod
        self.hosts = KubernetesHosts(self)  # labs with several hosts: a pod per host

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

    def pod_manifest(self, spec: SessionSpec, anchor: dict[str, Any], host: str = "") -> dict[str, Any]:
        """The pod of a container session; with several hosts, `host` names one ("": the first, the learner's:
        only it has the agent, the Docker engine and the persistent home)."""
        several = len(spec.hosts) > 1
        learners = host in ("", *spec.hosts[:1])
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
        if several:
            main["command"] = SSHD_KEEPALIVE  # the hosts reach each other over SSH (k8s_hosts.py)
            caps = main["securityContext"]["capabilities"]["add"]
            caps += [cap for cap in self.hosts.caps() if cap not in caps]
        containers = [main]
        if spec.docker_access and learners:
            dind = self._dind()
            main["env"].append({"name": "DOCKER_HOST", "value": ENGINE_HOST})
            main["volumeMounts"].append({"name": ENGINE_SOCKET_VOLUME, "mountPath": ENGINE_SOCKET_DIR})
            containers.append(self._engine_container(spec, dind))
        if self.options.get("agent_image") and learners:
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
        pod_spec = self._pod_spec(containers, [{"name": WORKSPACE_VOLUME, "emptyDir": {"sizeLimit": storage}}])
        if several:
            pod_spec["hostname"] = host or spec.hosts[0]
        if self.options.get("home_storage_class") and learners:
            pod_spec["volumes"] = [{"name": WORKSPACE_VOLUME,
                                    "persistentVolumeClaim": {"claimName": self.home_claim_name(spec.user_id)}}]
        if spec.docker_access and learners:
            pod_spec["volumes"] += [
                {"name": ENGINE_SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": ENGINE_DATA_VOLUME, "emptyDir": {"sizeLimit": storage}}]
            if self._dind()["mode"] == "rootless" and not self._dind()["tun_resource"]:
                pod_spec["volumes"].append({"name": TUN_VOLUME, "hostPath": {"path": TUN_DEVICE,
                                                                             "type": "CharDevice"}})
        if spec.docker_access and learners and self._dind()["runtime_class_name"]:
            pod_spec["runtimeClassName"] = self._dind()["runtime_class_name"]
        return self.pod_object(spec, anchor, pod_spec, host=host or (spec.hosts[0] if several else ""))

    def _pod_spec(self, containers: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> dict[str, Any]:
        """What every session pod's spec has (container and VM sessions), with the operator's placement."""
        pod_spec: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostname": HOSTNAME,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 10,
            "activeDeadlineSeconds": int(self.options.get("active_deadline_seconds", 43200)),
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": containers,
            "volumes": volumes,
        }
        for option, key in (("node_selector", "nodeSelector"), ("tolerations", "tolerations"),
                            ("runtime_class_name", "runtimeClassName"), ("service_account", "serviceAccountName")):
            if self.options.get(option):
                pod_spec[key] = self.options[option]
        if self.options.get("image_pull_secrets"):
            pod_spec["imagePullSecrets"] = [{"name": str(n)} for n in self.options["image_pull_secrets"]]
        return pod_spec

    def pod_object(self, spec: SessionSpec, anchor: dict[str, Any], pod_spec: dict[str, Any], host: str = ""
                   ) -> dict[str, Any]:
        """A Pod of the session: its name, labels and annotations (and its `host`'s, with several), owned by
        the anchor."""
        labels, annotations = self.labels_for(spec), self.annotations_for(spec)
        if host:
            labels[LABEL_HOST] = label_value(host)
            annotations[f"{ANNOTATION_PREFIX}host"] = host
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.hosts.pod_name(spec, host), "labels": labels, "annotations": annotations,
                             "ownerReferences": [owner_reference(anchor)]},
                "spec": pod_spec}

    # start -------------------------------------------------------------------------------------------
    def start(
        self, spec: SessionSpec, progress: ProgressCallback = no_progress, timeout: float = 120.0
    ) -> StartResult:
        if len(spec.hosts) > 1:
            self.hosts.check(spec)  # refused before any object exists
        vm = spec.image_kind in VM_IMAGE_KINDS
        if vm:
            self.vm.boot(spec)  # an unusable image or disk source is refused before any object exists
        # Docker-in-Docker only where the operator said privileged engines may run (refused before any
        # object exists otherwise); such sessions may live in a namespace of their own.
        namespace = self._dind()["namespace"] if spec.docker_access and not vm else self.namespace
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
        if spec.image_kind in VM_IMAGE_KINDS:
            return self._start_vm(spec, progress, deadline, timeout)
        progress(f"Note: the process limit of {spec.pids_limit} is not enforced on Kubernetes")
        if self.options.get("home_storage_class"):
            progress("Preparing your home directory")
            self._ensure_home(spec, deadline)
        several = spec.hosts if len(spec.hosts) > 1 else ()
        progress(f"Creating the session's {len(several)} hosts" if several else "Creating the session's pod")
        anchor = self._ensure(spec, "configmaps", lambda: self.anchor_manifest(spec), deadline)
        if several:
            self.hosts.ensure_policy(spec, anchor, deadline)  # before the pods: they find each other at once
        pods = [self._ensure(spec, "pods", lambda host=host: self.pod_manifest(spec, anchor, host), deadline,
                             owner=anchor, name=self.hosts.pod_name(spec, host)) for host in several or ("",)]
        pods = self._wait_until_ready(pods, progress, deadline, timeout,
                                      {p["metadata"]["uid"]: host for p, host in zip(pods, several, strict=False)})
        pod = pods[0]
        name = pod["metadata"]["name"]
        state: dict[str, Any] = {"namespace": self.namespace, "pod": name, "uid": pod["metadata"]["uid"],
                                 "anchor": anchor["metadata"]["name"], "user": spec.shell_user,
                                 "agent": bool(self.options.get("agent_image"))}
        if several:
            state["host"] = several[0]
            state["hosts"] = {host: p["metadata"]["name"] for host, p in zip(several[1:], pods[1:], strict=True)}
        if self.options.get("home_storage_class"):
            state["home"] = self.home_claim_name(spec.user_id)
        if spec.docker_access:
            state["docker_access"] = True
        if spec.starter_dir:
            marker = self.exec(state, ["test", "-e", STARTER_MARKER], timeout=10)
            if marker.exit_code != 0:
                progress("Copying starter files")
                self._copy_starter(state, spec.starter_dir)
        if several:
            progress("Letting the hosts reach each other by name")
            self.hosts.name_each_other(state, {host: p["status"]["podIP"] for host, p in zip(several, pods,
                                                                                             strict=True)})
            progress("Letting the hosts reach each other over SSH")
            self.hosts.connect(state)
        progress("Container ready")
        ip = pod["status"]["podIP"]
        endpoints: dict[str, Any] = {"host": ip}
        if "vnc" in spec.consoles:
            endpoints["vnc"] = {"host": ip, "port": int(self.options.get("vnc_port", 5900))}
        return StartResult(state=state, endpoints=endpoints)

    def _start_vm(self, spec: SessionSpec, progress: ProgressCallback, deadline: float, timeout: float
                  ) -> StartResult:
        """A VM session: the anchor, QEMU's pod (k8s_vm.py), then until QMP says the guest runs."""
        progress("Creating the VM's pod")
        anchor = self._ensure(spec, "configmaps", lambda: self.anchor_manifest(spec), deadline)
        pod = self._ensure(spec, "pods", lambda: self.vm.pod_manifest(spec, anchor), deadline, owner=anchor)
        [pod] = self._wait_until_ready([pod], progress, deadline, timeout)
        state: dict[str, Any] = {"namespace": self.namespace, "pod": pod["metadata"]["name"],
                                 "uid": pod["metadata"]["uid"], "anchor": anchor["metadata"]["name"],
                                 "user": "", "agent": False, "kind": "vm"}
        self.vm.wait_running(state, progress, deadline, timeout)
        progress("VM running")
        return StartResult(state=state, endpoints=self.vm.endpoints(pod["status"]["podIP"]))

    def _ensure(self, spec: SessionSpec, plural: str, manifest: Any, deadline: float,
                owner: dict[str, Any] | None = None, name: str = "") -> dict[str, Any]:
        """Create the object (named `name`, by default the session's), or adopt the one an earlier start
        made; a terminating one is waited out."""
        from kubernetes.client import ApiException

        kind = "pod" if plural == "pods" else "anchor ConfigMap"
        create = getattr(self.core, "create_namespaced_pod" if plural == "pods" else
                         "create_namespaced_config_map")
        name = name or object_name(spec.session_id)
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

    def _wait_until_ready(self, pods: list[dict[str, Any]], progress: ProgressCallback, deadline: float,
                          timeout: float, hosts: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Watch the session's pods until every one is ready (one pod by its name, several by the session's
        label; relisting on 410 Gone) and report their steps, each prefixed with its host's name where
        `hosts` maps its uid to one. A permanent failure of any pod fails the start at once."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        hosts = hosts or {}
        order = [pod["metadata"]["uid"] for pod in pods]
        current = {pod["metadata"]["uid"]: pod for pod in pods}
        reported: dict[str, set[str]] = {uid: set() for uid in order}
        last = dict.fromkeys(order, "")
        events_listed = dict.fromkeys(order, 0.0)
        ready: set[str] = set()
        if len(pods) == 1:
            selector = {"field_selector": f"metadata.name={pods[0]['metadata']['name']}"}
        else:
            labels = pods[0]["metadata"]["labels"]
            selector = {"label_selector": f"{LABEL_MANAGED}={labels[LABEL_MANAGED]},"
                                          f"{LABEL_SESSION}={labels[LABEL_SESSION]}"}

        def who(uid: str) -> str:
            return f"{hosts[uid]}: " if uid in hosts else ""

        def report(uid: str, message: str) -> None:
            if message and message != last[uid]:
                last[uid] = message
                progress(who(uid) + message)

        def check(pod: dict[str, Any]) -> bool:
            """Take in a pod's new state; whether every pod is now ready. Events are listed at most once a
            second per pod while it changes (a start brings half a dozen changes in well under a second,
            and a real API server scans the namespace's Events for each list), and once more at the end
            so the last steps are shown."""
            uid = pod["metadata"]["uid"]
            current[uid] = pod
            failure, is_ready = permanent_failure(pod), is_pod_ready(pod)
            if failure or is_ready or time.monotonic() - events_listed[uid] >= 1.0:
                events_listed[uid] = time.monotonic()
                self._report_events(uid, reported[uid], lambda message: report(uid, message))
            if failure:
                raise RunnerError(who(uid) + failure, permanent=True)
            if is_ready:
                ready.add(uid)
            else:
                ready.discard(uid)
                report(uid, progress_of(pod))
            return len(ready) == len(order)

        def relist() -> str:
            listed = self.call("listing the session's pods", self.core.list_namespaced_pod, self.namespace,
                               **selector)
            found = {p["metadata"]["uid"]: p for p in (self.api_client.sanitize_for_serialization(item)
                                                       for item in listed.items)}
            for uid in order:
                if uid not in found:
                    raise RunnerError(f"{who(uid)}the session's pod was deleted while it started")
                check(found[uid])
            return str(listed.metadata.resource_version)

        if len(pods) == 1:
            version = pods[0]["metadata"]["resourceVersion"]
            check(pods[0])
        else:
            version = relist()  # the pods as they are now, and a version to watch on from
        while len(ready) < len(order):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waiting = [uid for uid in order if uid not in ready]
                what = ", ".join(hosts[uid] for uid in waiting) if hosts else "the session's pod"
                steps = "; ".join(who(uid) + last[uid] for uid in waiting if last[uid])
                raise RunnerError(f"{what} was not ready after {timeout:g} s ({steps or 'no progress'})")
            stream = watch.Watch()
            try:
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace, resource_version=version,
                                           timeout_seconds=max(1, min(5, math.ceil(remaining))),
                                           _request_timeout=self.api_timeout + 5, **selector):
                    pod = self.api_client.sanitize_for_serialization(event["object"])
                    uid = pod["metadata"]["uid"]
                    version = pod["metadata"]["resourceVersion"]
                    if uid not in current:
                        continue
                    if event["type"] == "DELETED":
                        raise RunnerError(f"{who(uid)}the session's pod was deleted while it started")
                    if check(pod):
                        stream.stop()
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise self._translate("watching the session's pod", exc) from exc
                # Our version is too old for the watch cache: relist and watch on from there.
                version = relist()
            except RunnerError:
                raise
            except Exception as exc:
                raise self._translate("watching the session's pod", exc) from exc
            if len(ready) < len(order):
                # A quiet window: Events may have come without a pod change.
                for uid in order:
                    if uid not in ready:
                        self._report_events(uid, reported[uid], lambda message, uid=uid: report(uid, message))
        return [current[uid] for uid in order]

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
        if state.get("kind") == "vm" and pod:
            self.vm.power_down(state, timeout)  # the guest shuts down first, as on docker-vm
            self.vm.close_pod(pod)
        if self._forwarder is not None and pod:
            self._forwarder.close_pod(pod)  # its loopback listeners go with it
        grace = max(0, math.ceil(timeout))
        if pod:
            self._delete("pods", pod, grace=grace)
        for other in (state.get("hosts") or {}).values():  # the other hosts: the same grace period
            self._delete("pods", other, grace=grace)
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

    def wait_pod_ended(self, state: dict[str, Any], seconds: float) -> bool:
        """Whether the session's pod stopped running (its containers ended, or it is gone) within
        `seconds`: one list, then a watch on it (relisting on 410 Gone), no polling."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        name, deadline = state.get("pod", ""), time.monotonic() + seconds

        def ended(pod: Any) -> bool:
            replaced = pod.metadata.uid != state.get("uid", pod.metadata.uid)
            return (replaced or pod.metadata.deletion_timestamp is not None or pod.status is None
                    or pod.status.phase != "Running")

        while True:
            found = self.call("watching the session's pod", self.core.list_namespaced_pod, self.namespace,
                              field_selector=f"metadata.name={name}")
            if not found.items or ended(found.items[0]):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                for event in watch.Watch().stream(self.core.list_namespaced_pod, self.namespace,
                                                  field_selector=f"metadata.name={name}",
                                                  resource_version=found.metadata.resource_version,
                                                  timeout_seconds=max(1, math.ceil(remaining)),
                                                  _request_timeout=self.api_timeout + remaining):
                    if event["type"] == "DELETED" or ended(event["object"]):
                        return True
                    if time.monotonic() >= deadline:
                        return False
                # The watch ended early (the server closes them at will): list again while time is left.
            except ApiException as exc:
                if exc.status != 410:
                    raise self._translate("watching the session's pod", exc) from exc

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
        pods_by_session: dict[str, list[Any]] = {}
        for pod in pods.items:  # a session with several hosts has a pod for each
            pods_by_session.setdefault((pod.metadata.labels or {}).get(LABEL_SESSION, ""), []).append(pod)
        found = []
        for anchor in anchors.items:
            session = (anchor.metadata.annotations or {}).get(f"{ANNOTATION_PREFIX}session") or \
                (anchor.metadata.labels or {}).get(LABEL_SESSION, "")
            owned = pods_by_session.pop((anchor.metadata.labels or {}).get(LABEL_SESSION, ""), [])
            # The learner's pod (named as the anchor) says whether the session runs.
            pod = next((p for p in owned if p.metadata.name == anchor.metadata.name), owned[0] if owned else None)
            running = pod is not None and pod.status is not None and pod.status.phase == "Running"
            found.append(ManagedEnvironment(session, f"configmap:{anchor.metadata.name}", running,
                                            {"name": anchor.metadata.name, "namespace": self.namespace,
                                             "pod": pod.metadata.name if pod is not None else ""}))
        for label, left in pods_by_session.items():  # pods whose anchor is gone (the GC will get them too)
            for pod in left:
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

    def output(
        self, state: dict[str, Any], since: float | None = None, max_bytes: int = 65536
    ) -> tuple[bytes, float | None]:
        """The `main` container's log (pods/log with timestamps, container_logs.py: the cursor is the
        last line's timestamp), then the session's other hosts' and the engine's, their lines marked
        "[host] " and "[engine] "."""
        if state.get("kind") == "vm":
            return self.vm.output(state, since, max_bytes)
        namespace = str(state.get("namespace", self.namespace))
        pod = str(state.get("pod", ""))
        sources = [("", f"{pod}/{MAIN}")]
        sources += [(str(host), f"{other}/{MAIN}") for host, other in (state.get("hosts") or {}).items()]
        if state.get("docker_access"):
            sources.append(("engine", f"{pod}/{ENGINE}"))
        try:
            return container_logs.session_output(_PodLogs(self, namespace), sources, since, max_bytes)
        except Exception as exc:
            raise self._translate("reading the session's output", exc) from exc

    def stats(self, state: dict[str, Any]) -> RunnerStats:
        """From `main`'s own cgroup (v2, or v1's cpuacct/memory/pids): memory and pids now, CPU as the
        usage over STATS_INTERVAL seconds (100 = one core busy, as `docker stats` counts). The API has
        no cheaper source the runner's Role may read (metrics.k8s.io lags by a scrape period)."""
        result = self.exec_in_pod(state, ["sh", "-c", STATS_SCRIPT, "labs-stats", str(STATS_INTERVAL)], timeout=10)
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
        if state.get("kind") == "vm":
            raise RunnerError("files cannot be placed inside a VM without a guest agent", permanent=True)
        state = self._on_host(state, host)
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
        if state.get("kind") == "vm":
            self.vm.check_port(port)  # a VM's VNC console only
        namespace = str(state.get("namespace", self.namespace))
        view = self if namespace == self.namespace else self._in_namespace(namespace)
        pod = view._read("pods", state.get("pod", ""))
        ip = ((pod or {}).get("status") or {}).get("podIP")
        if not ip or (state.get("uid") and (pod or {}).get("metadata", {}).get("uid") != state["uid"]):
            raise RunnerError("the session's pod has no IP address (is it running?)")
        if mode == "pod-ip":
            return Endpoint(host=ip, port=port)
        if state.get("kind") == "vm":
            return self.vm.vnc_through_proxy(namespace, str(state["pod"]))
        self.pod_forwarder()
        try:
            host, local_port = self._forwarder.address(namespace, str(state["pod"]), int(port))
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise RunnerError(f"cannot forward port {port} of the session through the API server: {exc}") from exc
        return Endpoint(host=host, port=local_port)

    def pod_forwarder(self) -> Any:
        """This runner's loopback forwarders through the API server's pods/proxy (k8s_forward.py)."""
        from runners.k8s_forward import api_server_of, forwarder_for

        self._forwarder = forwarder_for(self, lambda: api_server_of(self.api_client.configuration))
        return self._forwarder

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
        host: str = "",
    ) -> ExecResult:
        """Runner.exec; `host` names another host of a session with several ("": the learner's)."""
        if state.get("kind") == "vm":
            # A VM has no guest agent: the learner's commands belong in the guest, not in QEMU's container.
            raise RunnerError("commands cannot run inside a VM without a guest agent", permanent=True)
        state = self._on_host(state, host)
        return self.exec_in_pod(state, command, timeout=timeout, stdin=stdin, user=user, workdir=workdir,
                                environment=environment, container=container)

    def exec_in_pod(
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
        """`exec` for the platform's own commands, in a VM's pod too (QMP, resource use)."""
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

    def _on_host(self, state: dict[str, Any], host: str) -> dict[str, Any]:
        """The state that reaches one host of the session: "" (or the first host's name) is the learner's
        pod, another name that host's pod (`main` only: no agent, engine or home there)."""
        if not host or host == state.get("host"):
            return state
        pod = (state.get("hosts") or {}).get(host)
        if not pod:
            raise RunnerError(f"this session has no host named {host!r}", permanent=True)
        other = {key: value for key, value in state.items() if key not in ("uid", "home", "docker_access", "hosts")}
        return {**other, "pod": pod, "agent": False, "host": host}

    # files: the Docker runner's scripts, run through exec -----------------------------------------------
    def _file_command(self, state: dict[str, Any], script: str, path: str, *, stdin: bytes | None = None,
                      container: str = MAIN, host: str = "") -> ExecResult:
        if state.get("kind") == "vm":
            raise RunnerError("VM labs have no file access", permanent=True)
        relative = clean_workspace_path(path)
        target = f"{self.workspace}/{relative}" if relative else self.workspace
        return self.exec(state, ["sh", "-c", CONFINE + script, "sh", target], stdin=stdin, timeout=20,
                         container=container, user="root" if container == AGENT else None, host=host)

    def list_files(self, state: dict[str, Any], path: str = "", host: str = "") -> list[FileEntry]:
        result = self._file_command(state, LIST_SCRIPT, path, host=host)
        if result.exit_code != 0:
            raise RunnerError(f"{path or '.'}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return parse_listing(result.stdout, self.workspace)

    def read_file(self, state: dict[str, Any], path: str, max_bytes: int = 1_048_576, host: str = "") -> bytes:
        result = self._file_command(state, read_script(max_bytes), path, host=host)
        if result.exit_code != 0:
            raise RunnerError(f"{path}: {result.stderr.decode(errors='replace').strip()}", permanent=True)
        return result.stdout

    def write_file(self, state: dict[str, Any], path: str, data: bytes, host: str = "") -> None:
        if not clean_workspace_path(path):
            raise RunnerError("Give a file name.", permanent=True)
        result = self._file_command(state, WRITE_SCRIPT, path, stdin=data, host=host)
        if result.exit_code != 0:
            reason = result.stderr.decode(errors="replace").strip() or f"the save failed (exit {result.exit_code})"
            raise RunnerError(f"{path}: {reason}", permanent=True)

    # files the judge reads: through the trusted agent container, when there is one ----------------------
    # The agent shares the workspace (read-only) but none of the learner's programs: a learner who
    # replaced sh, stat or cat in `main` changes nothing the agent runs. Symlinks are resolved in the
    # agent and must stay inside the workspace; the agent's own files hold nothing secret.
    def stat_file(self, state: dict[str, Any], path: str) -> FileStat | None:
        if state.get("kind") == "vm":
            raise RunnerError("VM labs have no file access", permanent=True)
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
    def terminal_exists(self, state: dict[str, Any], name: str, host: str = "") -> bool:
        if state.get("kind") == "vm":
            return False  # one serial console, nothing named to re-attach
        try:
            return self.exec(state, ["sh", "-c", tmux_probe(name)], timeout=5, host=host).exit_code == 0
        except RunnerError:
            return False

    def open_terminal(self, state: dict[str, Any], cols: int = 80, rows: int = 24, name: str = "1",
                      host: str = "") -> K8sTerminal:
        if state.get("kind") == "vm":
            return self.vm.open_terminal(state, cols, rows)  # the VM's serial console
        state = self._on_host(state, host)
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


class _PodLogs:
    """pods/log behind the one Docker SDK call container_logs.py reads through (`api.logs`), so both
    runners share its parsing, bounds and merging. A "container id" is "<pod>/<container>"."""

    def __init__(self, runner: KubernetesRunner, namespace: str) -> None:
        self.runner = runner
        self.namespace = namespace

    def logs(self, container_id: str, *, stdout: bool, stderr: bool, timestamps: bool, tail: int | None = None,
             since: float | None = None, stream: bool = False, follow: bool = False) -> Any:
        from kubernetes.client import ApiException

        pod, _, container = container_id.partition("/")
        query: list[tuple[str, str]] = [("container", container), ("timestamps", str(timestamps).lower())]
        if tail is not None:
            query.append(("tailLines", str(tail)))
        if since is not None:
            # The API server hands sinceTime on to the kubelet in whole seconds, and the kubelet returns
            # lines stamped at or after it: the caller skips those up to its cursor.
            query.append(("sinceTime", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(since)))))
        client = self.runner.api_client
        # The Python client's read_namespaced_pod_log has no sinceTime: the same request, made by hand.
        request = client.param_serialize("GET", "/api/v1/namespaces/{namespace}/pods/{name}/log",
                                         path_params={"namespace": self.namespace, "name": pod},
                                         query_params=query, header_params={"Accept": "*/*"},
                                         auth_settings=["BearerToken"])
        response = client.call_api(*request, _request_timeout=self.runner.api_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        if not stream:
            return response.read()
        return _chunks(response.response)


def _chunks(response: Any) -> Any:
    """A streamed response's body in pieces; closing the generator releases the connection."""
    try:
        yield from response.stream(65536)
    finally:
        response.release_conn()


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
