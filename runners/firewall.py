"""The host firewall rules that keep sessions away from what they must never reach.

Every session network the Docker runner makes is a Linux bridge whose name says its mode:

    labs<id>   bridge and isolated modes
    labu<id>   unrestricted mode

and these rules (inserted once per process, checked with `iptables -C` first, so running them
again adds nothing) apply to all of them:

- nothing from a session opens a connection to the host itself (INPUT): PostgreSQL, Redis,
  the Docker engine's ports and anything listening on 0.0.0.0 stay out of reach; replies to
  connections the platform opens (the web preview) still pass;
- nothing from a session reaches link-local addresses, among them the cloud metadata service
  169.254.169.254 (as zero-to-jupyterhub blocks it);
- bridge mode reaches the internet but not private networks (RFC 1918, carrier-grade NAT):
  the operator's LAN or cloud VPC is not a learner's to scan. Unrestricted mode may.

Forwarded traffic is filtered in Docker's DOCKER-USER chain, which Docker evaluates before its
own rules and never flushes. Needs root and iptables on the engine's machine.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterable

from runners.base import RunnerError

BRIDGED_PREFIX = "labs"  # bridge and isolated networks
OPEN_PREFIX = "labu"  # unrestricted networks
LINK_LOCAL = "169.254.0.0/16"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")

Rule = tuple[str, ...]  # a chain and its match/target, as `iptables -I` takes them


def _host_guard(prefix: str) -> Rule:
    return ("INPUT", "-i", f"{prefix}+", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP")


def docker_session_rules(forward_chain: str = "DOCKER-USER") -> list[Rule]:
    """The rules for every session bridge of the Docker runner (see the module docstring)."""
    rules: list[Rule] = [_host_guard(BRIDGED_PREFIX), _host_guard(OPEN_PREFIX)]
    for prefix in (BRIDGED_PREFIX, OPEN_PREFIX):
        rules.append((forward_chain, "-i", f"{prefix}+", "-d", LINK_LOCAL, "-j", "DROP"))
    # Leaving through anything but a session bridge: a session's own containers on its network
    # (a multi-host lab) still talk to each other; Docker keeps different networks apart itself.
    for cidr in PRIVATE_RANGES:
        rules.append((forward_chain, "-i", f"{BRIDGED_PREFIX}+", "!", "-o", f"{BRIDGED_PREFIX}+", "-d", cidr,
                      "-j", "DROP"))
    return rules


def process_owner_rules(uid: int, *, private: bool = True) -> list[Rule]:
    """Rules for sessions whose traffic leaves from a host process of their own (QEMU's user-mode
    network runs as `uid`): the host itself, link-local addresses and, by default, private networks."""
    owner = ("-m", "owner", "--uid-owner", str(uid))
    rules: list[Rule] = [("OUTPUT", "-o", "lo", *owner, "-j", "REJECT"),
                         ("OUTPUT", *owner, "-d", LINK_LOCAL, "-j", "REJECT")]
    if private:
        rules.extend(("OUTPUT", *owner, "-d", cidr, "-j", "REJECT") for cidr in PRIVATE_RANGES)
    return rules


_lock = threading.Lock()
_installed: set[Rule] = set()


def chain_exists(chain: str) -> bool:
    try:
        return subprocess.run(["iptables", "-w", "10", "-S", chain], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def rule_present(rule: Rule) -> bool:
    try:
        return subprocess.run(["iptables", "-w", "10", "-C", *rule], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure(rules: Iterable[Rule], purpose: str) -> None:
    """Insert each rule unless it is there already. RunnerError (permanent) when one cannot be."""
    with _lock:
        for rule in rules:
            if rule in _installed:
                continue
            try:
                # -w: wait for the xtables lock (Docker holds it too); a busy lock is no answer.
                present = subprocess.run(["iptables", "-w", "10", "-C", *rule], capture_output=True, timeout=20)
                if present.returncode != 0:
                    added = subprocess.run(["iptables", "-w", "10", "-I", *rule], capture_output=True,
                                           text=True, timeout=20)
                    if added.returncode != 0:
                        raise RunnerError(f"cannot install the firewall rule that {purpose} (iptables -I "
                                          f"{' '.join(rule)}: {added.stderr.strip() or 'failed'})", permanent=True)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RunnerError(f"cannot install the firewall rule that {purpose} (iptables: {exc})",
                                  permanent=True) from exc
            _installed.add(rule)


def forget() -> None:
    """Check every rule again on next use (tests that flush rules; a restarted firewall)."""
    with _lock:
        _installed.clear()
