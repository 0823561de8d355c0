"""Threshold rules: which number of a sample each threshold judges, per component.

- ``process_memory``: RSS summed over the target processes (MB) against ``memory_*_mb``, and that RSS as a percent
  of the effective limit against ``memory_percent_*``.
- ``cgroup_memory``: the cgroup's working set. When the cgroup is the target: MB against ``memory_*_mb`` and
  percent of the effective limit against ``memory_percent_*``. When the target is a process inside a cgroup that
  has a limit: percent of that cgroup limit against ``memory_percent_*`` only (that limit is the one that kills).
- ``system_memory``: host used = total - available; its percent against ``system_percent_*`` (default: the
  ``memory_percent_*`` values).
- ``swap_memory``: swap used, only when the host has swap; its percent against ``swap_percent_*``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from memmon.model import MB, Level, MemorySample, TargetKind

Thresholds = Mapping[Level, float]


@dataclass(frozen=True, slots=True)
class Measure:
    """One number judged against per-level thresholds in its own unit ("MB" or "%")."""

    name: str
    value: float
    thresholds: Thresholds
    unit: str

    def level(self) -> Level:
        """The highest level whose threshold the value reaches."""
        reached = [level for level, limit in self.thresholds.items() if self.value >= limit]
        return max(reached, default=Level.OK)

    def holds(self, level: Level, margin: float) -> bool:
        """Whether ``level`` still holds under hysteresis: value >= threshold * (1 - margin)."""
        limit = self.thresholds.get(level)
        return limit is not None and self.value >= limit * (1.0 - margin)


@dataclass(frozen=True, slots=True)
class Reading:
    """A component's numbers in one sample, ready for the evaluator."""

    component: str
    usage_mb: float
    percent: float | None
    measures: tuple[Measure, ...]
    mb_per_percent: float
    """MB that one percent stands for (limit / 100): converts a percent threshold into the payload's MB."""
    context: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ThresholdSet:
    """Per-level thresholds of each family, only the levels that are set."""

    memory_mb: Thresholds
    memory_percent: Thresholds
    system_percent: Thresholds
    swap_percent: Thresholds
    judges_target: bool = True
    """Whether the target's memory is read (False for the host of a multi-target agent)."""
    judges_host: bool = True
    """Whether the host's memory and swap are read (False for each target of a multi-target agent: the host is
    judged once, apart)."""

    def start_bytes(self, level: Level, limit_bytes: int) -> float | None:
        """The target memory at which ``level`` starts against ``limit_bytes`` (the lower of its MiB and percent
        thresholds); None when neither family sets it."""
        candidates = []
        if level in self.memory_mb:
            candidates.append(self.memory_mb[level] * MB)
        if level in self.memory_percent:
            candidates.append(self.memory_percent[level] / 100 * limit_bytes)
        return min(candidates, default=None)


