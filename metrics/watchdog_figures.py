"""The resource watchdog's figures for Prometheus: each running session's latest CPU, memory and disk
(the SessionSample rows run_watchdog keeps, so a scrape never calls an engine) and the open alerts.

Two queries a scrape, however many sessions. A sample is as fresh as the watchdog's last pass
(LAB_WATCHDOG_INTERVAL_SECONDS); `labs_session_sample_age_seconds` says how fresh, so a dashboard can
tell a stopped watchdog from a quiet platform. Open alerts have a series for every kind and level,
zeros included, so an alerting rule on them never reads "no data" for "no alert".
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sessions_app.models import State
from watchdog.models import Alert, SessionSample
from watchdog.rules import KIND_LABELS, LEVELS

SESSION_LABELS = ["session", "lab", "runner"]


class WatchdogCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from self._session_samples()
        yield self._open_alerts()

    def _session_samples(self) -> Iterator[Metric]:
        cpu = GaugeMetricFamily("labs_session_cpu_percent", "A running session's CPU use (100 is one CPU busy).",
                                labels=SESSION_LABELS)
        cpu_limit = GaugeMetricFamily("labs_session_cpu_limit", "A running session's CPU limit, in CPUs.",
                                      labels=SESSION_LABELS)
        memory = GaugeMetricFamily("labs_session_memory_bytes", "A running session's memory in use.",
                                   labels=SESSION_LABELS)
        memory_limit = GaugeMetricFamily("labs_session_memory_limit_bytes", "A running session's memory limit.",
                                         labels=SESSION_LABELS)
        disk = GaugeMetricFamily("labs_session_disk_used_bytes",
                                 "A running session's disk in use (where its runner limits the disk).",
                                 labels=SESSION_LABELS)
        disk_total = GaugeMetricFamily("labs_session_disk_total_bytes", "A running session's disk size.",
                                       labels=SESSION_LABELS)
        age = GaugeMetricFamily("labs_session_sample_age_seconds", "How old a running session's figures are.",
                                labels=SESSION_LABELS)
        now = timezone.now()
        samples = (SessionSample.objects.filter(session__state=State.RUNNING)
                   .select_related("session__lab").order_by("session_id"))
        for sample in samples:
            session = sample.session
            labels = [str(session.pk), session.lab.slug, session.runner_name or session.lab.runner]
            cpu.add_metric(labels, sample.cpu_percent)
            cpu_limit.add_metric(labels, float(session.lab.cpu))
            memory.add_metric(labels, sample.memory_bytes)
            memory_limit.add_metric(labels, sample.memory_limit_bytes)
            if sample.disk_used_bytes is not None and sample.disk_total_bytes:
                disk.add_metric(labels, sample.disk_used_bytes)
                disk_total.add_metric(labels, sample.disk_total_bytes)
            age.add_metric(labels, max(0.0, (now - sample.sampled_at).total_seconds()))
        yield from (cpu, cpu_limit, memory, memory_limit, disk, disk_total, age)

    def _open_alerts(self) -> Metric:
        family = GaugeMetricFamily("labs_watchdog_alerts_open", "The resource watchdog's open alerts.",
                                   labels=["kind", "level"])
        counts = {(row["kind"], row["level"]): row["n"] for row in
                  Alert.objects.filter(status=Alert.Status.OPEN).order_by().values("kind", "level")
                  .annotate(n=Count("pk"))}
        for kind in KIND_LABELS:
            for level in LEVELS:
                family.add_metric([kind, level], counts.get((kind, level), 0))
        return family
