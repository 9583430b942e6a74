"""The web server's descriptor limit: every open terminal holds two descriptors and a VNC
connection two more, so the usual soft limit of 1,024 stops a daphne process at a few hundred
terminals. Raised to the hard limit at start-up (an unprivileged process may go that far)."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# Beyond this nothing is gained (1,000 terminals need ~2,000) and some systems have no hard limit.
CEILING = 1 << 20


def raise_descriptor_limit(ceiling: int = CEILING) -> int:
    """Raise this process's soft limit on open descriptors to its hard limit (at most `ceiling`);
    the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # a container runtime may refuse: keep serving, but say so
            log.warning("cannot raise the open-descriptor limit from %d to %d: %s", soft, target, exc)
            return soft
        return target
    return soft
