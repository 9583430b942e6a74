"""Settings that weaken what the platform guarantees, named for the staff who must know.

The Django admin shows them on its front page and `manage.py check` prints them as warnings.
Each one is an operator's explicit choice; none is the default.
"""

from __future__ import annotations

from django.conf import settings

from runners import runner_configs
from runners.docker import UNSAFE_DIND_MODES


def unsafe_settings() -> list[str]:
    """One sentence per weakening setting in force, for staff."""
    found: list[str] = []
    if settings.LAB_ALLOW_UNSAFE_DIND:
        found.append("LAB_ALLOW_UNSAFE_DIND is on: Docker-in-Docker runners set to dind_mode \"privileged\" or "
                     "\"capabilities\" give root in a session root on the host (a learner can mount its disks). "
                     "Use them only for labs whose learners you trust with the machine.")
    if settings.LAB_ALLOW_UNSANDBOXED_LOCAL:
        found.append("LAB_ALLOW_UNSANDBOXED_LOCAL is on: without bubblewrap, local sessions run as the "
                     "platform's own user with no isolation at all.")
    for alias, config in runner_configs().items():
        options = config.get("OPTIONS") or {}
        backend = str(config.get("BACKEND", ""))
        if options.get("dind_mode") in UNSAFE_DIND_MODES:
            state = "in use" if settings.LAB_ALLOW_UNSAFE_DIND else "refused until LAB_ALLOW_UNSAFE_DIND is on"
            found.append(f"Runner {alias!r} runs Docker-in-Docker as root on the host (dind_mode "
                         f"{options['dind_mode']!r}, {state}).")
        dind = options.get("dind")
        if isinstance(dind, dict) and dind.get("mode") == "privileged":
            state = "in use" if settings.LAB_ALLOW_UNSAFE_DIND else "refused until LAB_ALLOW_UNSAFE_DIND is on"
            found.append(f"Runner {alias!r} runs Docker-in-Docker engines in privileged pods (dind mode "
                         f"\"privileged\", {state}): root in such a session is root on its node.")
        if options.get("guard_host") is False:
            found.append(f"Runner {alias!r} has guard_host off: its sessions can reach the host's own services "
                         "(the database, Redis) and the cloud metadata address.")
        if options.get("disk_limit") == "off" and not backend.endswith("FakeRunner"):
            found.append(f"Runner {alias!r} has disk_limit off: a session can fill the host's disk.")
    return found
