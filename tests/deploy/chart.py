"""The Helm chart rendered offline (helm-python-sdk: Helm itself, embedded), for the chart's own
tests and for the runner tests that check the runner against the Role the chart grants."""

from __future__ import annotations

import copy
import importlib
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "browser-labs"
RELEASE = "labs"
NAMESPACE = "browser-labs"
SESSIONS = "labs-sessions"
# Only what a render cannot do without: the chart refuses to make a Secret without these.
REQUIRED = {
    "database": {"url": "postgres://labs:db-password@postgres.db.svc:5432/labs"},
    "redis": {"url": "redis://:redis-password@redis.db.svc:6379/0"},
}


def tool(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{name} is required for the chart tests (pip install -r requirements-dev.txt): {exc}")


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for layer in layers:
        _merge_into(result, copy.deepcopy(layer))
    return result


def _merge_into(target: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


@cache
def _render_json(values_json: str) -> list[tuple[str, dict[str, Any]]]:
    helm = tool("helm_python")
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    documents = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append((template, document))
    return documents


def render(overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    values = merged(REQUIRED, overrides or {})
    return copy.deepcopy([document for _, document in _render_json(json.dumps(values, sort_keys=True))])


def role_grants(documents: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(API group, resource) → verbs, from the rendered Role."""
    granted: dict[tuple[str, str], set[str]] = {}
    for document in documents:
        if document["kind"] != "Role":
            continue
        for rule in document["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted
