"""A scripted kubelet for the API server double: binds pods to one node, "pulls" images, runs every
pod as real Docker containers (a sandbox holding the pod's network namespace and IP, then the init
containers one after the other, each to completion, then one container per pod container, emptyDir
volumes shared between them all, subPath mounts of a volume's file or directory), runs exec probes, reports
status and Events the way the real kubelet words them, honours activeDeadlineSeconds and graceful
deletion. Scripted failures (image pulls, unschedulable pods, held pods) let tests reach every
branch of a runner's start.

Without a Docker client it runs no containers: pods still go Pending -> Running with a made-up IP,
and exec answers that the double has no containers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import fnmatch
import functools
import ipaddress
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tests.k8s.cluster import DELETED, MODIFIED, Change, Cluster
from tests.k8s.objects import (
    DEFAULT_STORAGE_CLASS,
    PVC_PROTECTION,
    RESOURCES,
    ApiError,
    is_extended_resource,
    now_rfc3339,
    parse_quantity,
)

log = logging.getLogger(__name__)

NODE_NAME = "double-node-1"
HOST_IP = "10.0.0.10"
DOUBLE_LABEL = "labs.k8s-double"  # on every Docker container and volume the double makes
POD_UID_LABEL = "labs.k8s-double.pod-uid"
CLAIM_UID_LABEL = "labs.k8s-double.claim-uid"
SANDBOX_COMMAND = ["/bin/sh", "-c", "chmod 0777 /volumes/* 2>/dev/null; trap 'exit 0' TERM INT; "
                                    "while :; do sleep 3600 & wait $!; done"]


@dataclass
class PodScript:
    """What the kubelet should do to pods whose name matches `pattern` (fnmatch)."""

    pattern: str
    hold: asyncio.Event | None = None  # set() releases held pods
    unschedulable: str = ""
    pull_failure: str = ""  # "ErrImagePull" (then ImagePullBackOff), "ErrImageNeverPull", ...


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    task: asyncio.Task[None] | None = None
    sandbox: str = ""
    containers: dict[str, str] = field(default_factory=dict)  # pod container name -> Docker id
    init_containers: dict[str, str] = field(default_factory=dict)  # init container name -> Docker id (kept for logs)
    volumes: list[str] = field(default_factory=list)
    terminating: bool = False
    terminated: asyncio.Event = field(default_factory=asyncio.Event)
    messages: dict[str, str] = field(default_factory=dict)  # container name -> termination message


class Kubelet:
    def __init__(self, cluster: Cluster, docker_client: Any | None, double_id: str, *,
                 sandbox_image: str = "labs/busybox:latest", step_delay: float = 0.02,
                 backoff_delay: float = 0.3) -> None:
        self.cluster = cluster
        self.docker = docker_client
        self.double_id = double_id
        self.sandbox_image = sandbox_image
        self.step_delay = step_delay
        self.backoff_delay = backoff_delay
        self.runs: dict[str, PodRun] = {}
        self.failures: list[str] = []  # engine errors while running pods; fixtures assert there are none
        self.scripts: list[PodScript] = []
        self.failed_images: dict[str, str] = {}  # image pattern -> waiting reason
        # StorageClasses the double's provisioner serves (dynamic, Immediate binding, reclaim Delete):
        # a claim is Bound to a Docker named volume; other classes leave it Pending (ProvisioningFailed).
        self.storage_classes: set[str] = {DEFAULT_STORAGE_CLASS}
        # The node's allocatable extended resources (a device plugin's, e.g. {"devices.kubevirt.io/kvm": 110}):
        # a pod asking for one the node lacks stays Pending ("Insufficient ..."). Never given to containers.
        self.extended_resources: dict[str, int] = {}
        self.background: set[asyncio.Task[Any]] = set()
        # Docker calls block: a pool of their own, so exec sessions never wait behind probes.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="k8s-double-docker")
        self._fake_ips = (str(ip) for ip in itertools.islice(ipaddress.ip_network("10.244.0.0/16").hosts(), 2, None))
        cluster.listeners.append(self._on_change)

    # scripting (called on the loop) ---------------------------------------------------------------
    def script(self, script: PodScript) -> None:
        self.scripts.insert(0, script)

    def _script_for(self, name: str) -> PodScript | None:
        return next((s for s in self.scripts if fnmatch.fnmatchcase(name, s.pattern)), None)

    async def _docker(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: func(*args, **kwargs))

    # reacting to the API ------------------------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        if change.plural == "persistentvolumeclaims":
            self._on_claim(change)
            return
        if change.plural != "pods":
            return
        if change.type == DELETED or (change.obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            asyncio.get_running_loop().call_soon(self._release_claims, change.namespace)  # a claim may now go
        meta = change.obj["metadata"]
        uid = meta["uid"]
        run = self.runs.get(uid)
        if run is None and change.type != DELETED:
            run = PodRun(uid, meta["namespace"], meta["name"])
            self.runs[uid] = run
            run.task = asyncio.get_running_loop().create_task(self._run_pod(run))
        if run is None or run.terminating:
            return
        if change.type == DELETED or (change.type == MODIFIED and meta.get("deletionTimestamp")):
            run.terminating = True
            grace = int(meta.get("deletionGracePeriodSeconds") or 0)
            self._background(self._terminate(run, grace, deleted=change.type == DELETED))

    # persistent volume claims (the PV controller and a dynamic provisioner) ----------------------------
    def _on_claim(self, change: Change) -> None:
        meta = change.obj["metadata"]
        loop = asyncio.get_running_loop()
        if change.type == DELETED:
            if self.docker is not None:
                self._background(self._docker(self._remove_claim_volume, meta["uid"]))
            return
        if meta.get("deletionTimestamp"):
            loop.call_soon(self._release_claims, change.namespace)
        elif change.type == "ADDED":
            self._background(self._provision(change.namespace, meta["name"], meta["uid"]))

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _claim(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        claim = self.cluster.get("persistentvolumeclaims", namespace, name)
        return claim if claim is not None and claim["metadata"]["uid"] == uid else None

    async def _provision(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self._pause()
            claim = self._claim(namespace, name, uid)
            if claim is None:
                return
            storage_class = claim["spec"].get("storageClassName") or ""
            if storage_class not in self.storage_classes:
                self.cluster.record_event(claim, "Warning", "ProvisioningFailed",
                                          f'storageclass.storage.k8s.io "{storage_class}" not found',
                                          component="persistentvolume-controller")
                return
            volume = f"pvc-{uid}"
            if self.docker is not None:
                await self._docker(self.docker.volumes.create, name=claim_volume(uid), driver="local",
                                   labels={DOUBLE_LABEL: self.double_id, CLAIM_UID_LABEL: uid})
            claim = self._claim(namespace, name, uid)
            if claim is None or claim["metadata"].get("deletionTimestamp"):
                return
            body = copy.deepcopy(claim)
            body["spec"]["volumeName"] = volume
            body["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bind-completed"] = "yes"
            claim = self.cluster.replace(RESOURCES["persistentvolumeclaims"], namespace, name, body)
            body = copy.deepcopy(claim)
            body["status"] = {"phase": "Bound", "accessModes": list(claim["spec"]["accessModes"]),
                              "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]}}
            claim = self.cluster.replace(RESOURCES["persistentvolumeclaims"], namespace, name, body,
                                         subresource="status")
            self.cluster.record_event(claim, "Normal", "ProvisioningSucceeded",
                                      f"Successfully provisioned volume {volume} using {storage_class}",
                                      component="persistentvolume-controller")
        except ApiError as exc:
            if exc.code not in (404, 409):  # anything but "changed or gone meanwhile" is the double's bug
                self.failures.append(f"claim {namespace}/{name}: {exc.message}")
            log.info("the double's provisioner left claim %s/%s: %s", namespace, name, exc.message)
        except Exception as exc:
            log.exception("the double's provisioner failed on claim %s/%s", namespace, name)
            self.failures.append(f"claim {namespace}/{name}: {exc!r}")

    def _claims_in_use(self, namespace: str) -> set[str]:
        used = set()
        for pod in self.cluster.select("pods", namespace):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for volume in pod["spec"].get("volumes") or []:
                if "persistentVolumeClaim" in volume:
                    used.add(volume["persistentVolumeClaim"]["claimName"])
        return used

    def _release_claims(self, namespace: str) -> None:
        """The pvc-protection controller: a claim being deleted loses its finalizer once no pod uses it."""
        used = None
        for claim in self.cluster.select("persistentvolumeclaims", namespace):
            meta = claim["metadata"]
            if not meta.get("deletionTimestamp") or PVC_PROTECTION not in (meta.get("finalizers") or []):
                continue
            if used is None:
                used = self._claims_in_use(namespace)
            if meta["name"] in used:
                continue
            body = copy.deepcopy(claim)
            body["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != PVC_PROTECTION]
            with contextlib.suppress(ApiError):
                self.cluster.replace(RESOURCES["persistentvolumeclaims"], namespace, meta["name"], body)

    def _remove_claim_volume(self, uid: str) -> None:
        """Reclaim policy Delete: the volume goes with its claim (retried while a container lets go of it)."""
        import docker.errors

        for _ in range(50):
            try:
                self.docker.volumes.get(claim_volume(uid)).remove(force=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                time.sleep(0.2)

    def _resource_problem(self, pod: dict[str, Any]) -> str:
        """Why the scheduler cannot place a pod for want of an extended resource ("" when it can). Init
        containers run one at a time, so the pod needs the most of them or the sum of its containers."""
        def wanted(container: dict[str, Any]) -> dict[str, int]:
            resources = container.get("resources") or {}
            asked = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
            return {name: int(parse_quantity(value)) for name, value in asked.items() if is_extended_resource(name)}

        need: dict[str, int] = {}
        for container in pod["spec"]["containers"]:
            for name, count in wanted(container).items():
                need[name] = need.get(name, 0) + count
        for container in pod["spec"].get("initContainers") or []:
            for name, count in wanted(container).items():
                need[name] = max(need.get(name, 0), count)
        short = sorted(name for name, count in need.items() if count > self.extended_resources.get(name, 0))
        if not short:
            return ""
        return ("0/1 nodes are available: " + ", ".join(f"1 Insufficient {name}" for name in short)
                + ". preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")

    def _claim_problem(self, pod: dict[str, Any]) -> str:
        """Why the scheduler cannot place a pod because of its claims ("" when it can)."""
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            if "persistentVolumeClaim" not in volume:
                continue
            name = volume["persistentVolumeClaim"]["claimName"]
            claim = self.cluster.get("persistentvolumeclaims", namespace, name)
            if claim is None:
                return f'0/1 nodes are available: persistentvolumeclaim "{name}" not found. preemption: 0/1 nodes ' \
                       "are available: 1 Preemption is not helpful for scheduling."
            if claim["metadata"].get("deletionTimestamp"):
                return f'0/1 nodes are available: persistentvolumeclaim "{name}" is being deleted. preemption: ' \
                       "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            if (claim.get("status") or {}).get("phase") != "Bound":
                return "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: " \
                       "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        return ""

    def _pod(self, run: PodRun) -> dict[str, Any] | None:
        pod = self.cluster.get("pods", run.namespace, run.name)
        return pod if pod is not None and pod["metadata"]["uid"] == run.uid else None

    def _status(self, run: PodRun, change: Any) -> None:
        if not run.terminating:
            self.cluster.update_status(run.namespace, run.name, run.uid, change)

    def _event(self, run: PodRun, kind: str, reason: str, message: str, component: str = "kubelet") -> None:
        pod = self._pod(run)
        if pod is not None:
            self.cluster.record_event(pod, kind, reason, message, component=component, host=NODE_NAME)

    async def _pause(self, seconds: float | None = None) -> bool:
        await asyncio.sleep(self.step_delay if seconds is None else seconds)
        return True

    # the life of a pod ------------------------------------------------------------------------------
    async def _run_pod(self, run: PodRun) -> None:
        try:
            await self._start_pod(run)
            if not run.terminating and self._pod(run) is not None:
                await self._watch_pod(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The engine refused something: a real kubelet reports CreateContainerError and goes on.
            log.exception("the double's kubelet failed on pod %s/%s", run.namespace, run.name)
            self.failures.append(f"pod {run.namespace}/{run.name}: {exc!r}")
            self._event(run, "Warning", "Failed", f"Error: {exc}")

    async def _start_pod(self, run: PodRun) -> None:
        await self._pause()
        script = self._script_for(run.name)
        if script and script.hold is not None:
            await script.hold.wait()
        pod = self._pod(run)
        if pod is None or run.terminating:
            return
        if script and script.unschedulable:
            def unschedulable(status: dict[str, Any]) -> None:
                status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": script.unschedulable, "lastTransitionTime": now_rfc3339(),
                                         "lastProbeTime": None}]
            self._status(run, unschedulable)
            self._event(run, "Warning", "FailedScheduling", script.unschedulable, component="default-scheduler")
            return
        # The scheduler retries a pod whose claims are missing or unbound, saying why once per reason.
        said = ""
        while (problem := self._claim_problem(pod) or self._resource_problem(pod)) and not run.terminating:
            if problem != said:
                said = problem

                def unschedulable_claims(status: dict[str, Any], why: str = problem) -> None:
                    status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                             "message": why, "lastTransitionTime": now_rfc3339(),
                                             "lastProbeTime": None}]
                self._status(run, unschedulable_claims)
                self._event(run, "Warning", "FailedScheduling", problem, component="default-scheduler")
            await self._pause(0.2)
            pod = self._pod(run)
            if pod is None:
                return
        if run.terminating:
            return
        # The scheduler binds the pod (the binding subresource sets spec.nodeName).
        if not self.cluster.bind(run.namespace, run.name, run.uid, NODE_NAME):
            return
        self._event(run, "Normal", "Scheduled", f"Successfully assigned {run.namespace}/{run.name} to {NODE_NAME}",
                    component="default-scheduler")
        now = now_rfc3339()
        containers = pod["spec"]["containers"]
        init_containers = pod["spec"].get("initContainers") or []

        unready = " ".join(c["name"] for c in containers)

        def scheduled(status: dict[str, Any]) -> None:
            # With init containers, every container waits as PodInitializing (kubelet_pods.go's default
            # waiting state) and the pod is not Initialized until the last one has succeeded.
            waiting = "PodInitializing" if init_containers else "ContainerCreating"
            status.update({
                "phase": "Pending", "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}], "startTime": now,
                "conditions": _conditions(now, scheduled=True, initialized=not init_containers, ready=False,
                                          reason="ContainersNotReady",
                                          message=f"containers with unready status: [{unready}]",
                                          pending_init=[c["name"] for c in init_containers]),
                "containerStatuses": [_waiting(c, waiting) for c in containers],
            })
            if init_containers:
                status["initContainerStatuses"] = [_waiting(c, "PodInitializing") for c in init_containers]
        self._status(run, scheduled)
        await self._pause()
        if not await self._create_sandbox(run, pod):
            return
        if init_containers and not await self._run_init_containers(run, pod, init_containers, script):
            return
        for container in containers:
            if run.terminating or not await self._start_container(run, pod, container, script):
                return
        ip = await self._pod_ip(run)

        def running(status: dict[str, Any]) -> None:
            status.update({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]})
        self._status(run, running)
        await asyncio.gather(*(self._probe_until_ready(run, c) for c in containers))

    async def _run_init_containers(self, run: PodRun, pod: dict[str, Any], init_containers: list[dict[str, Any]],
                                   script: PodScript | None) -> bool:
        """Each init container in order, to completion. One that fails ends the pod (restartPolicy Never:
        phase Failed, kubectl's Init:Error) or would be restarted (reported as Init:CrashLoopBackOff, as the
        double never restarts containers); whether the pod's containers may start."""
        names = [c["name"] for c in init_containers]
        restart_policy = pod["spec"].get("restartPolicy", "Always")
        for index, container in enumerate(init_containers):
            name = container["name"]
            if run.terminating or not await self._start_container(run, pod, container, script, init=True):
                return False
            code, message = await self._wait_for_exit(run, container)
            if code is None:
                return False  # the pod is going away
            started = _started_at(self._pod(run), name)
            terminated: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                          "startedAt": started, "finishedAt": now_rfc3339(),
                                          "containerID": f"docker://{run.init_containers[name]}"}
            if message:
                terminated["message"] = message

            def finished(status: dict[str, Any], done: dict[str, Any] = terminated, container_name: str = name,
                         left: list[str] = names[index + (0 if code else 1):]) -> None:
                _set_container_fields(status, container_name, state={"terminated": done}, ready=done["exitCode"] == 0,
                                      started=False)
                _set_initialized(status, left)
            self._status(run, finished)
            if code == 0:
                continue
            if restart_policy == "Never":
                self._status(run, _init_failed)
            else:
                backoff = f"back-off 10s restarting failed container={name} pod={run.name}_{run.namespace}({run.uid})"
                self._status(run, lambda s, container_name=name, done=terminated, why=backoff: _set_container_fields(
                    s, container_name, lastState={"terminated": done}, restartCount=1,
                    state={"waiting": {"reason": "CrashLoopBackOff", "message": why}}))
                self._event(run, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                                                       f"{run.name}_{run.namespace}({run.uid})")
            return False
        return True

    async def _wait_for_exit(self, run: PodRun, container: dict[str, Any]) -> tuple[int | None, str]:
        """An init container's exit code and termination message; (None, "") when the pod is deleted first."""
        container_id = run.init_containers[container["name"]]
        if self.docker is None:
            return 0, ""
        while not run.terminating:
            info = await self._docker(self.docker.api.inspect_container, container_id)
            state = info.get("State") or {}
            if not state.get("Running") and state.get("Status") in ("exited", "dead"):
                code = int(state.get("ExitCode") or 0)
                return code, await self._termination_message(container, container_id, code)
            await self._pause(0.1)
        return None, ""

    async def _termination_message(self, container: dict[str, Any], container_id: str, code: int) -> str:
        """terminationMessagePolicy FallbackToLogsOnError: a failed container's last log lines (at most 80
        lines and 2048 bytes, as the kubelet takes them); the double keeps no termination-log file."""
        if code == 0 or container.get("terminationMessagePolicy") != "FallbackToLogsOnError" or self.docker is None:
            return ""
        logs = await self._docker(self.docker.api.logs, container_id, stdout=True, stderr=True, tail=80)
        return bytes(logs)[-2048:].decode("utf-8", "replace")

    async def _create_sandbox(self, run: PodRun, pod: dict[str, Any]) -> bool:
        spec = pod["spec"]
        unsupported = [v["name"] for v in spec.get("volumes") or []
                       if not ({"emptyDir", "projected", "persistentVolumeClaim"} & set(v)
                               or (v.get("hostPath") or {}).get("type") == "CharDevice")]
        if unsupported:
            self._event(run, "Warning", "FailedMount", f"Unable to attach or mount volumes: unmounted volumes="
                                                       f"[{' '.join(unsupported)}]: the API server double mounts "
                                                       "only emptyDir, persistentVolumeClaim and hostPath "
                                                       "CharDevice volumes")
            return False
        if self.docker is None:
            return True
        labels = {DOUBLE_LABEL: self.double_id, POD_UID_LABEL: run.uid}
        mounts = []
        import docker.types

        for volume in spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                # Like the local-path provisioner's directories, a fresh volume is writable by anyone.
                mounts.append(docker.types.Mount(f"/volumes/{volume['name']}", self._claim_volume_of(pod, volume),
                                                 type="volume", no_copy=True))
                continue
            if "emptyDir" not in volume:
                continue  # the service account token volume: nothing to mount without a cluster
            name = f"k8sdouble-{run.uid[:8]}-{volume['name']}"[:120]
            options: dict[str, Any] = {}
            if (volume["emptyDir"] or {}).get("medium") == "Memory":
                size = (volume["emptyDir"] or {}).get("sizeLimit")
                options = {"type": "tmpfs", "device": "tmpfs",
                           "o": f"size={int(parse_quantity(size))}" if size else "size=64m"}
            await self._docker(self.docker.volumes.create, name=name, driver="local", driver_opts=options,
                               labels=labels)
            run.volumes.append(name)
            mounts.append(docker.types.Mount(f"/volumes/{volume['name']}", name, type="volume", no_copy=True))
        container = await self._docker(
            self.docker.containers.run, self.sandbox_image, SANDBOX_COMMAND, detach=True, labels=labels,
            hostname=(spec.get("hostname") or run.name)[:63], name=f"k8sdouble-{run.uid[:12]}-sandbox",
            mounts=mounts, mem_limit="32m", ipc_mode="shareable")
        run.sandbox = container.id
        return True

    async def _pod_ip(self, run: PodRun) -> str:
        if self.docker is None:
            return next(self._fake_ips)
        info = await self._docker(self.docker.api.inspect_container, run.sandbox)
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        return next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), "")

    async def _image_user(self, image: str) -> str:
        if self.docker is None:
            return ""
        info = await self._docker(self.docker.api.inspect_image, image)
        return str((info.get("Config") or {}).get("User") or "")

    async def _image_present(self, image: str) -> bool:
        if self.docker is None:
            return True
        import docker.errors

        try:
            await self._docker(self.docker.api.inspect_image, image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _pull_failure(self, image: str, script: PodScript | None) -> str:
        if script and script.pull_failure:
            return script.pull_failure
        return next((reason for pattern, reason in self.failed_images.items() if fnmatch.fnmatchcase(image, pattern)),
                    "")

    async def _start_container(self, run: PodRun, pod: dict[str, Any], container: dict[str, Any],
                               script: PodScript | None, init: bool = False) -> bool:
        name, image = container["name"], container["image"]
        policy = container.get("imagePullPolicy", "IfNotPresent")
        present = await self._image_present(image)
        failure = self._pull_failure(image, script)
        if not failure and policy == "Never" and not present:
            failure = "ErrImageNeverPull"
        if not failure and not present:
            failure = "ErrImagePull"
        if policy != "Never" and (failure == "ErrImagePull" or (policy == "Always" and not failure)):
            self._event(run, "Normal", "Pulling", f'Pulling image "{image}"')
            await self._pause()
        if failure:
            await self._fail_pull(run, container, failure)
            return False
        if policy == "Always":
            self._event(run, "Normal", "Pulled", f'Successfully pulled image "{image}" in 12ms (12ms including '
                                                 'waiting). Image size: 2000000 bytes.')
        else:
            self._event(run, "Normal", "Pulled", f'Container image "{image}" already present on machine')
        problem = await self._config_problem(pod, container)
        if problem:
            self._status(run, lambda s: _set_container(s, name, _waiting(container, "CreateContainerConfigError",
                                                                          problem)))
            self._event(run, "Warning", "Failed", f"Error: {problem}")
            return False
        ids = run.init_containers if init else run.containers
        if self.docker is not None:
            sources = await self._subpath_sources(run, pod, container)
            created = await self._docker(self.docker.api.create_container, image,
                                         **self._create_options(run, pod, container, sources))
            ids[name] = created["Id"]
            self._event(run, "Normal", "Created", f"Created container: {name}")
            await self._docker(self.docker.api.start, created["Id"])
        else:
            ids[name] = f"virtual-{run.uid[:8]}-{name}"
            self._event(run, "Normal", "Created", f"Created container: {name}")
        self._event(run, "Normal", "Started", f"Started container {name}")
        started = now_rfc3339()
        container_id = ids[name]

        def running(status: dict[str, Any]) -> None:
            _set_container(status, name, {
                "name": name, "image": image, "imageID": f"docker-pullable://{image}", "containerID":
                f"docker://{container_id}", "ready": False, "started": init or not container.get("startupProbe"),
                "restartCount": 0, "state": {"running": {"startedAt": started}}})
        self._status(run, running)
        return True

    async def _fail_pull(self, run: PodRun, container: dict[str, Any], reason: str) -> None:
        image = container["image"]
        if reason == "ErrImageNeverPull":
            message = f'Container image "{image}" is not present with pull policy of Never'
            self._status(run, lambda s: _set_container(s, container["name"], _waiting(container, reason, message)))
            self._event(run, "Warning", "ErrImageNeverPull", message)
            return
        message = (f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
                   f"{image}: not found")
        self._event(run, "Warning", "Failed", f'Failed to pull image "{image}": {message}')
        self._event(run, "Warning", "Failed", f"Error: {reason}")
        self._status(run, lambda s: _set_container(s, container["name"], _waiting(container, reason, message)))
        await self._pause(self.backoff_delay)
        if run.terminating or reason != "ErrImagePull":
            return
        backoff = f'Back-off pulling image "{image}"'
        self._event(run, "Normal", "BackOff", backoff)
        self._event(run, "Warning", "Failed", "Error: ImagePullBackOff")
        self._status(run, lambda s: _set_container(s, container["name"], _waiting(container, "ImagePullBackOff",
                                                                                  backoff)))

    async def _config_problem(self, pod: dict[str, Any], container: dict[str, Any]) -> str:
        context = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        if context.get("runAsNonRoot"):
            user = context.get("runAsUser")
            if user is None:
                image_user = (await self._image_user(container["image"])).split(":")[0]
                if image_user in ("", "0", "root"):
                    return "container has runAsNonRoot and image will run as root"
                if not image_user.isdigit():
                    return f"container has runAsNonRoot and image has non-numeric user ({image_user}), cannot " \
                           "verify user is non-root"
            elif int(user) == 0:
                return "container's runAsUser breaks non-root policy"
        return ""

    def _claim_volume_of(self, pod: dict[str, Any], volume: dict[str, Any]) -> str:
        claim = self.cluster.get("persistentvolumeclaims", pod["metadata"]["namespace"],
                                 volume["persistentVolumeClaim"]["claimName"])
        if claim is None:
            raise RuntimeError(f"claim {volume['persistentVolumeClaim']['claimName']} vanished under a scheduled pod")
        return claim_volume(claim["metadata"]["uid"])

    def _volume_name(self, run: PodRun, pod: dict[str, Any], volume: dict[str, Any]) -> str:
        """The Docker volume behind an emptyDir or a claim."""
        if "persistentVolumeClaim" in volume:
            return self._claim_volume_of(pod, volume)
        return f"k8sdouble-{run.uid[:8]}-{volume['name']}"[:120]

    async def _subpath_sources(self, run: PodRun, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """mountPath → the host path a subPath mount binds: the volume's directory on the engine's host
        (the same machine here), the subPath inside it, made as a directory when missing (as the kubelet
        does), and never a symlink out of the volume."""
        assert self.docker is not None
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        sources: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            sub = mount.get("subPath") or ""
            volume = volumes.get(mount["name"]) or {}
            if not sub or not ({"emptyDir", "persistentVolumeClaim"} & set(volume)):
                continue
            info = await self._docker(self.docker.api.inspect_volume, self._volume_name(run, pod, volume))
            root = os.path.realpath(info["Mountpoint"])
            if not os.path.isdir(root):
                raise RuntimeError(f"subPath {sub!r}: the double needs the engine's volumes on this host ({root})")
            path = os.path.realpath(os.path.join(root, sub))
            if path != root and not path.startswith(root + os.sep):
                raise RuntimeError(f"subPath {sub!r} leaves its volume")
            if not os.path.exists(path):
                os.makedirs(path, mode=0o750, exist_ok=True)
            sources[mount["mountPath"]] = path
        return sources

    def _create_options(self, run: PodRun, pod: dict[str, Any], container: dict[str, Any],
                        sources: dict[str, str] | None = None) -> dict[str, Any]:
        import docker.types

        spec = pod["spec"]
        context = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        capabilities = context.get("capabilities") or {}
        security_opt = []
        if context.get("allowPrivilegeEscalation") is False:
            security_opt.append("no-new-privileges:true")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            security_opt.append("seccomp=unconfined")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined" and _apparmor_enabled():
            security_opt.append("apparmor=unconfined")
        limits = (container.get("resources") or {}).get("limits") or {}
        mounts = []
        devices = []
        volume_names = {v["name"]: v for v in spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            volume = volume_names.get(mount["name"]) or {}
            if mount["mountPath"] in (sources or {}):
                read_only = bool(mount.get("readOnly") or (volume.get("persistentVolumeClaim") or {}).get("readOnly"))
                mounts.append(docker.types.Mount(mount["mountPath"], (sources or {})[mount["mountPath"]], type="bind",
                                                 read_only=read_only))
            elif "emptyDir" in volume:
                mounts.append(docker.types.Mount(mount["mountPath"], f"k8sdouble-{run.uid[:8]}-{mount['name']}"[:120],
                                                 type="volume", read_only=bool(mount.get("readOnly")), no_copy=True))
            elif "hostPath" in volume:
                # A node's character device (/dev/net/tun): what `docker run --device` gives.
                devices.append(f"{volume['hostPath']['path']}:{mount['mountPath']}:rwm")
            elif "persistentVolumeClaim" in volume:
                mounts.append(docker.types.Mount(mount["mountPath"], self._claim_volume_of(pod, volume), type="volume",
                                                 read_only=bool(mount.get("readOnly")
                                                                or volume["persistentVolumeClaim"].get("readOnly")),
                                                 no_copy=True))
        host_config = self.docker.api.create_host_config(
            network_mode=f"container:{run.sandbox}", ipc_mode=f"container:{run.sandbox}",
            cap_drop=[c for c in capabilities.get("drop") or []] or None,
            cap_add=[c for c in capabilities.get("add") or []] or None,
            security_opt=security_opt or None, privileged=bool(context.get("privileged")),
            read_only=bool(context.get("readOnlyRootFilesystem")), mounts=mounts or None, devices=devices or None,
            mem_limit=int(parse_quantity(limits["memory"])) if "memory" in limits else None,
            memswap_limit=int(parse_quantity(limits["memory"])) if "memory" in limits else None,
            nano_cpus=int(parse_quantity(limits["cpu"]) * Decimal(10**9)) if "cpu" in limits else None,
        )
        if context.get("procMount") == "Unmasked":
            # Nothing of /proc hidden or read-only (what `--security-opt systempaths=unconfined` does).
            host_config["MaskedPaths"], host_config["ReadonlyPaths"] = [], []
        user = ""
        if context.get("runAsUser") is not None:
            user = str(context["runAsUser"]) + (f":{context['runAsGroup']}" if context.get("runAsGroup") is not None
                                                else "")
        env = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") in ("metadata.name",
                                                                                          "metadata.namespace"):
                path = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = pod["metadata"]["name" if path == "metadata.name" else "namespace"]
        options: dict[str, Any] = {
            "host_config": host_config, "labels": {DOUBLE_LABEL: self.double_id, POD_UID_LABEL: run.uid},
            "name": f"k8sdouble-{run.uid[:12]}-{container['name']}", "detach": True,
            "environment": env, "tty": bool(container.get("tty")), "stdin_open": bool(container.get("stdin")),
            "working_dir": container.get("workingDir"), "user": user or None,
        }
        if container.get("command"):
            options["entrypoint"] = container["command"]
            options["command"] = container.get("args") or []
        elif container.get("args"):
            options["command"] = container["args"]
        return options

    # probes ---------------------------------------------------------------------------------------
    async def _probe(self, run: PodRun, container: dict[str, Any], probe: dict[str, Any]) -> bool:
        if self.docker is None:
            return True
        timeout = float(probe.get("timeoutSeconds", 1))
        if "exec" in probe:
            code = await self.exec_quietly(run, container["name"], probe["exec"].get("command") or [], timeout)
            return code == 0
        target = probe.get("tcpSocket") or probe.get("httpGet")
        if target is not None:
            ip = await self._pod_ip(run)
            port = target.get("port")
            if isinstance(port, str):
                port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), 0)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, int(port)), timeout)
            except (TimeoutError, OSError, ValueError):
                return False
            writer.close()
            return True
        return True

    async def exec_quietly(self, run: PodRun, container: str, command: list[str], timeout: float) -> int | None:
        container_id = run.containers.get(container)
        if self.docker is None or not container_id:
            return None

        def run_it() -> int | None:
            created = self.docker.api.exec_create(container_id, command, stdout=True, stderr=True)
            self.docker.api.exec_start(created["Id"])
            return self.docker.api.exec_inspect(created["Id"]).get("ExitCode")

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self.pool, run_it), timeout + 5)
        except (TimeoutError, Exception):
            return None

    async def _probe_until_ready(self, run: PodRun, container: dict[str, Any]) -> None:
        name = container["name"]
        for kind in ("startupProbe", "readinessProbe"):
            probe = container.get(kind)
            if not probe:
                continue
            await self._pause(float(probe.get("initialDelaySeconds", 0)))
            failures = 0
            while not run.terminating:
                if await self._probe(run, container, probe):
                    break
                failures += 1
                label = "Startup" if kind == "startupProbe" else "Readiness"
                self._event(run, "Warning", "Unhealthy", f"{label} probe failed")
                if kind == "startupProbe" and failures >= int(probe.get("failureThreshold", 3)):
                    self._event(run, "Normal", "Killing", f"Container {name} failed startup probe, will be "
                                                          "restarted")
                    self._status(run, lambda s: _set_container(s, name, _waiting(
                        container, "CrashLoopBackOff", f"back-off 10s restarting failed container={name}")))
                    return
                await self._pause(float(probe.get("periodSeconds", 10)))
            if kind == "startupProbe":
                self._status(run, lambda s: _set_container_fields(s, name, started=True))
        if run.terminating:
            return
        self._status(run, lambda s: _set_container_fields(s, name, ready=True))
        self._status(run, _refresh_ready)

    # watching running pods ------------------------------------------------------------------------------
    async def _watch_pod(self, run: PodRun) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        deadline_seconds = pod["spec"].get("activeDeadlineSeconds")
        started = time.monotonic()
        restart_policy = pod["spec"].get("restartPolicy", "Always")
        while not run.terminating:
            await self._pause(0.5)
            if run.terminating:
                return
            if deadline_seconds and time.monotonic() - started > deadline_seconds:
                await self._stop_containers(run, 0)
                message = "Pod was active on the node longer than the specified deadline"
                self._event(run, "Normal", "DeadlineExceeded", message)

                self._status(run, _deadline_exceeded)
                return
            if self.docker is None:
                continue
            exited = await self._exited_containers(run)
            if not exited:
                continue
            self._status(run, functools.partial(_record_exits, exited=exited, restart_policy=restart_policy,
                                                messages=run.messages))
            if restart_policy == "Never" or all(code == 0 for code in exited.values()):
                pod = self._pod(run)
                statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
                if all("terminated" in (s.get("state") or {}) for s in statuses):
                    return
            for name in exited:
                self._event(run, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                                                       f"{run.name}_{run.namespace}({run.uid})")

    async def _exited_containers(self, run: PodRun) -> dict[str, int]:
        exited = {}
        for name, container_id in list(run.containers.items()):
            try:
                info = await self._docker(self.docker.api.inspect_container, container_id)
            except Exception as exc:  # removed under us: the pod is going away
                log.debug("inspecting %s: %s", container_id, exc)
                continue
            state = info.get("State") or {}
            if not state.get("Running") and state.get("Status") == "exited":
                exited[name] = int(state.get("ExitCode") or 0)
                run.containers.pop(name)
                pod = self._pod(run)
                spec: dict[str, Any] = next((c for c in pod["spec"]["containers"] if c["name"] == name), {}) \
                    if pod is not None else {}
                message = await self._termination_message(spec, container_id, exited[name])
                if message:
                    run.messages[name] = message
        return exited

    # stopping ---------------------------------------------------------------------------------------
    async def _stop_containers(self, run: PodRun, grace: int) -> None:
        if self.docker is None:
            return
        ids = list(run.containers.values()) + list(run.init_containers.values())
        await asyncio.gather(*(self._docker(self._stop_one, cid, grace) for cid in ids))

    def _stop_one(self, container_id: str, grace: int) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.docker.api.stop(container_id, timeout=grace)

    async def _terminate(self, run: PodRun, grace: int, deleted: bool) -> None:
        try:
            for name in list(run.containers):
                self._event(run, "Normal", "Killing", f"Stopping container {name}")
            if run.task is not None:
                # The start path checks `terminating` between steps; let it reach one.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(run.task), timeout=10)
                run.task.cancel()
            await self._stop_containers(run, grace)
            await self.remove_pod_containers(run.uid)
            if not deleted:
                self.cluster.finish_pod_deletion(run.namespace, run.name, run.uid)
        except Exception:
            log.exception("the double's kubelet could not stop pod %s/%s", run.namespace, run.name)
        finally:
            run.terminated.set()

    async def remove_pod_containers(self, uid: str) -> None:
        if self.docker is None:
            return
        await self._docker(self._remove_labelled, f"{POD_UID_LABEL}={uid}")

    def _remove_labelled(self, label: str) -> None:
        import docker.errors

        for container in self.docker.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True, v=True)
        for volume in self.docker.volumes.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)

    async def shutdown(self) -> None:
        for run in list(self.runs.values()):
            run.terminating = True
            if run.task is not None:
                run.task.cancel()
        # A pod deleted at once (a finished pod has no grace period) may still be stopping its containers.
        if self.background:
            _, pending = await asyncio.wait(list(self.background), timeout=15)
            for task in pending:
                task.cancel()
        if self.docker is not None:
            await self._docker(self._remove_labelled, f"{DOUBLE_LABEL}={self.double_id}")
        self.pool.shutdown(wait=False, cancel_futures=True)

    def docker_id(self, uid: str, container: str) -> str | None:
        run = self.runs.get(uid)
        return (run.containers.get(container) or run.init_containers.get(container)) if run else None


