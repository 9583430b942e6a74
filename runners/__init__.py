"""Runner backends, configured like Django's STORAGES.

    LAB_RUNNERS = {"docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {...}}}

A lab names its runner. The alias "default" (used by labs that name none) is the Docker
runner when an engine answers, else the sandboxed local runner, unless LAB_RUNNERS says otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from runners.base import VM_IMAGE_KINDS, Runner, RunnerError

BUILTIN_RUNNERS: dict[str, dict[str, Any]] = {
    "docker": {"BACKEND": "runners.docker.DockerRunner", "OPTIONS": {}},
    "docker-vm": {"BACKEND": "runners.docker_vm.DockerVmRunner", "OPTIONS": {}},
    # Available only with OPTIONS.kubeconfig or inside a cluster (never ~/.kube/config by accident).
    "kubernetes": {"BACKEND": "runners.kubernetes.KubernetesRunner", "OPTIONS": {}},
    "local": {"BACKEND": "runners.local.LocalRunner", "OPTIONS": {}},
    "qemu": {"BACKEND": "runners.qemu.QemuRunner", "OPTIONS": {}},
}

LEGACY_PREFIX = "sessions_app.runners."
log = logging.getLogger(__name__)

_cache: dict[str, tuple[str, Runner]] = {}
_lock = threading.Lock()


def runner_configs() -> dict[str, dict[str, Any]]:
    configs = {**BUILTIN_RUNNERS, **settings.LAB_RUNNERS}
    for alias, config in configs.items():
        if not isinstance(config, dict) or "BACKEND" not in config:
            raise ImproperlyConfigured(f"LAB_RUNNERS[{alias!r}] needs a BACKEND")
    return configs


def _auto_default_alias(configs: dict[str, dict[str, Any]]) -> str:
    docker = _build("docker", configs["docker"])
    return "docker" if docker.available() else "local"


def _build(alias: str, config: dict[str, Any]) -> Runner:
    key = json.dumps(config, sort_keys=True, default=str)
    with _lock:
        cached = _cache.get(alias)
        if cached and cached[0] == key:
            return cached[1]
    path = str(config["BACKEND"])
    if path.startswith(LEGACY_PREFIX):
        # Runners lived in sessions_app/runners/ before they became a package of their own.
        log.warning("LAB_RUNNERS[%r]: %s is now %s; please update the setting", alias, path,
                    "runners." + path[len(LEGACY_PREFIX):])
        path = "runners." + path[len(LEGACY_PREFIX):]
    try:
        backend = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"LAB_RUNNERS[{alias!r}]: cannot import {path}: {exc}") from exc
    runner = backend(alias, config.get("OPTIONS", {}))
    with _lock:
        _cache[alias] = (key, runner)
    return runner


def resolve_alias(name: str, image_kind: str = "") -> str:
    """The concrete alias a name refers to ("default" picks the best available backend). With a
    VM image kind, a runner that sends its VM labs elsewhere (Runner.vm_runner) gives that alias."""
    configs = runner_configs()
    if name in configs:
        alias = name
    elif name in ("", "default"):
        alias = _auto_default_alias(configs)
    else:
        raise RunnerError(f"No runner named {name!r} is configured (LAB_RUNNERS).", permanent=True)
    if image_kind in VM_IMAGE_KINDS:
        companion = _build(alias, configs[alias]).vm_runner
        if companion and companion != alias:
            return resolve_alias(companion)
    return alias


def get_runner(name: str) -> Runner:
    configs = runner_configs()
    alias = resolve_alias(name)
    return _build(alias, configs[alias])


def all_runners() -> list[Runner]:
    """Every configured runner that can be built; used by reconciliation."""
    runners = []
    for alias, config in runner_configs().items():
        try:
            runners.append(_build(alias, config))
        except ImproperlyConfigured:
            continue
    return runners


def reset_cache() -> None:
    with _lock:
        _cache.clear()
