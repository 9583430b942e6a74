"""A Kubernetes API server double that speaks the real wire format, for the Kubernetes runner's tests.

It serves, over HTTPS with a bearer token (or plain HTTP), what the runner and kubectl use:

- discovery: /version, /api, /apis, /api/v1 (an APIResourceList of what is served);
- core/v1 pods, configmaps, secrets, events (namespaced) and namespaces: get, list (label and
  field selectors, limit/continue, server-side Tables for kubectl), watch (resourceVersion,
  410 Gone once compacted, bookmarks), create (generateName), update (409 Conflict on a stale
  resourceVersion), patch (merge, strategic for the lists that matter, JSON patch), delete
  (grace periods, preconditions, Foreground/Background/Orphan propagation) and deletecollection;
- pods/exec over WebSocket (v5.channel.k8s.io and v4.channel.k8s.io), each exec a `docker exec`
  in the pod's container; pods/log;
- pods/proxy (`pods/<name>[:<port>]/proxy/<path>`) to the pod IP, as kube-apiserver's
  UpgradeAwareHandler does it: WebSocket upgrades tunnelled (without the query string), the
  app's absolute URLs in Location and text/html prefixed with the proxy path, CORS headers
  removed, Authorization never passed on, 400/404/503 Status answers (see _PodProxy);
- real Status objects (NotFound, AlreadyExists, Conflict, Forbidden, Invalid, BadRequest, Expired).

Objects are checked against the official schemas (objects.py) on every write, including what the
double writes itself (status, Events), so a response the double sends was valid for 1.33.
Tests script the rest: `deny` (RBAC or quota refusals), `compact` (etcd compaction), and through
the kubelet failing image pulls, unschedulable or held pods (kubelet.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import html
import ipaddress
import json
import logging
import posixpath
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import yaml
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from tests.k8s.cluster import ADDED, Cluster, Watcher
from tests.k8s.kubelet import Kubelet, PodScript
from tests.k8s.objects import (
    GROUPS,
    RESOURCES,
    SERVER_VERSION,
    ApiError,
    ResourceType,
    api_group,
    api_group_list,
    api_resource_list,
    bad_request,
    forbidden,
    parse_field_selector,
    parse_label_selector,
    status_object,
    success_status,
    table,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass(frozen=True)
class Call:
    """One request as an authorizer sees it (verb on resource[/subresource]) and its answer."""

    verb: str
    resource: str
    namespace: str
    name: str
    code: int
    group: str = ""  # the API group ("" for core), as a Role's apiGroups names it


@dataclass
class DenyRule:
    verb: str
    resource: str
    message: str
    times: int | None  # None: always


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-cache, private", "Audit-Id": str(uuid.uuid4())})


def _list_item(obj: dict[str, Any]) -> dict[str, Any]:
    item = copy.deepcopy(obj)
    item.pop("kind", None)  # the real server leaves kind and apiVersion off list items
    item.pop("apiVersion", None)
    return item


class ApiServerDouble:
    """The double, running its own event loop in a thread. Test-facing methods are thread-safe."""

    def __init__(self, *, token: str = "", namespaces: tuple[str, ...] = ("default",), docker_client: Any = None,
                 tls_dir: Path | None = None, double_id: str = "", sandbox_image: str = "labs/busybox:latest",
                 step_delay: float = 0.02, bookmark_interval: float = 5.0) -> None:
        self.token = token or uuid.uuid4().hex
        self.initial_namespaces = namespaces
        self.docker_client = docker_client
        self.tls_dir = tls_dir
        self.double_id = double_id or uuid.uuid4().hex[:12]
        self.sandbox_image = sandbox_image
        self.step_delay = step_delay
        self.bookmark_interval = bookmark_interval
        self.calls: list[Call] = []
        self.failures: list[str] = []  # the double's own bugs (500s); fixtures assert there are none
        self.rules: list[DenyRule] = []
        self._compact_before: list[tuple[str, str]] = []
        #: The exec subprotocols served, newest first; ("v4.channel.k8s.io",) plays an API server before 1.30.
        self.exec_protocols: tuple[str, ...] = EXEC_PROTOCOLS
        self.port = 0
        self.ca_pem = ""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="k8s-api-double", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.cluster: Cluster
        self.kubelet: Kubelet

    # lifecycle ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls_dir else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> ApiServerDouble:
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            raise RuntimeError(f"the API server double did not start: {self._startup_error}")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _startup(self) -> None:
        self.cluster = Cluster(self.loop)
        self.kubelet = Kubelet(self.cluster, self.docker_client, self.double_id, sandbox_image=self.sandbox_image,
                               step_delay=self.step_delay)
        for namespace in ("default", "kube-system", *self.initial_namespaces):
            self.cluster.ensure_namespace(namespace)
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        context = self._tls_context() if self.tls_dir else None
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _tls_context(self) -> ssl.SSLContext:
        assert self.tls_dir is not None
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.tls_dir / "apiserver.crt", self.tls_dir / "apiserver.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=kube-apiserver-double", "-keyout", str(key),
                        "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-addext", "basicConstraints=critical,CA:TRUE"],
                       check=True, capture_output=True, timeout=30)
        self.ca_pem = cert.read_text()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        for watcher in list(self.cluster.watchers):
            watcher.queue.put_nowait(None)
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        await self.kubelet.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()

    # thread-safe access for tests --------------------------------------------------------------------
    def run(self, func: Callable[[], T], timeout: float = 30) -> T:
        """Run `func` on the double's loop (where the cluster lives) and return its result."""
        async def call() -> T:
            return func()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.run(lambda: copy.deepcopy(self.cluster.get(plural, namespace, name)))

    def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.run(lambda: copy.deepcopy(self.cluster.select(plural, namespace)))

    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.run(lambda: copy.deepcopy(self.cluster.create(RESOURCES[plural], namespace, body)))

    def compact(self) -> int:
        """Forget the watch history (etcd compaction): watches from older versions get 410 Gone."""
        return self.run(self.cluster.compact)

    def deny(self, verb: str, resource: str, message: str = "", times: int | None = None) -> None:
        """Answer `verb` on `resource` (e.g. "create", "pods") with 403 Forbidden: RBAC or a quota."""
        self.rules.append(DenyRule(verb, resource, message, times))

    def compact_before(self, verb: str, resource: str) -> None:
        """Compact the history just before the next `verb` on `resource` is served: a watch then
        starts from a version the server has forgotten, as after etcd compaction."""
        self._compact_before.append((verb, resource))

    def fail_image(self, pattern: str, reason: str = "ErrImagePull") -> None:
        self.run(lambda: self.kubelet.failed_images.__setitem__(pattern, reason))

    def hold(self, pattern: str) -> Callable[[], None]:
        """Keep matching pods Pending (unbound) until the returned function is called."""
        event = self.run(asyncio.Event)
        self.run(lambda: self.kubelet.script(PodScript(pattern, hold=event)))
        return lambda: self.loop.call_soon_threadsafe(event.set)

    def unschedulable(self, pattern: str, message: str = "0/1 nodes are available: 1 Insufficient cpu. "
                                                         "preemption: 0/1 nodes are available: 1 No preemption "
                                                         "victims found for incoming pod.") -> None:
        self.run(lambda: self.kubelet.script(PodScript(pattern, unschedulable=message)))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(predicate)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def docker_container(self, namespace: str, pod: str, container: str) -> str | None:
        def find() -> str | None:
            obj = self.cluster.get("pods", namespace, pod)
            return self.kubelet.docker_id(obj["metadata"]["uid"], container) if obj else None
        return self.run(find)

    def kubeconfig(self, namespace: str = "default", user: str = "labs-runner") -> dict[str, Any]:
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": self.token}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": user, "namespace": namespace}}],
        }

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace)))
        path.chmod(0o600)
        return path

    # HTTP ----------------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = _Route.parse(request)
        code = 500
        try:
            response = await self._handle(request, route)
            code = response.status
            return response
        except ApiError as exc:
            code = exc.code
            return _json_response(exc.status(), exc.code)
        except (ConnectionResetError, asyncio.CancelledError):
            code = 499
            raise
        except Exception as exc:
            log.exception("the API server double failed on %s %s", request.method, request.path_qs)
            self.failures.append(f"{request.method} {request.path_qs}: {exc!r}")
            return _json_response(status_object(500, "InternalError", f"Internal error occurred: {exc!r}"), 500)
        finally:
            if route.verb and not route.logged:
                self.calls.append(Call(route.verb, route.resource, route.namespace, route.name, code, route.group))

    async def _handle(self, request: web.Request, route: _Route) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path != "/version" and request.headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")
        accept = request.headers.get("Accept", "")
        if "protobuf" in accept and "json" not in accept and "*/*" not in accept:
            raise ApiError(406, "NotAcceptable", "only application/json is served by this double")
        if path == "/version":
            return _json_response(SERVER_VERSION)
        if path == "/api":
            return _json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]})
        if path == "/apis":
            return _json_response(api_group_list())
        if path == "/api/v1":
            return _json_response(api_resource_list())
        discovered = path.split("/")[2:]
        if path.startswith("/apis/") and discovered[0] in GROUPS and len(discovered) <= 2:
            if len(discovered) == 1:
                return _json_response({"kind": "APIGroup", "apiVersion": "v1", **api_group(discovered[0])})
            if discovered[1] in [v["version"] for v in api_group(discovered[0])["versions"]]:
                return _json_response(api_resource_list(*discovered))
        if route.rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self._authorize(route)
        if route.subresource == "exec":
            return await self._exec(request, route)
        if route.subresource == "log":
            return await self._log(request, route)
        if route.subresource == "proxy":
            return await _PodProxy(self, request, route).serve()
        if route.subresource not in ("", "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return await self._resource(request, route)

    def _authorize(self, route: _Route) -> None:
        if (route.verb, route.resource) in self._compact_before:
            self._compact_before.remove((route.verb, route.resource))
            # Something else changed meanwhile (a real cluster never stands still), then compaction.
            self.cluster.create(RESOURCES["configmaps"], "kube-system",
                                {"metadata": {"generateName": "unrelated-change-"}})
            self.cluster.compact()
        for rule in self.rules:
            if rule.verb == route.verb and rule.resource == route.resource and rule.times != 0:
                if rule.times is not None:
                    rule.times -= 1
                assert route.rt is not None
                why = rule.message or (f'User "system:serviceaccount:labs:labs-runner" cannot {route.verb} resource '
                                       f'"{route.resource}" in API group "{route.group}" in the namespace '
                                       f'"{route.namespace}"')
                raise forbidden(route.rt, route.name, why)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the body of the request was in an unknown format: {exc}") from exc

    async def _resource(self, request: web.Request, route: _Route) -> web.StreamResponse:
        rt = route.rt
        assert rt is not None
        query = request.query
        cluster = self.cluster
        if route.verb == "watch":
            return await self._watch(request, route)
        if route.verb == "list":
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt)
            items = cluster.select(rt.plural, route.namespace or None if rt.namespaced else None, labels, fields)
            limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
            items, token = cluster.page(items, limit, query.get("continue"))
            if "as=Table" in request.headers.get("Accept", ""):
                return _json_response(table(rt, items, query.get("includeObject", "Metadata"), str(cluster.rv)))
            meta: dict[str, Any] = {"resourceVersion": str(cluster.rv)}
            if token:
                meta["continue"] = token
            return _json_response({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                                   "items": [_list_item(obj) for obj in items]})
        if route.verb == "get":
            obj = cluster.must_get(rt, route.namespace, route.name)
            if "as=Table" in request.headers.get("Accept", ""):
                return _json_response(table(rt, [obj], query.get("includeObject", "Metadata"), str(cluster.rv)))
            return _json_response(obj)
        if route.verb == "create":
            if _flag(query.get("dryRun")) or query.get("dryRun") == "All":
                raise bad_request("dryRun is not supported by the API server double")
            return _json_response(cluster.create(rt, route.namespace, await self._body(request)), 201)
        if route.verb == "update":
            return _json_response(cluster.replace(rt, route.namespace, route.name, await self._body(request),
                                                  subresource=route.subresource))
        if route.verb == "patch":
            return _json_response(cluster.patch(rt, route.namespace, route.name,
                                                request.headers.get("Content-Type", ""), await self._body(request),
                                                subresource=route.subresource))
        if route.verb == "delete":
            options = self._delete_options(query, await self._body(request))
            obj, gone_now = cluster.delete(rt, route.namespace, route.name, options)
            if gone_now and rt.plural != "pods":  # pods answer with the object, others with a Status
                return _json_response(success_status({"name": route.name, "kind": rt.plural,
                                                      "uid": obj["metadata"]["uid"]}))
            return _json_response(obj)
        if route.verb == "deletecollection":
            options = self._delete_options(query, await self._body(request))
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), rt)
            deleted = []
            for obj in cluster.select(rt.plural, route.namespace, labels, fields):
                with contextlib.suppress(ApiError):  # gone meanwhile
                    deleted.append(cluster.delete(rt, route.namespace, obj["metadata"]["name"], options)[0])
            return _json_response({"kind": rt.list_kind, "apiVersion": rt.api_version,
                                   "metadata": {"resourceVersion": str(cluster.rv)},
                                   "items": [_list_item(obj) for obj in deleted]})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _delete_options(self, query: Any, body: Any) -> dict[str, Any]:
        options = dict(body) if isinstance(body, dict) else {}
        if options.get("kind") not in (None, "DeleteOptions"):
            raise bad_request(f"expected DeleteOptions, got {options.get('kind')}")
        if query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("orphanDependents"):
            options["orphanDependents"] = _flag(query["orphanDependents"])
        if options.get("dryRun"):
            raise bad_request("dryRun is not supported by the API server double")
        return options

    # watch --------------------------------------------------------------------------------------------------
    async def _watch(self, request: web.Request, route: _Route) -> web.StreamResponse:
        rt = route.rt
        assert rt is not None
        query = request.query
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), rt)
        if route.name:  # a watch on one object: /namespaces/x/pods/name?watch=1
            fields = [*fields, *parse_field_selector(f"metadata.name={route.name}", rt)]
        watcher = Watcher(rt.plural, route.namespace or None, labels, fields)
        rv = query.get("resourceVersion", "")
        initial: list[tuple[str, dict[str, Any]]] = []
        expired = ""
        if rv in ("", "0"):
            initial = [(ADDED, copy.deepcopy(obj)) for obj in self.cluster.select(rt.plural, watcher.namespace,
                                                                                  labels, fields)]
        else:
            try:
                start = int(rv)
            except ValueError as exc:
                raise bad_request(f'invalid resource version "{rv}"') from exc
            if start < self.cluster.oldest_rv:
                expired = f"too old resource version: {start} ({self.cluster.oldest_rv})"
            else:
                for change in self.cluster.history:
                    if change.rv > start and watcher.wants(change):
                        seen = watcher.translate(change)
                        if seen:
                            initial.append(seen)
        if not expired:
            self.cluster.watchers.add(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds", "").isdigit() else 1800.0
        deadline = time.monotonic() + timeout
        bookmarks = _flag(query.get("allowWatchBookmarks"))
        try:
            await response.prepare(request)
            # Logged as it starts (it may stay open for minutes), so the log keeps the order of requests.
            self.calls.append(Call(route.verb, route.resource, route.namespace, route.name, 200, route.group))
            route.logged = True
            if expired:
                await self._send_event(response, "ERROR", status_object(410, "Expired", expired))
                return response
            for kind, obj in initial:
                await self._send_event(response, kind, obj)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), min(remaining, self.bookmark_interval))
                except TimeoutError:
                    if bookmarks and watcher.queue.empty():
                        await self._send_event(response, "BOOKMARK", {
                            "kind": rt.kind, "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(self.cluster.rv)}})
                    continue
                if change is None:  # the double is shutting down
                    break
                seen = watcher.translate(change)
                if seen:
                    await self._send_event(response, *seen)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.cluster.watchers.discard(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    async def _send_event(self, response: web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    # pods/log -------------------------------------------------------------------------------------------------
    async def _log(self, request: web.Request, route: _Route) -> web.StreamResponse:
        pod = self.cluster.must_get(RESOURCES["pods"], route.namespace, route.name)
        container = self._container_of(pod, request.query.get("container", ""))
        docker_id = self.kubelet.docker_id(pod["metadata"]["uid"], container)
        if self.docker_client is None or not docker_id:
            raise bad_request(f'container "{container}" in pod "{route.name}" is waiting to start')
        query = request.query
        tail = query.get("tailLines")
        since = _since_time(query["sinceTime"]) if "sinceTime" in query else None
        if since is not None and "sinceSeconds" in query:
            raise bad_request("at most one of sinceTime or sinceSeconds may be specified")
        stamped = query.get("timestamps") in ("true", "1")
        logs = await self.kubelet._docker(self.docker_client.api.logs, docker_id, stdout=True, stderr=True,
                                          tail=int(tail) if tail and tail.isdigit() else "all",
                                          timestamps=stamped, **({"since": since} if since else {}))
        if stamped:
            # The kubelet's RFC3339Nano (a fraction's trailing zeros dropped), not Docker's fixed nine digits.
            logs = _NANO_FRACTION.sub(lambda m: m[1].rstrip(b"0").rstrip(b".") + b"Z ", logs)
        return web.Response(body=logs, content_type="text/plain")

    def _container_of(self, pod: dict[str, Any], container: str) -> str:
        names = [c["name"] for c in pod["spec"]["containers"]]
        name = pod["metadata"]["name"]
        if container and container in [c["name"] for c in pod["spec"].get("initContainers") or []]:
            return container  # logs and exec reach init containers too, when named
        if not container:
            default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
            if default in names:
                return str(default)
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                  f"[{' '.join(names)}]")
            return names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        return container

    # pods/exec ------------------------------------------------------------------------------------------------
    async def _exec(self, request: web.Request, route: _Route) -> web.StreamResponse:
        pod = self.cluster.must_get(RESOURCES["pods"], route.namespace, route.name)
        query = request.query
        command = query.getall("command", [])
        if not command:
            raise bad_request("you must specify at least 1 command")
        container = self._container_of(pod, query.get("container", ""))
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {route.name} does not have a host assigned")
        statuses = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        if "running" not in (statuses.get(container, {}).get("state") or {}):
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        if request.method != "GET" or request.headers.get("Upgrade", "").lower() != "websocket":
            # kubectl before 1.30 asks for SPDY (a POST): the double speaks only WebSocket.
            raise bad_request("Upgrade request required")
        docker_id = self.kubelet.docker_id(pod["metadata"]["uid"], container)
        if self.docker_client is None or not docker_id:
            raise bad_request("the API server double runs no containers (start it with a Docker client)")
        ws = web.WebSocketResponse(protocols=self.exec_protocols, autoping=True, max_msg_size=0)
        offered = [p.strip() for header in request.headers.getall("Sec-WebSocket-Protocol", [])
                   for p in header.split(",") if p.strip()]
        if not any(p in self.exec_protocols for p in offered):
            raise bad_request(f"unable to upgrade: none of the offered subprotocols {offered} is supported "
                              f"({', '.join(self.exec_protocols)})")
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await _ExecSession(self, ws, docker_id, command, stdin=_flag(query.get("stdin")),
                               stdout=_flag(query.get("stdout")), stderr=_flag(query.get("stderr")),
                               tty=_flag(query.get("tty"))).run()
        finally:
            self._sockets.discard(ws)
        return ws


@dataclass
class _Route:
    """What a request is about, in RBAC terms."""

    verb: str = ""
    rt: ResourceType | None = None
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    logged: bool = False

    @property
    def resource(self) -> str:
        if self.rt is None:
            return ""
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural

    @property
    def group(self) -> str:
        return self.rt.group if self.rt is not None else ""

    @classmethod
    def parse(cls, request: web.Request) -> _Route:
        parts = [p for p in request.path.split("/") if p]
        # Core resources under /api/v1, the others under /apis/<group>/<version>.
        if parts[:2] == ["api", "v1"] and len(parts) >= 3:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return cls()
        route = cls()
        if rest[0] == "namespaces" and len(rest) >= 3:
            route.namespace, rest = rest[1], rest[2:]
        elif rest[0] == "namespaces" and len(rest) == 2:
            rest = ["namespaces", rest[1]]
        route.rt = RESOURCES.get(rest[0])
        if route.rt is not None and (route.rt.group, route.rt.version) != (group, version):
            return cls()  # a resource asked for under another group's path
        if route.rt is not None and route.rt.plural == "pods" and len(rest) >= 3 and rest[2] == "proxy" \
                and route.namespace:
            # pods/<name>[:<port>]/proxy[/<path>]: RBAC sees the resource name with its port, and
            # the verb of the HTTP method (GET and HEAD get, POST create, PUT update, ...).
            route.name, route.subresource = rest[1], "proxy"
            route.verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                          "DELETE": "delete"}.get(request.method, request.method.lower())
            return route
        if route.rt is None or len(rest) > 3:
            return cls()
        if len(rest) >= 2:
            route.name = rest[1]
        if len(rest) == 3:
            route.subresource = rest[2]
        method, watching = request.method, _flag(request.query.get("watch"))
        if route.subresource == "exec":
            # A WebSocket exec is a GET; since 1.35 the server checks `create` as well.
            route.verb = "create" if method == "POST" else "get"
        elif route.name:
            route.verb = {"GET": "watch" if watching else "get", "PUT": "update", "PATCH": "patch",
                          "DELETE": "delete"}.get(method, "")
        else:
            route.verb = {"GET": "watch" if watching else "list", "POST": "create",
                          "DELETE": "deletecollection"}.get(method, "")
        if not route.rt.namespaced and route.namespace:
            return cls()
        return route


class _ExecSession:
    """One exec: a `docker exec` in the pod's container, its streams carried on channel frames."""

    def __init__(self, server: ApiServerDouble, ws: web.WebSocketResponse, docker_id: str, command: list[str], *,
                 stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
        self.server = server
        self.api = server.docker_client.api
        self.ws = ws
        self.docker_id = docker_id
        self.command = command
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty
        self.v5 = ws.ws_protocol == "v5.channel.k8s.io"
        self.exec_id = ""

    async def _docker(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return await self.server.kubelet._docker(func, *args, **kwargs)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        created = await self._docker(self.api.exec_create, self.docker_id, self.command, stdin=self.stdin,
                                     stdout=self.stdout, stderr=self.stderr, tty=self.tty)
        self.exec_id = created["Id"]
        hijacked = await self._docker(self.api.exec_start, self.exec_id, socket=True, tty=self.tty)
        raw: socket.socket = getattr(hijacked, "_sock", hijacked)
        raw.setblocking(False)
        # wsstream announces an open connection with an empty frame on the lowest writable channel.
        await self.ws.send_bytes(bytes([STDOUT]))
        writer = loop.create_task(self._from_client(raw))
        try:
            await self._to_client(raw)
            await self.ws.send_bytes(bytes([ERROR]) + json.dumps(await self._exit_status()).encode())
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            raw.close()
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _to_client(self, raw: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        pending = b""
        while True:
            try:
                data = await loop.sock_recv(raw, 65536)
            except OSError:
                return
            if not data:
                return
            if self.tty:
                await self.ws.send_bytes(bytes([STDOUT]) + data)
                continue
            pending += data
            while len(pending) >= 8:  # the engine's multiplexed stream: 8-byte frame headers
                stream, size = pending[0], struct.unpack(">I", pending[4:8])[0]
                if len(pending) < 8 + size:
                    break
                channel = STDERR if stream == 2 else STDOUT
                await self.ws.send_bytes(bytes([channel]) + pending[8:8 + size])
                pending = pending[8 + size:]

    async def _from_client(self, raw: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        async for message in self.ws:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            channel, payload = message.data[0], message.data[1:]
            if channel == STDIN and self.stdin:
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(raw, payload)
            elif channel == RESIZE and self.tty:
                with contextlib.suppress(Exception):
                    size = json.loads(payload)
                    await self._docker(self.api.exec_resize, self.exec_id, height=int(size["Height"]),
                                       width=int(size["Width"]))
            elif channel == CLOSE and self.v5 and payload[:1] == bytes([STDIN]):
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_WR)  # v5 only: end of the command's input
        # The client closed its side: a terminal hangs up.
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)

    async def _exit_status(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for _ in range(100):
            info = await self._docker(self.api.exec_inspect, self.exec_id)
            if not info.get("Running"):
                break
            await asyncio.sleep(0.05)
        code = info.get("ExitCode")
        if code == 0:
            return {"metadata": {}, "status": "Success"}
        shown = " ".join(self.command)
        return {"metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: command '{shown}' exited with {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


# pods/proxy ---------------------------------------------------------------------------------------------------
# kube-apiserver: pkg/registry/core/pod/rest/subresources.go (ProxyREST), pkg/registry/core/pod/strategy.go
# (ResourceLocation) and k8s.io/apimachinery/pkg/util/proxy (UpgradeAwareHandler, Transport).
PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# The attributes whose URLs the proxy transport rewrites in text/html (transport.go, atomsToAttrs).
HTML_URL_ATTRIBUTES = {
    "a": {"href"}, "applet": {"codebase"}, "area": {"href"}, "audio": {"src"}, "base": {"href"},
    "blockquote": {"cite"}, "body": {"background"}, "button": {"formaction"}, "command": {"icon"}, "del": {"cite"},
    "embed": {"src"}, "form": {"action"}, "frame": {"longdesc", "src"}, "head": {"profile"}, "html": {"manifest"},
    "iframe": {"longdesc", "src"}, "img": {"longdesc", "src", "usemap"}, "input": {"src", "usemap", "formaction"},
    "ins": {"cite"}, "link": {"href"}, "object": {"classid", "codebase", "data", "usemap"}, "q": {"cite"},
    "script": {"src"}, "source": {"src"}, "video": {"poster", "src"},
}
PROXY_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                    "te", "trailer", "transfer-encoding", "upgrade"}
CORS_HEADERS = {"access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods",
                "access-control-allow-origin"}
_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9]*)(\s[^<>]*?)?(/?)>")
_ATTRIBUTE = re.compile(r"""(\s)([^\s"'>/=]+)(\s*=\s*)("[^"]*"|'[^']*'|[^\s"'>]+)""")


def _go_escape(value: str) -> str:
    """html.EscapeString as Go's tokenizer writes attribute values back (escapedChars "&'<>\\"\\r")."""
    for char, entity in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"),
                         ("\r", "&#13;")):
        value = value.replace(char, entity)
    return value


class _TunnelFeed:
    """Takes the place of aiohttp's payload parser on an upgraded connection: raw bytes from the client."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(None)


class _PodProxy:
    """One pods/proxy request, answered as kube-apiserver answers it."""

    def __init__(self, server: ApiServerDouble, request: web.Request, route: _Route) -> None:
        self.server, self.request, self.route = server, request, route
        self.ip, self.port = "", 0

    async def serve(self) -> web.StreamResponse:
        request, route = self.request, self.route
        if request.method not in PROXY_METHODS:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        parts = route.name.split(":")
        scheme, name, port = {1: ("", parts[0], ""), 2: ("", *parts), 3: tuple(parts)}.get(len(parts), ("x", "", ""))
        if not name or scheme not in ("", "http", "https"):
            raise bad_request(f'invalid pod request "{route.name}"')
        if scheme == "https":
            raise bad_request("the API server double proxies to pods over http only")
        pod = self.server.cluster.must_get(RESOURCES["pods"], route.namespace, name)
        if not port:
            port = next((str(p["containerPort"]) for c in pod["spec"]["containers"] for p in c.get("ports") or []), "")
        ips = (pod.get("status") or {}).get("podIPs") or []
        self.ip = ips[0].get("ip", "") if ips else ""
        try:
            address = ipaddress.ip_address(self.ip)
        except ValueError:
            address = None
        if address is None or address.is_loopback or address.is_link_local or address.is_multicast \
                or address.is_unspecified:
            raise bad_request("address not allowed")
        self.port = int(port) if port.isdigit() else 80
        # The path after .../proxy, as the client encoded it (no query).
        raw_path = request.raw_path.split("?", 1)[0]
        marker = f"/{route.name}/proxy"
        # Decoded, then escaped again as Go's url.URL.EscapedPath does (an encoded "/" arrives as "/").
        tail = quote(unquote(raw_path[raw_path.index(marker) + len(marker):]), safe="$&+,/:;=@")
        connection = {t.strip().lower() for v in request.headers.getall("Connection", []) for t in v.split(",")}
        if "upgrade" in connection and request.headers.get("Upgrade"):
            return await self._upgrade(tail or "/")
        if not tail and request.method in ("GET", "HEAD"):
            # proxyRedirectsforRootPath: a redirect to the same path with a slash.
            query = f"?{_raw_query(request)}" if _raw_query(request) else ""
            return web.Response(status=301, headers={"Location": request.path + "/" + query})
        return await self._forward(tail or "/")

    def _backend_headers(self) -> list[tuple[str, str]]:
        """The client's headers as the backend gets them: Authorization was consumed by authentication
        and Impersonate-* by impersonation; X-Forwarded-For gets the client's address appended."""
        request = self.request
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() != "authorization" and not k.lower().startswith("impersonate-")
                   and k.lower() != "x-forwarded-for"]
        peer = (request.transport.get_extra_info("peername") or ("127.0.0.1",))[0] if request.transport else ""
        prior = ", ".join(request.headers.getall("X-Forwarded-For", []))
        headers.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
        return headers

    async def _upgrade(self, path: str) -> web.StreamResponse:
        """UpgradeAwareHandler.tryUpgrade: dial the pod, send the request (its Location has no query: the
        client's query string is dropped, kubernetes#77142), and tunnel after a 101."""
        request = self.request
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.ip, self.port), 10)
        except (OSError, TimeoutError) as exc:
            return _json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": f"error dialing backend: dial tcp {self.ip}:{self.port}: connect: "
                                              f"{_dial_error(exc)}", "code": 500}, 500)
        try:
            lines = [f"{request.method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in self._backend_headers())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status_line, *header_lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
            status = int(status_line.split(" ")[1])
            headers = [tuple(s.strip() for s in line.split(":", 1)) for line in header_lines if ":" in line]
            if status != 101 and status < 400:
                return _json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": f"invalid upgrade response: status code {status}",
                                       "code": 500}, 500)
            if status != 101:  # echoed to the client, then the connection is closed
                body = await asyncio.wait_for(reader.read(1024 * 1024), 10)
                response = web.Response(status=status, body=body)
                for key, value in headers:
                    if key.lower() not in PROXY_HOP_BY_HOP and key.lower() != "content-length":
                        response.headers.add(key, value)
                response.force_close()
                return response
            response = web.StreamResponse(status=101, reason=status_line.split(" ", 2)[2] if
                                          status_line.count(" ") >= 2 else "Switching Protocols")
            for key, value in headers:
                response.headers.add(key, value)
            await response.prepare(request)
            feed = _TunnelFeed()
            request.protocol.set_parser(feed)  # type: ignore[arg-type]
            transport = request.transport
            assert transport is not None

            async def client_to_pod() -> None:
                while (data := await feed.queue.get()) is not None:
                    writer.write(data)
                    await writer.drain()

            async def pod_to_client() -> None:
                while data := await reader.read(65536):
                    transport.write(data)

            tasks = [asyncio.ensure_future(client_to_pod()), asyncio.ensure_future(pod_to_client())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            transport.close()
            return response
        finally:
            writer.close()

    async def _forward(self, path: str) -> web.StreamResponse:
        import aiohttp
        import yarl

        request = self.request
        query = f"?{_raw_query(request)}" if _raw_query(request) else ""
        target = yarl.URL(f"http://{self.ip}:{self.port}{path}{query}", encoded=True)
        prefix = f"/api/v1/namespaces/{self.route.namespace}/pods/{self.route.name}/proxy"  # PathPrepend
        connection = {t.strip().lower() for v in request.headers.getall("Connection", []) for t in v.split(",")}
        headers = [(k, v) for k, v in self._backend_headers()
                   if k.lower() not in PROXY_HOP_BY_HOP and k.lower() not in connection]
        # Transport.RoundTrip: X-Forwarded-Uri is the whole path the client asked for.
        headers.append(("X-Forwarded-Uri", posixpath.normpath(request.path) + ("/" if path.endswith("/") else "")))
        body = await request.read()
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session, \
                    session.request(request.method, target, headers=CIMultiDict(headers), data=body or None,
                                    allow_redirects=False, skip_auto_headers=("User-Agent",),
                                    timeout=aiohttp.ClientTimeout(total=60)) as upstream:
                status, upstream_headers = upstream.status, list(upstream.headers.items())
                content = await upstream.read()
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, OSError) as exc:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {self.ip}:"
                                                      f"{self.port}: connect: {_dial_error(exc)}") from exc
        source_hosts = {f"{self.ip}:{self.port}", request.host}
        out = CIMultiDict()
        location = ""
        for key, value in upstream_headers:
            lowered = key.lower()
            if lowered in PROXY_HOP_BY_HOP or lowered in CORS_HEADERS or lowered == "content-length":
                continue
            if lowered == "location":
                location = value = _proxy_url(value, prefix, source_hosts, request.host)
            out.add(key, value)
        media = out.get("Content-Type", "").split(";")[0].strip()
        encoding = out.get("Content-Encoding", "")
        if not location and media == "text/html" and encoding in ("", "gzip", "deflate") and content:
            # gzip.NewReader, or flate.NewReader for deflate: raw DEFLATE without zlib's header (a body Go
            # cannot read makes it answer an error; the double then leaves the body alone instead).
            wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": -zlib.MAX_WBITS}.get(encoding, 0)
            with contextlib.suppress(zlib.error):
                raw = zlib.decompress(content, wbits) if wbits else content
                text = _rewrite_html(raw.decode("utf-8", "replace"), prefix, source_hosts, request.host).encode()
                compressor = zlib.compressobj(6, zlib.DEFLATED, wbits) if wbits else None
                content = compressor.compress(text) + compressor.flush() if compressor else text
        response = web.Response(status=status, body=content if request.method != "HEAD" else None, headers=out)
        return response