class ThresholdRule:
    """Turns a :class:`MemorySample` into one :class:`Reading` per component it can judge.

    A component whose source is missing from the sample is left out (its state is kept, not resolved).
    """

    def __init__(self, thresholds: ThresholdSet) -> None:
        self.thresholds = thresholds

    def cgroup_thresholds(self, sample: MemorySample) -> list[int]:
        """Byte values of the cgroup's usage at which a level may change, for kernel notifications (usage
        thresholds, cgroup-v1 memory.rst section 9): each ``memory_percent_*`` of the cgroup limit, and each
        ``memory_*_mb`` when the cgroup is the target. Usage >= working set, so they fire at or before the
        working set reaches the level. Empty without a cgroup limit."""
        cgroup = sample.cgroup
        if cgroup is None or not cgroup.limit_bytes:
            return []
        values = {int(cgroup.limit_bytes * p / 100) for p in self.thresholds.memory_percent.values()}
        if sample.target_kind is TargetKind.CGROUP:
            values |= {
                int(mb * MB) for mb in self.thresholds.memory_mb.values() if mb * MB < cgroup.limit_bytes
            }
        return sorted(values)

    def watch_levels(self, sample: MemorySample) -> dict[Level, int]:
        """For each level with a threshold, the lowest target memory in bytes at which it may begin: the lower
        of ``memory_*_mb`` and ``memory_percent_*`` of the effective limit (for the usage watcher and the
        ``memory.high`` guard). A target inside a limited cgroup has the cgroup limit as its effective limit."""
        limit = sample.effective_limit_bytes
        levels: dict[Level, int] = {}
        for level, mb in self.thresholds.memory_mb.items():
            levels[level] = int(mb * MB)
        for level, percent in self.thresholds.memory_percent.items():
            value = int(limit * percent / 100)
            levels[level] = min(levels.get(level, value), value)
        return levels

    def readings(self, sample: MemorySample) -> list[Reading]:
        """Every component this sample has data for."""
        limit_mb = sample.effective_limit_bytes / MB
        context: dict[str, object] = {
            "limit_mb": round(limit_mb, 1),
            "limit_source": sample.limit_source,
            "target": sample.target,
        }
        if sample.available_bytes is not None:
            context["available_mb"] = round(sample.available_bytes / MB, 1)
        readings: list[Reading] = []
        if sample.target_bytes is not None and self.thresholds.judges_target:
            usage_mb = sample.target_bytes / MB
            percent = sample.percent_of_limit
            measures = [Measure("memory_mb", usage_mb, self.thresholds.memory_mb, "MB")]
            if percent is not None:
                measures.append(Measure("percent", percent, self.thresholds.memory_percent, "%"))
            component = "process_memory" if sample.target_kind is TargetKind.PROCESS else "cgroup_memory"
            readings.append(
                Reading(
                    component,
                    usage_mb,
                    percent,
                    tuple(measures),
                    limit_mb / 100,
                    {**context, "percent": _round(percent), "headroom_mb": round(limit_mb - usage_mb, 1)},
                )
            )
        cgroup = sample.cgroup
        if sample.target_kind is TargetKind.PROCESS and cgroup is not None and cgroup.limit_bytes:
            cgroup_limit_mb = cgroup.limit_bytes / MB
            usage_mb = cgroup.working_set_bytes / MB
            percent = 100.0 * usage_mb / cgroup_limit_mb
            readings.append(
                Reading(
                    "cgroup_memory",
                    usage_mb,
                    percent,
                    (Measure("percent", percent, self.thresholds.memory_percent, "%"),),
                    cgroup_limit_mb / 100,
                    {
                        **context,
                        "percent": round(percent, 2),
                        "limit_mb": round(cgroup_limit_mb, 1),
                        "limit_source": "cgroup",
                        "cgroup": cgroup.path,
                    },
                )
            )
        host = sample.host if self.thresholds.judges_host else None
        if host is not None and host.total_bytes > 0:
            total_mb = host.total_bytes / MB
            readings.append(
                Reading(
                    "system_memory",
                    (host.total_bytes - host.available_bytes) / MB,
                    host.used_percent,
                    (Measure("percent", host.used_percent, self.thresholds.system_percent, "%"),),
                    total_mb / 100,
                    {
                        **context,
                        "percent": round(host.used_percent, 2),
                        "limit_mb": round(total_mb, 1),
                        "limit_source": "host",
                    },
                )
            )
            if host.swap_total_bytes > 0:
                readings.append(
                    Reading(
                        "swap_memory",
                        host.swap_used_bytes / MB,
                        host.swap_percent,
                        (Measure("percent", host.swap_percent, self.thresholds.swap_percent, "%"),),
                        host.swap_total_bytes / MB / 100,
                        {
                            **context,
                            "percent": round(host.swap_percent, 2),
                            "swap_total_mb": round(host.swap_total_bytes / MB, 1),
                        },
                    )
                )
        return readings


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
