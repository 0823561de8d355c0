"""memmon's own series: its build, when it started, what its checks cost and how often they fail, its state store
and the kernel notifications it reacted to."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from memmon import __version__
from memmon.exposition.metrics.families import counter, histogram
from memmon.telemetry import MEMORY_EVENT_KINDS, STORE_OPERATIONS, Telemetry


def agent_families(telemetry: Telemetry, started_at: float | None) -> Iterator[Metric]:
    """``memmon_build_info``, ``memmon_start_time_seconds`` (once monitoring started), the check counters and
    histogram, ``memmon_store_errors`` and ``memmon_memory_events`` (each known label at 0 from the start)."""
    info = GaugeMetricFamily("memmon_build_info", "memmon version.", labels=["version"])
    info.add_metric([__version__], 1)
    yield info
    if started_at is not None:
        yield GaugeMetricFamily(
            "memmon_start_time_seconds", "When monitoring started (epoch).", value=started_at
        )
    yield histogram("memmon_check_duration_seconds", "Cost of one full check.", telemetry.check_duration)
    yield counter("memmon_checks", "Checks completed.", telemetry.checks)
    yield counter("memmon_check_overruns", "Checks slower than the limit.", telemetry.check_overruns)
    yield counter("memmon_check_failures", "Checks that raised.", telemetry.check_failures)
    operations = [(operation,) for operation in STORE_OPERATIONS]
    yield counter("memmon_store_errors", "State store failures.", telemetry.store_errors, expected=operations)
    yield counter(
        "memmon_memory_events",
        "Kernel memory notifications that triggered a check.",
        telemetry.memory_events,
        expected=[(kind,) for kind in MEMORY_EVENT_KINDS],
    )


def node_families(telemetry: Telemetry) -> Iterator[Metric]:
    """Node mode only: ``memmon_node_pods{state}`` (watched, excluded, unknown) and the pod watch's counters
    (``memmon_kubernetes_watch_<what>_total``: lists, watches, events, bookmarks, relists, failures, bytes)."""
    if telemetry.node_pods:
        pods = GaugeMetricFamily("memmon_node_pods", "Pods of the node by state.", labels=["state"])
        for state, count in sorted(telemetry.node_pods.items()):
            pods.add_metric([state], count)
        yield pods
    for what, count in sorted(telemetry.kube_watch.items()):
        doc = (
            f"The pod watch's {what} (received from the API server)"
            if what == "bytes"
            else f"Pod watch {what}."
        )
        yield CounterMetricFamily(f"memmon_kubernetes_watch_{what}", doc, value=count)
