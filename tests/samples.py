"""Builders of pipeline records for tests that judge numbers rather than read /proc."""

from __future__ import annotations

from memmon.model import MB, CgroupSample, HostSample, MemorySample, ProcessMemory, ProcessSample, TargetKind

HOST_TOTAL = 16 * 1024 * MB


def host(used_percent: float = 20.0, swap_total: int = 0, swap_used: int = 0) -> HostSample:
    """A host sample with ``used_percent`` of 16 GiB used."""
    available = int(HOST_TOTAL * (1 - used_percent / 100))
    swap_percent = 100.0 * swap_used / swap_total if swap_total else 0.0
    return HostSample(HOST_TOTAL, available, used_percent, swap_total, swap_used, swap_percent)


def process_sample(
    rss_mb: float,
    *,
    at: float = 1000.0,
    host_percent: float = 20.0,
    cgroup_limit_mb: float | None = None,
    cgroup_ws_mb: float | None = None,
) -> MemorySample:
    """A sample whose target is a process with ``rss_mb`` resident, optionally inside a limited cgroup."""
    rss = int(rss_mb * MB)
    process = ProcessSample((ProcessMemory(42, "app", rss, rss * 2),), rss, rss * 2)
    cgroup = None
    limit = HOST_TOTAL
    source = "host"
    if cgroup_limit_mb is not None:
        ws = int((cgroup_ws_mb if cgroup_ws_mb is not None else rss_mb) * MB)
        cgroup = CgroupSample("/app", 1, ws, int(cgroup_limit_mb * MB), 0, ws, 0, 0)
        limit, source = int(cgroup_limit_mb * MB), "cgroup"
    return MemorySample(
        timestamp=at,
        monotonic=at,
        target="pid:42",
        target_kind=TargetKind.PROCESS,
        target_bytes=rss,
        effective_limit_bytes=limit,
        limit_source=source,
        process=process,
        cgroup=cgroup,
        host=host(host_percent),
        pressure=None,
    )