def _raw_query(request: web.Request) -> str:
    """The query as the client encoded it (aiohttp's query_string is decoded)."""
    return request.raw_path.partition("?")[2]


def _dial_error(exc: BaseException) -> str:
    cause = getattr(exc, "os_error", None) or exc
    return "connection refused" if isinstance(cause, ConnectionRefusedError) else "i/o timeout"


def _proxy_url(value: str, prefix: str, source_hosts: set[str], request_host: str) -> str:
    """Transport.rewriteURL: an absolute-path URL of the same host gets the proxy path in front."""
    try:
        url = urlsplit(value)
    except ValueError:
        return value
    if (url.netloc and url.netloc not in source_hosts) or not url.path.startswith("/"):
        return value
    scheme, netloc = url.scheme, url.netloc
    if url.netloc != request_host:  # the transport's own scheme and host are empty for a server request
        scheme, netloc = "", ""
    path = url.path
    if not path.startswith(prefix):
        path = posixpath.normpath(prefix + "/" + path.lstrip("/")) + ("/" if url.path.endswith("/") else "")
    return urlunsplit((scheme, netloc, path, url.query, url.fragment))


def _rewrite_html(text: str, prefix: str, source_hosts: set[str], request_host: str) -> str:
    def tag(match: re.Match[str]) -> str:
        wanted = HTML_URL_ATTRIBUTES.get(match.group(1).lower())
        if not wanted or not match.group(2):
            return match.group(0)

        def attribute(found: re.Match[str]) -> str:
            if found.group(2).lower() not in wanted:
                return found.group(0)
            value = html.unescape(found.group(4).strip("\"'"))
            rewritten = _go_escape(_proxy_url(value, prefix, source_hosts, request_host))
            return f'{found.group(1)}{found.group(2).lower()}="{rewritten}"'

        return f"<{match.group(1)}{_ATTRIBUTE.sub(attribute, match.group(2))}{match.group(3)}>"

    return _TAG.sub(tag, text)


# The stamp that starts a Docker log line, its fraction included.
_NANO_FRACTION = re.compile(rb"(?m)^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z ")


def _since_time(raw: str) -> int:
    """pods/log's sinceTime (RFC 3339, a fraction allowed) as whole seconds: the API server passes it on
    to the kubelet formatted as RFC 3339 without the fraction, and the kubelet returns every line stamped
    at or after it."""
    try:
        parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f'parsing time "{raw}" as "2006-01-02T15:04:05Z07:00": cannot parse') from None
    if parsed.tzinfo is None:
        raise bad_request(f'parsing time "{raw}" as "2006-01-02T15:04:05Z07:00": cannot parse') from None
    return max(1, int(parsed.timestamp()))  # Docker ignores a `since` of 0
