"""Agents whose /metrics shows every series family memmon can expose, for tests that pin the exposition's shape."""

from __future__ import annotations

from typing import Any

from memmon.model import (
    MB,
    CgroupSample,
    Degradation,
    HostSample,
    MemorySample,
    PressureSample,
    ProcessMemory,
    ProcessSample,
    TargetKind,
)

HOST_TOTAL = 16 * 1024 * MB


class EverySourceSampler:
    """A pre-fork server (master + 2 workers, gc counts) in a limited v1 cgroup with OOM kills and limit hits, host
    memory and PSI with ``full``, growing 10 MB per (simulated) second from 300 MB inside a 1000 MB limit (so the
    prediction has a time to the limit), with the pressure source degraded."""

    process = None
    cgroup = None
    target_label = "cgroup:/app"

    def __init__(self) -> None:
        self.seconds = 0

    def sample(self) -> MemorySample:
        self.seconds += 1
        rss = (300 + 10 * self.seconds) * MB
        processes = (
            ProcessMemory(40, "master", rss // 2, rss, role="master"),
            ProcessMemory(41, "worker", rss // 4, rss, role="worker"),
            ProcessMemory(42, "worker", rss // 4, rss, role="worker"),
        )
        at = 1_000_000.0 + self.seconds
        return MemorySample(
            timestamp=at,
            monotonic=at,
            target=self.target_label,
            target_kind=TargetKind.CGROUP,
            target_bytes=rss,
            effective_limit_bytes=1000 * MB,
            limit_source="cgroup",
            process=ProcessSample(
                processes, rss, 3 * rss, gc_collections=7, gc_objects=12345, gc_objects_at=at
            ),
            cgroup=CgroupSample("/app", 1, rss + MB, 1000 * MB, MB, rss, oom_kill_count=2, failcnt=3),
            host=HostSample(HOST_TOTAL, HOST_TOTAL // 2, 50.0, 4096 * MB, 1024 * MB, 25.0),
            pressure=PressureSample("/sys/fs/cgroup/memory/app/memory.pressure", 1.5, 0.5),
            degraded=(Degradation("usage_watch", "not armed in this test"),),
        )


def every_source_overrides(receiver_url: str) -> dict[str, Any]:
    """Predictive alerting on, thresholds a growing target crosses, and a webhook and Alertmanager channel."""
    return {
        "experimental": {"predictive_alerting": True, "prediction_window": 60, "trend_threshold": 0.05},
        "thresholds": {"memory_warning_mb": 400, "memory_critical_mb": 500, "memory_emergency_mb": 100_000},
        "alerting": {"webhook_url": receiver_url + "/hook", "alertmanager_url": receiver_url},
    }


async def start_every_source_agent(start_agent: Any, receiver_url: str, checks: int = 35) -> Any:
    """A running agent (check loop stopped, so nothing changes between two scrapes) after ``checks`` checks of
    :class:`EverySourceSampler` and one manual gc run."""
    sampler = EverySourceSampler()
    agent = await start_agent(every_source_overrides(receiver_url), first_check=False, sampler=sampler)
    await agent.monitor.start_monitoring()
    agent.monitor._loop.stop()
    while sampler.seconds < checks:
        await agent.monitor.check_now()
    agent.monitor.run_gc()
    return agent
