"""Labs with several hosts on the Kubernetes runner (kubernetes.py hands them here): one pod per host.

A session whose lab names hosts (`hosts: [controlplane, node01]`, Killercoda's two-node scenarios) is
what a single-host session is, with more pods and one more object, all owned by the anchor ConfigMap
`lab-<session>` (one foreground delete removes everything):

- one Pod per host, with the security settings, labels and limits of a single-host pod, the host's
  name as its hostname and in the label `labs.host` (raw value in the annotation `labs.platform/host`).
  The first host is the learner's: pod `lab-<session>`, as in any session, with the workspace (or the
  persistent home), the trusted `agent`, the Docker engine when the lab has one, and the starter files;
  terminals, commands and files go there unless a `host=` names another. The others are
  `lab-<session>-<host>`, `main` only, each with a workspace of its own. Every host runs the image's
  sshd when it has one (session_shell.SSHD_KEEPALIVE: on Docker the image's own CMD does it), so
  `main` keeps SYS_CHROOT (sshd's privilege separation) and NET_BIND_SERVICE (port 22 where the
  runtime keeps privileged ports privileged), both within Pod Security baseline (option `hosts_cap_add`).
- a NetworkPolicy `lab-<session>`: the chart's static policies deny every session pod everything
  but the platform's ingress (and, by mode, the internet, never private addresses); this one lets
  the pods of this session alone reach each other, in and out, on any port. NetworkPolicies cannot
  compare label values, so no static policy can say "the same session": it takes one per session.
  Network mode `none` is refused (as on Docker): its hosts could not reach each other.
- names: once every pod has its IP, root on each host appends the others to /etc/hosts (a bare
  pod's IP never changes: it is never restarted or rescheduled). Not a headless Service and the pods'
  hostname/subdomain, because cluster DNS answers only pods that may reach it: `isolated` sessions
  have no DNS egress at all, and a search path naming the Service would tie labs to the cluster's DNS
  domain; /etc/hosts works on any cluster, in every mode, and on the API double, with no more rights.
- SSH: as on Docker (session_shell.connect_hosts): a key pair made on the first host by the learner,
  its public half trusted on the others, ready once `ssh <host> true` works from the first.

Readiness is every host pod ready (one watch on the session's label, progress prefixed with the
host's name); a permanent failure of any host fails the start, and nothing is left.
"""

from __future__ import annotations

import re
import time
from typing import Any

from runners.base import VM_IMAGE_KINDS, ExecResult, RunnerError, SessionSpec
from runners.k8s_objects import LABEL_MANAGED, LABEL_SESSION, PodRunner, label_value, object_name, owner_reference
from runners.session_shell import connect_hosts

# A host's name is its pod's hostname: a DNS label (the lab format allows less: labs/models.HOST_NAME).
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# What sshd needs besides the runner's default capabilities (both allowed by Pod Security baseline).
DEFAULT_HOSTS_CAPS = ["SYS_CHROOT", "NET_BIND_SERVICE"]
HOSTS_MARK = "# labs-session"
# Run as root on every host: the other hosts' lines ("<ip> <name> # labs-session") replace the ones an
# earlier start wrote. /etc/hosts is the kubelet's bind mount: written in place, never renamed over.
HOSTS_SCRIPT = (
    f'kept=$(grep -v " {HOSTS_MARK}$" /etc/hosts) || kept=""; '
    "{ [ -z \"$kept\" ] || printf '%s\\n' \"$kept\"; printf '%s\\n' \"$@\"; } > /etc/hosts"
)


