"""deploy/grafana/browser-labs.json reads only what /metrics exports: every PromQL expression's
metric names are checked against a real scrape of the view, with rows for every family."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metrics.tests.conftest import scrape

pytestmark = pytest.mark.django_db

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "browser-labs.json"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers, ranges,
    label lists and function or aggregation calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w$.:])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", expr)
    return {name for name in names if name.lower() not in KEYWORDS}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard["panels"]) for target in panel.get("targets", [])]


def test_the_name_reader_finds_metrics_and_only_them():
    assert metric_names('histogram_quantile(0.95, max by (le, runner) (rate(a_bucket{x="y(z)"}[$__rate_interval])))'
                        " / on (runner) group_left b_total offset 5m") == {"a_bucket", "b_total"}
    assert metric_names("60 * sum(max by (verdict) (labs_x))") == {"labs_x"}


def test_every_expression_names_only_exported_metrics(rows, queues_on_own_redis):
    result = scrape()
    assert result.status == 200
    exported = result.sample_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert len(exprs) >= 10
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} reads {sorted(names - exported)}, which /metrics does not export"
    # and every family /metrics exports has a panel
    read = set().union(*(metric_names(expr) for expr in exprs))
    families = {re.sub(r"_(bucket|sum|count|gsum|gcount)$", "", name) for name in exported}
    shown = {re.sub(r"_(bucket|sum|count|gsum|gcount)$", "", name) for name in read}
    assert families <= shown, f"no panel for {sorted(families - shown)}"


def test_panels_use_the_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