def _apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as flag:
            return flag.read().strip().upper().startswith("Y")
    except OSError:
        return False


def claim_volume(uid: str) -> str:
    """The Docker named volume behind a bound claim."""
    return f"k8sdouble-pvc-{uid}"


# status helpers -------------------------------------------------------------------------------------
def _conditions(now: str, *, scheduled: bool, initialized: bool, ready: bool, reason: str = "",
                message: str = "", pending_init: list[str] | None = None) -> list[dict[str, Any]]:
    def condition(kind: str, value: bool, why: str = "", text: str = "") -> dict[str, Any]:
        item: dict[str, Any] = {"type": kind, "status": "True" if value else "False", "lastProbeTime": None,
                                "lastTransitionTime": now}
        if not value and why:
            item.update({"reason": why, "message": text})
        return item

    return [condition("PodReadyToStartContainers", True),
            condition("Initialized", initialized, "ContainersNotInitialized",
                      f"containers with incomplete status: [{' '.join(pending_init or [])}]"),
            condition("Ready", ready, reason, message), condition("ContainersReady", ready, reason, message),
            condition("PodScheduled", scheduled)]


def _waiting(container: dict[str, Any], reason: str, message: str = "") -> dict[str, Any]:
    waiting: dict[str, Any] = {"reason": reason}
    if message:
        waiting["message"] = message
    return {"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "started": False, "restartCount": 0, "state": {"waiting": waiting}}


def _set_container(status: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """Replace a container's status, in initContainerStatuses or containerStatuses (names are unique)."""
    inits = status.get("initContainerStatuses") or []
    statuses = inits if any(item["name"] == name for item in inits) else status.setdefault("containerStatuses", [])
    for index, item in enumerate(statuses):
        if item["name"] == name:
            value.setdefault("restartCount", item.get("restartCount", 0))
            statuses[index] = value
            return
    statuses.append(value)


def _set_container_fields(status: dict[str, Any], name: str, **values: Any) -> None:
    for item in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if item["name"] == name:
            item.update(values)


def _started_at(pod: dict[str, Any] | None, name: str) -> str:
    for item in ((pod or {}).get("status") or {}).get("initContainerStatuses") or []:
        if item["name"] == name:
            return str(((item.get("state") or {}).get("running") or {}).get("startedAt") or now_rfc3339())
    return now_rfc3339()


def _set_conditions(status: dict[str, Any], types: tuple[str, ...], missing: list[str], reason: str,
                    message: str) -> None:
    """Conditions that hold once no container is `missing`; otherwise False, saying which are."""
    now = now_rfc3339()
    for condition in status.get("conditions") or []:
        if condition["type"] not in types:
            continue
        value = "False" if missing else "True"
        if condition["status"] != value:
            condition["status"], condition["lastTransitionTime"] = value, now
        if missing:
            condition["reason"] = reason
            condition["message"] = f"{message}: [{' '.join(missing)}]"
        else:
            condition.pop("reason", None)
            condition.pop("message", None)


def _set_initialized(status: dict[str, Any], pending: list[str]) -> None:
    """The Initialized condition: True once no init container is left, else which ones are."""
    _set_conditions(status, ("Initialized",), pending, "ContainersNotInitialized", "containers with incomplete status")


def _init_failed(status: dict[str, Any]) -> None:
    """restartPolicy Never and an init container failed: the pod is over before its containers ran."""
    status["phase"] = "Failed"
    _refresh_ready(status)


def _refresh_ready(status: dict[str, Any]) -> None:
    unready = [s["name"] for s in status.get("containerStatuses") or [] if not s.get("ready")]
    _set_conditions(status, ("Ready", "ContainersReady"), unready, "ContainersNotReady",
                    "containers with unready status")


def _deadline_exceeded(status: dict[str, Any]) -> None:
    status.update({"phase": "Failed", "reason": "DeadlineExceeded",
                   "message": "Pod was active on the node longer than the specified deadline"})
    for item in status.get("containerStatuses") or []:
        item["ready"] = False
    _refresh_ready(status)


def _record_exits(status: dict[str, Any], exited: dict[str, int], restart_policy: str,
                  messages: dict[str, str] | None = None) -> None:
    now = now_rfc3339()
    for item in status.get("containerStatuses") or []:
        if item["name"] not in exited:
            continue
        code = exited[item["name"]]
        started = ((item.get("state") or {}).get("running") or {}).get("startedAt", now)
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                      "finishedAt": now, "containerID": item.get("containerID", "")}
        if (messages or {}).get(item["name"]):
            terminated["message"] = (messages or {})[item["name"]]
        item["ready"] = False
        if restart_policy == "Never" or (restart_policy == "OnFailure" and code == 0):
            item["state"] = {"terminated": terminated}
        else:
            # The double does not restart containers: it reports the back-off a crash loop shows.
            item["lastState"] = {"terminated": terminated}
            item["restartCount"] = int(item.get("restartCount") or 0) + 1
            item["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed "
                                         f"container={item['name']}"}}
    statuses = status.get("containerStatuses") or []
    if all("terminated" in (s.get("state") or {}) for s in statuses):
        codes = [s["state"]["terminated"]["exitCode"] for s in statuses]
        status["phase"] = "Succeeded" if all(c == 0 for c in codes) else "Failed"
    _refresh_ready(status)

