"""A target's latest sample, one collector per source: the judged memory and its limit, the target processes, the
cgroup, the host, PSI, and which sources failed. A source that was not read this check has no series.

What every target shares (the host's memory and swap, the store, the alert channels) is the one target's own with
a single target, as always; with several it is exposed once, as ``target="host"`` (:func:`shared_families`), not
once per target: 6 of a node-mode target's 36 series were such copies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import Metric

from memmon.exposition.metrics.families import TargetSeries
from memmon.exposition.metrics.view import TargetView
from memmon.model import Degradation, HostSample

TARGET_SOURCES = ("process", "cgroup", "pressure", "kernel_events", "usage_watch", "memory_high_guard")
"""The sources read for each target, shown at 0 until they fail."""
SHARED_SOURCES = ("host", "store")
"""The sources every target shares (one host reading, one store), shown at 0 until they fail; the alert channels
(``alerting.<name>``) appear when they fail."""
SOURCES = TARGET_SOURCES + SHARED_SOURCES
"""The sources ``memmon_source_degraded`` shows at 0 until they fail (others appear when they fail)."""
SHARED_TARGET = "host"
"""The ``target`` of the shared series of a multi-target agent: the host's (the host's own watch, when
configured, is also named ``host``)."""


def judged_families(target: TargetView) -> Iterator[Metric]:
    """The memory the thresholds judge, the limit percentages are of, their ratio, and when the check ran."""
    series = target.series
    sample = target.latest.sample
    yield from series.gauge(
        "memmon_target_memory_bytes", "The judged memory: rss sum or cgroup working set.", sample.target_bytes
    )
    yield from series.gauge(
        "memmon_effective_limit_bytes",
        "The limit percentages are of.",
        sample.effective_limit_bytes,
        source=sample.limit_source,
    )
    percent = sample.percent_of_limit
    yield from series.gauge(
        "memmon_memory_usage_ratio",
        "Judged memory / effective limit.",
        None if percent is None else percent / 100,
    )
    yield from series.gauge(
        "memmon_last_check_timestamp_seconds", "When the latest check ran.", sample.timestamp
    )


def process_families(target: TargetView) -> Iterator[Metric]:
    """The target processes: RSS and VMS summed, their count, a pre-fork server's workers, and gc counts (only
    when the target is memmon's own process)."""
    process = target.latest.sample.process
    if process is None:
        return
    series = target.series
    yield from series.gauge(
        "memmon_process_resident_memory_bytes", "RSS of the target processes.", process.rss_bytes
    )
    yield from series.gauge(
        "memmon_process_virtual_memory_bytes", "VMS of the target processes.", process.vms_bytes
    )
    yield from series.gauge("memmon_processes", "Target processes found.", len(process.processes))
    workers = [p.rss_bytes for p in process.processes if p.role == "worker"]
    if workers:
        yield from series.gauge(
            "memmon_server_workers", "Workers of the pre-fork server target.", len(workers)
        )
        yield from series.gauge(
            "memmon_server_worker_max_resident_bytes",
            "RSS of the pre-fork server's largest worker.",
            max(workers),
        )
    yield from series.gauge(
        "memmon_gc_tracked_objects", "gc-tracked objects (sampled every N checks).", process.gc_objects
    )
    yield from series.count("memmon_gc_collections", "gc collections.", process.gc_collections)


def cgroup_families(target: TargetView) -> Iterator[Metric]:
    """The target's memory cgroup (v1 or v2): usage, working set, limit, OOM kills and (v1) limit hits."""
    cgroup = target.latest.sample.cgroup
    if cgroup is None:
        return
    series = target.series
    yield from series.gauge("memmon_cgroup_memory_usage_bytes", "cgroup memory usage.", cgroup.usage_bytes)
    yield from series.gauge(
        "memmon_cgroup_memory_working_set_bytes", "cgroup usage - inactive file.", cgroup.working_set_bytes
    )
    yield from series.gauge(
        "memmon_cgroup_memory_limit_bytes", "cgroup limit (absent when none).", cgroup.limit_bytes
    )
    yield from series.count("memmon_cgroup_oom_kills", "OOM kills in the cgroup.", cgroup.oom_kill_count)
    yield from series.count("memmon_cgroup_memory_failures", "v1 failcnt: limit hits.", cgroup.failcnt)


def host_families(target: TargetView) -> Iterator[Metric]:
    """Host memory and swap as read with this target's check (the one target of a single-target agent only)."""
    host = target.latest.sample.host
    if host is not None and target.shares_agent_series:
        yield from _host_series(target.series, host)


def _host_series(series: TargetSeries, host: HostSample) -> Iterator[Metric]:
    yield from series.gauge("memmon_host_memory_total_bytes", "Host memory.", host.total_bytes)
    yield from series.gauge(
        "memmon_host_memory_available_bytes", "Host available memory.", host.available_bytes
    )
    yield from series.gauge("memmon_host_swap_total_bytes", "Host swap.", host.swap_total_bytes)
    yield from series.gauge("memmon_host_swap_used_bytes", "Host swap used.", host.swap_used_bytes)


def pressure_families(target: TargetView) -> Iterator[Metric]:
    """PSI memory pressure (avg10) as a ratio: ``some`` always, ``full`` where the kernel reports it."""
    pressure = target.latest.sample.pressure
    if pressure is None:
        return
    stalled = [(["some"], pressure.some_avg10 / 100)]
    if pressure.full_avg10 is not None:
        stalled.append((["full"], pressure.full_avg10 / 100))
    yield target.series.gauges(
        "memmon_memory_pressure_avg10_ratio", "PSI memory stall share over 10 s.", ["kind"], stalled
    )


def degraded_families(target: TargetView) -> Iterator[Metric]:
    """``memmon_source_degraded``: 1 for each source that failed, 0 for every other known source (of a target
    among several: its own sources only, the shared ones are :func:`shared_families`')."""
    degraded = {d.source for d in target.degraded}
    known = set(SOURCES)
    if not target.shares_agent_series:
        degraded = {source for source in degraded if source in TARGET_SOURCES}
        known = set(TARGET_SOURCES)
    yield _degraded_series(target.series, degraded, known)


def shared_families(targets: Sequence[TargetView], degraded: Iterable[Degradation]) -> Iterator[Metric]:
    """Several targets: what they share, once, as ``target="host"``: the host's memory and swap (the freshest
    reading among the targets') and ``memmon_source_degraded`` of the shared sources, from ``degraded`` (the
    monitor's: the host reading, the store, the alert channels). Nothing with a single target or none."""
    if not targets or targets[0].shares_agent_series:
        return
    series = TargetSeries(SHARED_TARGET)
    readings = [(t.latest.sample.timestamp, t.latest.sample.host) for t in targets if t.latest.sample.host]
    if readings:
        yield from _host_series(series, max(readings, key=lambda reading: reading[0])[1])
    failed = {d.source for d in degraded if d.source not in TARGET_SOURCES}
    yield _degraded_series(series, failed, set(SHARED_SOURCES))


def _degraded_series(series: TargetSeries, degraded: set[str], known: set[str]) -> Metric:
    return series.gauges(
        "memmon_source_degraded",
        "1 when a source could not be read or a watch not armed.",
        ["source"],
        [([source], 1 if source in degraded else 0) for source in sorted(degraded | known)],
    )
