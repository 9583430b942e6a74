"""The state behind the API server double: objects, resource versions, watch history, deletion with
grace periods and finalizers, and the garbage collector (ownerReferences).

Everything here runs on the double's event loop thread only, so it needs no locks; the HTTP layer
(apiserver.py) and the kubelet (kubelet.py) call it from there, tests through ApiServerDouble.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.k8s.objects import (
    RESOURCES,
    ApiError,
    Cause,
    FieldRequirement,
    Requirement,
    ResourceType,
    already_exists,
    bad_request,
    conflict,
    default_object,
    fields_match,
    forbidden,
    generated_suffix,
    invalid,
    labels_match,
    not_found,
    now_rfc3339,
    rfc3339_in,
    stale_conflict,
    validate_object,
    validate_update,
)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass
class Change:
    rv: int
    type: str
    plural: str
    namespace: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(eq=False)
class Watcher:
    plural: str
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)

    def wants(self, change: Change) -> bool:
        return change.plural == self.plural and (self.namespace is None or change.namespace == self.namespace)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None and labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def translate(self, change: Change) -> tuple[str, dict[str, Any]] | None:
        """What this watcher sees of a change: a filtered watch turns objects that start or stop
        matching its selectors into ADDED and DELETED, as the watch cache does."""
        now, before = self.matches(change.obj), self.matches(change.old)
        if change.type == ADDED:
            return (ADDED, change.obj) if now else None
        if change.type == DELETED:
            return (DELETED, change.obj) if now else None
        if now and before:
            return MODIFIED, change.obj
        if now:
            return ADDED, change.obj
        if before:
            return DELETED, change.obj
        return None


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
               "volumeMounts": "mountPath", "ports": "containerPort", "ownerReferences": "uid",
               "imagePullSecrets": "name", "conditions": "type"}


def strategic_merge_patch(target: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes' strategic merge patch for the lists the runner touches (merged by their merge key;
    other lists replaced). `$patch` directives are not supported."""
    if isinstance(patch, list) and isinstance(target, list) and key in _MERGE_KEYS:
        merge_key = _MERGE_KEYS[key]
        result = copy.deepcopy(target)
        for item in patch:
            index = next((i for i, old in enumerate(result) if isinstance(old, dict) and isinstance(item, dict)
                          and old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                result.append(copy.deepcopy(item))
            else:
                result[index] = strategic_merge_patch(result[index], item)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if any(str(k).startswith("$") for k in patch):
        raise bad_request("the API server double does not support $patch directives in strategic merge patches")
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = strategic_merge_patch(result.get(name), value, name)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test, move, copy)."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    document = copy.deepcopy(target)

    def parent_of(parts: list[str]) -> tuple[Any, str]:
        node = document
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(path: str) -> Any:
        node = document
        for part in _pointer(path):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def remove(path: str) -> Any:
        parent, last = parent_of(_pointer(path))
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)

    def add(path: str, value: Any) -> None:
        parent, last = parent_of(_pointer(path))
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(value))
        else:
            parent[last] = copy.deepcopy(value)

    try:
        for op in operations:
            kind, path = op.get("op"), op.get("path", "")
            if kind == "add":
                add(path, op["value"])
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, op["value"])
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                                   f"request: testing value {path} failed")
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, get(op["from"]))
            else:
                raise bad_request(f"unexpected JSON patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                       f"JSON patch could not be applied ({exc!r})") from exc
    return document


class Cluster:
    """Objects of every served resource, one resource version counter, and the change history."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, history_limit: int = 4000, gc_delay: float = 0.05) -> None:
        self.loop = loop
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {plural: {} for plural in RESOURCES}
        self.rv = 1000
        self.history: deque[Change] = deque()
        self.history_limit = history_limit
        # Watches starting from a resource version below this one get 410 Gone.
        self.oldest_rv = self.rv
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Change], None]] = []
        self.gc_delay = gc_delay
        self._gc_handle: asyncio.TimerHandle | None = None

    # reading --------------------------------------------------------------------------------
    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects[plural].get((namespace, name))

    def must_get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(rt.plural, namespace, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def select(self, plural: str, namespace: str | None, labels: list[Requirement] | None = None,
               fields: list[FieldRequirement] | None = None) -> list[dict[str, Any]]:
        found = [obj for (ns, _), obj in sorted(self.objects[plural].items())
                 if namespace is None or ns == namespace]
        return [obj for obj in found if labels_match(labels or [], obj) and fields_match(fields or [], obj)]

    def by_uid(self) -> dict[str, dict[str, Any]]:
        return {obj["metadata"]["uid"]: obj for table in self.objects.values() for obj in table.values()}

    # changing -------------------------------------------------------------------------------
    def _commit(self, kind: str, plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        for empty in ("labels", "annotations", "ownerReferences", "finalizers"):
            if not obj["metadata"].get(empty, True):
                del obj["metadata"][empty]  # Go's omitempty: an empty list or map is not sent
        key = _key(obj)
        if kind == DELETED:
            self.objects[plural].pop(key, None)
        else:
            self.objects[plural][key] = obj
        change = Change(self.rv, kind, plural, key[0], copy.deepcopy(obj), copy.deepcopy(old) if old else None)
        self.history.append(change)
        while len(self.history) > self.history_limit:
            self.oldest_rv = self.history.popleft().rv
        for watcher in list(self.watchers):
            if watcher.wants(change):
                watcher.queue.put_nowait(change)
        for listener in list(self.listeners):
            listener(change)
        self.schedule_gc()
        return obj

    def compact(self) -> int:
        """Forget the change history, as etcd compaction does: older watches get 410 Gone."""
        self.history.clear()
        self.oldest_rv = self.rv
        return self.rv

    def ensure_namespace(self, name: str) -> None:
        if self.get("namespaces", "", name) is None:
            self.create(RESOURCES["namespaces"], "", {"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": name}})

    def create(self, rt: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        if body.get("kind") not in (None, rt.kind) or body.get("apiVersion") not in (None, rt.api_version):
            raise bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the expected "
                              f"API version ({rt.api_version})" if body.get("apiVersion") not in (None, rt.api_version)
                              else f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                              f"({rt.kind})")
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            if self.get("namespaces", "", namespace) is None:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                               {"name": namespace, "kind": "namespaces"})
            meta["namespace"] = namespace
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + generated_suffix()
            else:
                raise invalid(rt, "", [Cause("metadata.name", "FieldValueRequired",
                                             "Required value: name or generateName is required")])
        for server_field in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                             "selfLink", "creationTimestamp"):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.plural == "pods":
            meta["generation"] = 1
        meta["resourceVersion"] = "1"  # replaced on commit; the schema wants a string here
        default_object(rt.plural, obj)
        validate_object(rt, obj)
        if rt.plural == "pods":
            self._admit_pod_security(namespace, obj)
        if self.get(rt.plural, meta.get("namespace", ""), meta["name"]) is not None:
            raise already_exists(rt, meta["name"])
        return self._commit(ADDED, rt.plural, obj, None)

    def _admit_pod_security(self, namespace: str, pod: dict[str, Any]) -> None:
        """Pod Security admission, for the namespace's `enforce` level: baseline (and restricted) refuse
        privileged containers, host namespaces and capabilities beyond baseline's list, with the real
        plugin's wording. Only these checks: enough to tell a privileged namespace from a baseline one."""
        labels = ((self.get("namespaces", "", namespace) or {}).get("metadata") or {}).get("labels") or {}
        level = labels.get("pod-security.kubernetes.io/enforce", "privileged")
        if level not in ("baseline", "restricted"):
            return
        spec = pod.get("spec") or {}
        problems: list[str] = []
        host = [f"{key}={str(True).lower()}" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
        if host:
            problems.append(f"host namespaces ({', '.join(host)})")
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
        if host_paths:
            problems.append(f"hostPath volumes ({', '.join(repr(n).replace(chr(39), chr(34)) for n in host_paths)})")
        privileged = [c["name"] for c in containers if (c.get("securityContext") or {}).get("privileged")]
        if privileged:
            names = ", ".join(f'"{n}"' for n in privileged)
            problems.append(f"privileged (container{'s' if len(privileged) > 1 else ''} {names} must not set "
                            "securityContext.privileged=true)")
        for container in containers:
            added = ((container.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
            extra = [c for c in added if c not in BASELINE_CAPABILITIES]
            if extra:
                problems.append(f'non-default capabilities (container "{container["name"]}" must not include '
                                f'{", ".join(repr(c).replace(chr(39), chr(34)) for c in extra)} in '
                                "securityContext.capabilities.add)")
        for container in containers:
            context = container.get("securityContext") or {}
            name = container["name"]
            if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
                problems.append(f'forbidden AppArmor profile (container "{name}" must not set '
                                'securityContext.appArmorProfile.type to "Unconfined")')
            if context.get("procMount") not in (None, "Default"):
                problems.append(f'procMount (container "{name}" must not set securityContext.procMount to '
                                f'"{context["procMount"]}")')
            if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
                problems.append(f'seccompProfile (pod or container "{name}" must not set '
                                'securityContext.seccompProfile.type to "Unconfined")')
        if problems:
            raise forbidden(RESOURCES["pods"], pod["metadata"]["name"],
                            f'violates PodSecurity "{level}:latest": {", ".join(problems)}')

    def replace(self, rt: ResourceType, namespace: str, name: str, body: Any, *, subresource: str = "",
                expected_rv: str | None = None) -> dict[str, Any]:
        """PUT (and the end of every PATCH): optimistic concurrency on metadata.resourceVersion."""
        old = self.must_get(rt, namespace, name)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise bad_request("the body of the request was in an unknown format")
        meta = body["metadata"]
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                              f"({name})")
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        wanted_rv = expected_rv if expected_rv is not None else meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise stale_conflict(rt, name)
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                                     f"{old['metadata']['uid']}")
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status") or {})
        else:
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])  # status changes only through /status
            new_meta = new["metadata"]
            for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                                 "generation", "namespace"):
                if server_field in old["metadata"]:
                    new_meta[server_field] = old["metadata"][server_field]
                else:
                    new_meta.pop(server_field, None)
            new_meta["name"] = name
            if old["metadata"].get("deletionTimestamp"):
                added = set(new_meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise invalid(rt, name, [Cause("metadata.finalizers", "FieldValueForbidden",
                                                   "Forbidden: no new finalizers can be added if the object is being "
                                                   "deleted")])
            if rt.plural == "pods" and new.get("spec") != old.get("spec"):
                new_meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        validate_object(rt, new)
        validate_update(rt, old, new)
        if new == old:
            return old  # a no-op update keeps its resource version, as the real server does
        committed = self._commit(MODIFIED, rt.plural, new, old)
        self._finalize_if_done(rt, committed)
        return committed

    def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, patch: Any,
              subresource: str = "") -> dict[str, Any]:
        old = self.must_get(rt, namespace, name)
        base = copy.deepcopy(old)
        if content_type.startswith("application/merge-patch+json"):
            patched = merge_patch(base, patch)
        elif content_type.startswith("application/strategic-merge-patch+json"):
            patched = strategic_merge_patch(base, patch)
        elif content_type.startswith("application/json-patch+json"):
            patched = json_patch(base, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                        "accepted media types include: application/json-patch+json, "
                                                        "application/merge-patch+json, "
                                                        "application/strategic-merge-patch+json")
        if not isinstance(patched, dict):
            raise bad_request("the patch did not produce an object")
        # A resourceVersion in the patch itself is a precondition; otherwise the patch applies to
        # the version just read.
        patched_meta = patched.setdefault("metadata", {})
        patch_rv = patched_meta.get("resourceVersion")
        expected = patch_rv if patch_rv != old["metadata"]["resourceVersion"] else None
        patched_meta["resourceVersion"] = old["metadata"]["resourceVersion"] if expected is None else expected
        return self.replace(rt, namespace, name, patched, subresource=subresource, expected_rv=expected)

    def delete(self, rt: ResourceType, namespace: str, name: str, options: dict[str, Any] | None = None
               ) -> tuple[dict[str, Any], bool]:
        """Delete as the real registry does; returns (the object as it now is, whether it is gone)."""
        options = options or {}
        obj = self.must_get(rt, namespace, name)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in "
                                     f"object meta: {meta['uid']}")
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                     f"{preconditions['resourceVersion']}, ResourceVersion in object meta: "
                                     f"{meta['resourceVersion']}")
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise invalid(rt, name, [Cause("propagationPolicy", "FieldValueNotSupported",
                                           f'Unsupported value: "{policy}": supported values: "Foreground", '
                                           '"Background", "Orphan"')])
        new = copy.deepcopy(obj)
        new_meta = new["metadata"]
        finalizers = list(new_meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        grace = 0
        if rt.plural == "pods":
            requested = options.get("gracePeriodSeconds")
            grace = int(requested if requested is not None else (new.get("spec") or {}).get(
                "terminationGracePeriodSeconds", 30))
            unstarted = not (new.get("spec") or {}).get("nodeName")
            finished = (new.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            if unstarted or finished:
                grace = 0  # nothing runs it: deleted at once
        if finalizers:
            new_meta["finalizers"] = finalizers
        if new_meta.get("deletionTimestamp"):
            current = int(new_meta.get("deletionGracePeriodSeconds") or 0)
            if grace < current:  # a shorter grace period (a force delete) may replace a longer one
                new_meta["deletionGracePeriodSeconds"] = grace
                new_meta["deletionTimestamp"] = rfc3339_in(grace)
            if new == obj:
                return obj, False
            committed = self._commit(MODIFIED, rt.plural, new, obj)
            return committed, self._finalize_if_done(rt, committed)
        if grace > 0 or finalizers:
            new_meta["deletionTimestamp"] = rfc3339_in(grace)
            new_meta["deletionGracePeriodSeconds"] = grace
            committed = self._commit(MODIFIED, rt.plural, new, obj)
            return committed, False
        self._commit(DELETED, rt.plural, new, obj)
        return new, True

    def _finalize_if_done(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        """An object being deleted goes once its finalizers are gone and its grace period is over."""
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not meta.get("deletionGracePeriodSeconds"):
            if self.get(rt.plural, meta.get("namespace", ""), meta["name"]) is obj:
                self._commit(DELETED, rt.plural, copy.deepcopy(obj), obj)
            return True
        return False

    def finish_pod_deletion(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final delete (grace period 0) once the pod's containers have stopped."""
        pod = self.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        self.delete(RESOURCES["pods"], namespace, name, {"gracePeriodSeconds": 0,
                                                         "preconditions": {"uid": uid}})

    def update_status(self, namespace: str, name: str, uid: str, change: Callable[[dict[str, Any]], None]
                      ) -> dict[str, Any] | None:
        """The kubelet's status writes: `change` edits a copy of the pod's status."""
        pod = self.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return None
        status = copy.deepcopy(pod.get("status") or {})
        change(status)
        if status == pod.get("status"):
            return pod
        body = copy.deepcopy(pod)
        body["status"] = status
        return self.replace(RESOURCES["pods"], namespace, name, body, subresource="status")

    def bind(self, namespace: str, name: str, uid: str, node: str) -> bool:
        """The scheduler's binding: sets spec.nodeName, which no update of the pod itself may do."""
        pod = self.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp"):
            return False
        bound = copy.deepcopy(pod)
        bound["spec"]["nodeName"] = node
        self._commit(MODIFIED, "pods", bound, pod)
        return True

    # garbage collection ---------------------------------------------------------------------
    def schedule_gc(self) -> None:
        if self._gc_handle is None:
            self._gc_handle = self.loop.call_later(self.gc_delay, self._collect_garbage)

    def _collect_garbage(self) -> None:
        """One pass of the garbage collector, as kube-controller-manager's: dependents of objects
        deleted in the foreground go first, orphans lose their owner references, and objects whose
        owners are all gone are deleted in the background."""
        self._gc_handle = None
        everything = [(plural, obj) for plural, table in self.objects.items() for obj in list(table.values())]
        for plural, stale in everything:
            found = self.get(plural, stale["metadata"].get("namespace", ""), stale["metadata"]["name"])
            if found is None or found["metadata"]["uid"] != stale["metadata"]["uid"]:
                continue  # removed or replaced earlier in this pass
            obj, meta = found, found["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            finalizers = list(meta.get("finalizers") or [])
            dependents = self._dependents(meta)
            if "orphan" in finalizers:
                for dep_plural, dependent in dependents:
                    body = copy.deepcopy(dependent)
                    body["metadata"]["ownerReferences"] = [
                        ref for ref in body["metadata"].get("ownerReferences") or [] if ref.get("uid") != meta["uid"]]
                    self._gc_write(dep_plural, body)
                self._remove_finalizer(plural, obj, "orphan")
            elif "foregroundDeletion" in finalizers:
                blocking = False
                for dep_plural, dependent in dependents:
                    if not dependent["metadata"].get("deletionTimestamp"):
                        self._gc_delete(dep_plural, dependent, "Foreground")
                    current = self.get(dep_plural, dependent["metadata"].get("namespace", ""),
                                       dependent["metadata"]["name"])
                    if current is not None and any(ref.get("uid") == meta["uid"] and ref.get("blockOwnerDeletion")
                                                   for ref in current["metadata"].get("ownerReferences") or []):
                        blocking = True
                if not blocking:
                    self._remove_finalizer(plural, obj, "foregroundDeletion")
        uids = self.by_uid()
        for plural, obj in [(p, o) for p, table in self.objects.items() for o in list(table.values())]:
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs or obj["metadata"].get("deletionTimestamp"):
                continue
            alive = [ref for ref in refs if ref.get("uid") in uids]
            if not alive:
                self._gc_delete(plural, obj, "Background")
            elif len(alive) < len(refs):
                body = copy.deepcopy(obj)
                body["metadata"]["ownerReferences"] = alive
                self._gc_write(plural, body)

    def _dependents(self, owner: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(plural, obj) for plural, table in self.objects.items() for obj in list(table.values())
                if obj["metadata"].get("namespace") == owner.get("namespace")
                and any(ref.get("uid") == owner["uid"] for ref in obj["metadata"].get("ownerReferences") or [])]

    def _gc_write(self, plural: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            self.replace(RESOURCES[plural], meta.get("namespace", ""), meta["name"], body)
        except ApiError:
            self.schedule_gc()  # changed meanwhile: the next pass tries again

    def _gc_delete(self, plural: str, obj: dict[str, Any], policy: str) -> None:
        meta = obj["metadata"]
        try:
            self.delete(RESOURCES[plural], meta.get("namespace", ""), meta["name"],
                        {"propagationPolicy": policy, "preconditions": {"uid": meta["uid"]}})
        except ApiError:
            self.schedule_gc()

    def _remove_finalizer(self, plural: str, obj: dict[str, Any], finalizer: str) -> None:
        body = copy.deepcopy(obj)
        body["metadata"]["finalizers"] = [f for f in body["metadata"].get("finalizers") or [] if f != finalizer]
        if not body["metadata"]["finalizers"]:
            del body["metadata"]["finalizers"]
        self._gc_write(plural, body)

    # events -------------------------------------------------------------------------------
    def record_event(self, involved: dict[str, Any], event_type: str, reason: str, message: str,
                     component: str = "kubelet", host: str = "") -> None:
        meta = involved["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta.get("namespace", "")},
            "involvedObject": {"kind": involved.get("kind", "Pod"), "namespace": meta.get("namespace", ""),
                               "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1",
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": event_type,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": host,
        }
        if self.get("namespaces", "", meta.get("namespace", "")) is not None:
            self.create(RESOURCES["events"], meta.get("namespace", ""), event)

    # listing with pagination ----------------------------------------------------------------
    def page(self, items: list[dict[str, Any]], limit: int | None, token: str | None
             ) -> tuple[list[dict[str, Any]], str]:
        start = ""
        if token:
            try:
                decoded = json.loads(bytes.fromhex(token).decode())
                start, rv = str(decoded["start"]), int(decoded["rv"])
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
            if rv < self.oldest_rv:
                raise gone_continue()
            items = [obj for obj in items if "/".join(_key(obj)) > start]
        if limit and len(items) > limit:
            last = items[limit - 1]
            next_token = json.dumps({"start": "/".join(_key(last)), "rv": self.rv}).encode().hex()
            return items[:limit], next_token
        return items, ""


# What Pod Security's baseline level lets a container add.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def gone_continue() -> ApiError:
    return ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent list "
                                    "result. You can start a new list without the continue parameter.")
