"""The guide's metric names, kept exactly as a *compatibility family* because users' queries and dashboards use
them. Their values carry the guide's units despite the ``_bytes`` name: ``memory_usage_bytes{component="rss_mb"}``
is in MB, ``{component="percent"}`` in percent. None of them has a ``target`` label: they show one target."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from memmon.exposition.metrics.families import counter, histogram
from memmon.exposition.metrics.view import TargetView
from memmon.model import ALERT_LEVELS, MB
from memmon.telemetry import Telemetry


def _usage(shown: TargetView | None) -> GaugeMetricFamily:
    usage = GaugeMetricFamily(
        "memory_usage_bytes",
        "Guide compatibility family; units as the component label says (MB or percent), not bytes.",
        labels=["component"],
    )
    if shown is None:
        return usage
    sample = shown.latest.sample
    values = {
        "rss_mb": None if sample.process is None else sample.process.rss_bytes / MB,
        "vms_mb": None if sample.process is None else sample.process.vms_bytes / MB,
        "percent": sample.percent_of_limit,
        "available_mb": None if sample.available_bytes is None else sample.available_bytes / MB,
        "swap_percent": None if sample.host is None else sample.host.swap_percent,
    }
    for component, value in values.items():
        if value is not None:
            usage.add_metric([component], value)
    return usage


def compatibility_families(telemetry: Telemetry, shown: TargetView | None) -> Iterator[Metric]:
    """The guide's five families; ``memory_usage_bytes`` shows the target ``shown`` (none before the first check:
    the family without series)."""
    yield _usage(shown)
    sent = CounterMetricFamily(
        "memory_alerts_sent", "Guide compatibility: firing alerts notified.", labels=["severity"]
    )
    for level in ALERT_LEVELS:
        sent.add_metric([level.label], telemetry.alerts_notified.value(level.label))
    yield sent
    yield histogram(
        "memory_check_duration_seconds", "Guide compatibility: cost of one check.", telemetry.check_duration
    )
    yield counter(
        "memory_cleanup_operations", "Guide compatibility: cleanup actions run.", telemetry.cleanup_operations
    )
    yield counter("memory_leaks_detected", "Guide compatibility: leaks detected.", telemetry.leaks_detected)