class KubernetesHosts:
    """The several-hosts side of a KubernetesRunner: checks, the hosts' pods, their policy, names and SSH."""

    def __init__(self, runner: PodRunner) -> None:
        self.runner = runner

    def check(self, spec: SessionSpec) -> None:
        """Refuse, before any object exists, what cannot run with several hosts."""
        if spec.network_mode == "none":
            raise RunnerError("a session with several hosts needs a network (not network mode none)", permanent=True)
        if spec.image_kind in VM_IMAGE_KINDS:
            raise RunnerError("VM labs with several hosts do not run on the Kubernetes runner", permanent=True)
        bad = [host for host in spec.hosts if not HOST_NAME.match(host)]
        if bad or len(set(spec.hosts)) != len(spec.hosts):
            raise RunnerError(f"host names must be distinct DNS labels (lower-case letters, digits and -): "
                              f"{', '.join(bad) or ', '.join(spec.hosts)}", permanent=True)

    # objects -----------------------------------------------------------------------------------------------
    def pod_name(self, spec: SessionSpec, host: str) -> str:
        """`lab-<session>` for the first host (the learner's), `lab-<session>-<host>` for the others."""

        name = object_name(spec.session_id)
        return name if host in ("", *spec.hosts[:1]) else f"{name}-{host}"

    def caps(self) -> list[str]:
        return [str(cap) for cap in self.runner.options.get("hosts_cap_add", DEFAULT_HOSTS_CAPS)]

    def policy_manifest(self, spec: SessionSpec, anchor: dict[str, Any]) -> dict[str, Any]:
        """The session's pods may reach each other (in and out, any port); nothing else changes."""

        runner = self.runner
        peers = {LABEL_MANAGED: label_value(runner.instance), LABEL_SESSION: label_value(spec.session_id)}
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": object_name(spec.session_id), "labels": runner.labels_for(spec),
                             "annotations": runner.annotations_for(spec), "ownerReferences": [owner_reference(anchor)]},
                "spec": {"podSelector": {"matchLabels": peers}, "policyTypes": ["Ingress", "Egress"],
                         "ingress": [{"from": [{"podSelector": {"matchLabels": peers}}]}],
                         "egress": [{"to": [{"podSelector": {"matchLabels": peers}}]}]}}

    def ensure_policy(self, spec: SessionSpec, anchor: dict[str, Any], deadline: float) -> None:
        """Create the session's policy, or adopt the one an earlier start made for this anchor. One left by
        an earlier anchor of the session is the garbage collector's: waited out (get only: the Role grants
        no more on policies)."""
        from kubernetes import client
        from kubernetes.client import ApiException

        runner = self.runner
        api: Any = client.NetworkingV1Api(runner.api_client)  # plain dicts in, as for every other object
        name, uid = anchor["metadata"]["name"], anchor["metadata"]["uid"]
        what = "letting the session's hosts reach each other (its NetworkPolicy)"
        while True:
            try:
                api.create_namespaced_network_policy(runner.namespace, self.policy_manifest(spec, anchor),
                                                     _request_timeout=runner.api_timeout)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise runner._translate(what, exc) from exc
            except Exception as exc:
                raise runner._translate(what, exc) from exc
            try:
                existing = api.read_namespaced_network_policy(name, runner.namespace,
                                                              _request_timeout=runner.api_timeout)
            except ApiException as exc:
                if exc.status == 404:
                    continue  # collected meanwhile: create it again
                raise runner._translate(what, exc) from exc
            except Exception as exc:
                raise runner._translate(what, exc) from exc
            meta = existing.metadata
            if not meta.deletion_timestamp and any(ref.uid == uid for ref in meta.owner_references or []):
                return
            if time.monotonic() > deadline:
                raise RunnerError("the session's previous NetworkPolicy is still being removed")
            time.sleep(0.5)

    # once every pod is ready -----------------------------------------------------------------------------
    def name_each_other(self, state: dict[str, Any], addresses: dict[str, str]) -> None:
        """Every host's /etc/hosts gets the others' addresses (`addresses`: host name -> pod IP)."""
        for host in addresses:
            lines = [f"{ip} {name} {HOSTS_MARK}" for name, ip in addresses.items() if name != host]
            done = self.runner.exec(state, ["sh", "-c", HOSTS_SCRIPT, "labs-hosts", *lines], user="root",
                                    timeout=20, host=host)
            if not done.ok:
                raise RunnerError(f"cannot name the other hosts on {host}: "
                                  f"{(done.stderr or done.stdout).decode(errors='replace').strip()[-300:]}")

    def connect(self, state: dict[str, Any]) -> None:
        """`ssh <host>` from the first host as the learner, as on Docker (session_shell.connect_hosts)."""
        def run(host: str, command: list[str], stdin: bytes | None, timeout: float) -> ExecResult:
            return self.runner.exec(state, command, stdin=stdin, timeout=timeout, host=host)

        connect_hosts(run, list(state.get("hosts") or {}))
