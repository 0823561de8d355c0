"""Prometheus metrics from a custom collector over the latest check (nothing is updated in the hot path).

Two families:

- The guide's names, kept exactly as a *compatibility family* because users' queries and dashboards use them.
  Their values carry the guide's units despite the ``_bytes`` name: ``memory_usage_bytes{component="rss_mb"}``
  is in MB, ``{component="percent"}`` in percent.
- ``memmon_*``, following Prometheus conventions: base units (bytes, seconds, ratios 0-1), ``_total`` counters,
  a ``target`` label on every memory series.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import gzip_accepted
from prometheus_client.registry import Collector

from memmon import __version__
from memmon.exposition.source import MonitorView
from memmon.model import ALERT_LEVELS, MB
from memmon.telemetry import (
    ACTION_OUTCOMES,
    DELIVERY_OUTCOMES,
    MEMORY_EVENT_KINDS,
    REPUSH_OUTCOMES,
    STORE_OPERATIONS,
    DurationHistogram,
    LabeledCounter,
)

SOURCES = (
    "process",
    "cgroup",
    "host",
    "pressure",
    "store",
    "kernel_events",
    "usage_watch",
    "memory_high_guard",
)


def _histogram(name: str, doc: str, histogram: DurationHistogram) -> HistogramMetricFamily:
    buckets, total, _count = histogram.snapshot()
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def _counter(
    name: str,
    doc: str,
    counter: LabeledCounter,
    extra: dict[str, str] | None = None,
    expected: Iterable[tuple[str, ...]] = (),
) -> Metric:
    """A counter family; ``expected`` label tuples (and the unlabelled series) are exposed at 0 until counted."""
    extra = extra or {}
    family = CounterMetricFamily(name, doc, labels=[*extra, *counter.label_names])
    items = counter.items(expected=[()] if not counter.label_names else expected)
    for labels, value in sorted(items):
        family.add_metric([*extra.values(), *labels], value)
    return family


def _seen_by_known(counter: LabeledCounter, seconds: Iterable[str]) -> set[tuple[str, str]]:
    """Every first label already counted, paired with each of the known second labels."""
    known = tuple(seconds)
    return {(labels[0], second) for labels, _value in counter.items() for second in known}


class MemmonCollector(Collector):
    """Yields both metric families from a monitor's latest evaluation and telemetry."""

    def __init__(self, monitor: MonitorView) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        yield from self._compatibility()
        yield from self._conventional()

    def _compatibility(self) -> Iterator[Metric]:
        telemetry = self.monitor.telemetry
        latest = self.monitor.latest
        usage = GaugeMetricFamily(
            "memory_usage_bytes",
            "Guide compatibility family; units as the component label says (MB or percent), not bytes.",
            labels=["component"],
        )
        if latest is not None:
            sample = latest.sample
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
        yield usage
        sent = CounterMetricFamily(
            "memory_alerts_sent", "Guide compatibility: firing alerts notified.", labels=["severity"]
        )
        for level in ALERT_LEVELS:
            sent.add_metric([level.label], telemetry.alerts_notified.value(level.label))
        yield sent
        yield _histogram(
            "memory_check_duration_seconds",
            "Guide compatibility: cost of one check.",
            telemetry.check_duration,
        )
        yield _counter(
            "memory_cleanup_operations",
            "Guide compatibility: cleanup actions run.",
            telemetry.cleanup_operations,
        )
        yield _counter(
            "memory_leaks_detected", "Guide compatibility: leaks detected.", telemetry.leaks_detected
        )

    def _conventional(self) -> Iterator[Metric]:
        monitor = self.monitor
        telemetry = monitor.telemetry
        latest = monitor.latest
        info = GaugeMetricFamily("memmon_build_info", "memmon version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        if monitor.started_at is not None:
            yield GaugeMetricFamily(
                "memmon_start_time_seconds", "When monitoring started (epoch).", value=monitor.started_at
            )
        yield _histogram("memmon_check_duration_seconds", "Cost of one full check.", telemetry.check_duration)
        yield _counter("memmon_checks", "Checks completed.", telemetry.checks)
        yield _counter("memmon_check_overruns", "Checks slower than the limit.", telemetry.check_overruns)
        yield _counter("memmon_check_failures", "Checks that raised.", telemetry.check_failures)
        # Which actions a configuration runs is decided inside the action runner, so an action's series start at 0
        # from its first run on; every other label set below is known before anything happens.
        actions = _seen_by_known(telemetry.actions, ACTION_OUTCOMES)
        yield _counter("memmon_actions", "Actions run, by outcome.", telemetry.actions, expected=actions)
        yield _counter(
            "memmon_alert_handler_errors", "Custom alert handler failures.", telemetry.handler_errors
        )
        operations = [(operation,) for operation in STORE_OPERATIONS]
        yield _counter(
            "memmon_store_errors", "State store failures.", telemetry.store_errors, expected=operations
        )
        yield _counter("memmon_memory_events", "Kernel memory notifications that triggered a check.",
                       telemetry.memory_events, expected=[(kind,) for kind in MEMORY_EVENT_KINDS])  # fmt: skip
        channels = monitor.alert_channels()
        deliveries = {(name, outcome) for name in channels for outcome in DELIVERY_OUTCOMES}
        deliveries.add(("log", "delivered"))  # the log channel cannot fail
        if "alertmanager" in channels:
            deliveries.update(("alertmanager", outcome) for outcome in REPUSH_OUTCOMES)
        yield _counter(
            "memmon_alert_deliveries",
            "Alert deliveries by channel and outcome.",
            telemetry.deliveries,
            expected=deliveries,
        )
        pending = GaugeMetricFamily("memmon_alert_spool_pending", "Deliveries waiting.", labels=["channel"])
        degraded_channels = GaugeMetricFamily(
            "memmon_alert_channel_degraded", "1 while a channel keeps failing.", labels=["channel"]
        )
        for name, report in sorted(channels.items()):
            pending.add_metric([name], report.pending)
            degraded_channels.add_metric([name], 1 if report.degraded else 0)
        yield pending
        yield degraded_channels
        if latest is None:
            return
        sample = latest.sample
        target = {"target": sample.target}
        alert_labels = [
            (level.label, status.component) for level in ALERT_LEVELS for status in latest.components
        ]
        yield _counter("memmon_alerts", "Alerts fired.", telemetry.alerts_fired, target, alert_labels)
        yield _counter(
            "memmon_alerts_resolved", "Alerts resolved.", telemetry.alerts_resolved, target, alert_labels
        )

        def gauge(name: str, doc: str, value: float | None, **labels: str) -> Iterator[Metric]:
            if value is None:
                return
            family = GaugeMetricFamily(name, doc, labels=["target", *labels])
            family.add_metric([sample.target, *labels.values()], value)
            yield family

        yield from gauge(
            "memmon_memory_level",
            "Overall level: 0 ok, 1 warning, 2 critical, 3 emergency.",
            int(latest.level),
        )
        components = GaugeMetricFamily(
            "memmon_component_level", "Level per component (0-3).", labels=["target", "component"]
        )
        for status in latest.components:
            components.add_metric([sample.target, status.component], int(status.level))
        yield components
        active = GaugeMetricFamily(
            "memmon_active_alerts", "Alerts firing now.", labels=["target", "severity"]
        )
        firing = latest.active_alerts
        for level in ALERT_LEVELS:
            active.add_metric([sample.target, level.label], sum(1 for a in firing if a.severity is level))
        yield active
        yield from gauge(
            "memmon_target_memory_bytes",
            "The judged memory: rss sum or cgroup working set.",
            sample.target_bytes,
        )
        yield from gauge(
            "memmon_effective_limit_bytes",
            "The limit percentages are of.",
            sample.effective_limit_bytes,
            source=sample.limit_source,
        )
        percent = sample.percent_of_limit
        yield from gauge(
            "memmon_memory_usage_ratio",
            "Judged memory / effective limit.",
            None if percent is None else percent / 100,
        )
        yield from gauge(
            "memmon_last_check_timestamp_seconds", "When the latest check ran.", sample.timestamp
        )
        prediction = monitor.prediction
        if prediction is not None:
            yield from gauge(
                "memmon_predicted_seconds_to_limit",
                "Seconds until the effective limit at the current trend (predictive alerting).",
                prediction.get("seconds_to_limit"),
            )
        if sample.process is not None:
            process = sample.process
            yield from gauge(
                "memmon_process_resident_memory_bytes", "RSS of the target processes.", process.rss_bytes
            )
            yield from gauge(
                "memmon_process_virtual_memory_bytes", "VMS of the target processes.", process.vms_bytes
            )
            yield from gauge("memmon_processes", "Target processes found.", len(process.processes))
            workers = [p.rss_bytes for p in process.processes if p.role == "worker"]
            if workers:
                yield from gauge(
                    "memmon_server_workers", "Workers of the pre-fork server target.", len(workers)
                )
                yield from gauge(
                    "memmon_server_worker_max_resident_bytes",
                    "RSS of the pre-fork server's largest worker.",
                    max(workers),
                )
            yield from gauge(
                "memmon_gc_tracked_objects",
                "gc-tracked objects (sampled every N checks).",
                process.gc_objects,
            )
            if process.gc_collections is not None:
                family = CounterMetricFamily("memmon_gc_collections", "gc collections.", labels=["target"])
                family.add_metric([sample.target], process.gc_collections)
                yield family
        if sample.cgroup is not None:
            cgroup = sample.cgroup
            yield from gauge("memmon_cgroup_memory_usage_bytes", "cgroup memory usage.", cgroup.usage_bytes)
            yield from gauge(
                "memmon_cgroup_memory_working_set_bytes",
                "cgroup usage - inactive file.",
                cgroup.working_set_bytes,
            )
            yield from gauge(
                "memmon_cgroup_memory_limit_bytes", "cgroup limit (absent when none).", cgroup.limit_bytes
            )
            for name, doc, count in (
                ("memmon_cgroup_oom_kills", "OOM kills in the cgroup.", cgroup.oom_kill_count),
                ("memmon_cgroup_memory_failures", "v1 failcnt: limit hits.", cgroup.failcnt),
            ):
                if count is not None:
                    family = CounterMetricFamily(name, doc, labels=["target"])
                    family.add_metric([sample.target], count)
                    yield family
        if sample.host is not None:
            host = sample.host
            yield from gauge("memmon_host_memory_total_bytes", "Host memory.", host.total_bytes)
            yield from gauge(
                "memmon_host_memory_available_bytes", "Host available memory.", host.available_bytes
            )
            yield from gauge("memmon_host_swap_total_bytes", "Host swap.", host.swap_total_bytes)
            yield from gauge("memmon_host_swap_used_bytes", "Host swap used.", host.swap_used_bytes)
        if sample.pressure is not None:
            stalled = GaugeMetricFamily(
                "memmon_memory_pressure_avg10_ratio",
                "PSI memory stall share over 10 s.",
                labels=["target", "kind"],
            )
            stalled.add_metric([sample.target, "some"], sample.pressure.some_avg10 / 100)
            if sample.pressure.full_avg10 is not None:
                stalled.add_metric([sample.target, "full"], sample.pressure.full_avg10 / 100)
            yield stalled
        degraded = {d.source for d in monitor.degraded}
        sources = GaugeMetricFamily(
            "memmon_source_degraded",
            "1 when a source could not be read or a watch not armed.",
            labels=["target", "source"],
        )
        for source in sorted(degraded | set(SOURCES)):
            sources.add_metric([sample.target, source], 1 if source in degraded else 0)
        yield sources


def build_registry(monitor: MonitorView) -> CollectorRegistry:
    """A private registry (never the global one: a library user may have their own metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MemmonCollector(monitor))
    return registry


def render(registry: CollectorRegistry, accept_encoding: str = "") -> tuple[bytes, dict[str, str]]:
    """The text exposition format of every metric and its headers; gzipped when ``accept_encoding`` (the request's
    ``Accept-Encoding``) names gzip, as prometheus_client's own servers decide (``gzip_accepted``)."""
    body = generate_latest(registry)
    # The body depends on Accept-Encoding, so caches must key on it (RFC 9110 section 12.5.5).
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    if gzip_accepted(accept_encoding):
        # zlib's default level: nearly all of level 9's gain for a fraction of its time.
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return body, headers
