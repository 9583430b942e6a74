"""What the Kubernetes runner and its helpers for VMs and several hosts share, below all three: the
labels and names of session objects, the owner reference that ties them to the anchor, how to tell
a pod that will never run, the exec channels, and the terminal bridged from a TTY exec."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import selectors
import socket
import ssl
import threading
from typing import Any, Protocol

from runners.base import RunnerError

log = logging.getLogger(__name__)

LABEL_APP_MANAGED = "app.kubernetes.io/managed-by"
LABEL_MANAGED = "labs.managed-by"
LABEL_SESSION = "labs.session"
LABEL_LAB = "labs.lab"
LABEL_USER = "labs.user"
LABEL_NETWORK = "labs.network-mode"
LABEL_HOST = "labs.host"  # which host of a session with several hosts a pod is
ANNOTATION_PREFIX = "labs.platform/"  # raw values of the labels, uncut, and the username
MANAGED_BY = "browser-labs"

# The exec subprotocols and their channels.
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


def owner_reference(anchor: dict[str, Any]) -> dict[str, Any]:
    """The reference that makes an object the anchor's: deleting the anchor in the foreground removes it first."""
    meta = anchor["metadata"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"], "controller": True,
            "blockOwnerDeletion": True}


def is_pod_ready(pod: dict[str, Any]) -> bool:
    """KubeSpawner's is_pod_running: phase Running, an IP, not terminating, every container ready."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    return (status.get("phase") == "Running" and bool(status.get("podIP"))
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and bool(statuses) and all(item.get("ready") for item in statuses))


def permanent_failure(pod: dict[str, Any]) -> str:
    """Why a starting pod will never run ("" while it still may). A container's own last words (its
    termination message: FallbackToLogsOnError puts its log's tail there) are part of the reason."""
    status = pod.get("status") or {}
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for item in statuses:
        terminated = (item.get("state") or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode") not in (None, 0):
            words = " ".join(str(terminated.get("message") or "").split())[-500:]
            kind = "init container " if item in (status.get("initContainerStatuses") or []) else ""
            return (f"{kind}{item.get('name')} failed ({terminated.get('reason') or 'Error'}, exit status "
                    f"{terminated['exitCode']})" + (f": {words}" if words else ""))
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"the session's pod stopped ({status.get('reason') or status.get('phase')}: " \
               f"{status.get('message') or 'its container exited'})"
    for item in statuses:
        waiting = (item.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in PERMANENT_WAITING:
            return f"{item.get('name')}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
        if waiting.get("reason") == "CrashLoopBackOff":
            return f"{item.get('name')} keeps crashing: {waiting.get('message') or ''}".rstrip(": ")
    return ""


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


class PodRunner(Protocol):
    """What the helpers for VMs and several hosts (k8s_vm.py, k8s_hosts.py) use of the Kubernetes
    runner that drives them; KubernetesRunner is one. Typed here, below the three, so the helpers
    need not import the runner that imports them."""

    options: dict[str, Any]
    namespace: str
    instance: str
    api_timeout: float

    @property
    def api_client(self) -> Any: ...

    def exec(self, *args: Any, **kwargs: Any) -> Any: ...
    def exec_in_pod(self, *args: Any, **kwargs: Any) -> Any: ...
    def poll(self, *args: Any, **kwargs: Any) -> Any: ...
    def labels_for(self, *args: Any, **kwargs: Any) -> Any: ...
    def annotations_for(self, *args: Any, **kwargs: Any) -> Any: ...
    def pod_object(self, *args: Any, **kwargs: Any) -> Any: ...
    def pod_forwarder(self, *args: Any, **kwargs: Any) -> Any: ...
    def wait_pod_ended(self, *args: Any, **kwargs: Any) -> Any: ...
    def _pod_spec(self, *args: Any, **kwargs: Any) -> Any: ...
    def _read(self, *args: Any, **kwargs: Any) -> Any: ...
    def _open_exec(self, *args: Any, **kwargs: Any) -> Any: ...
    def _translate(self, *args: Any, **kwargs: Any) -> Any: ...
