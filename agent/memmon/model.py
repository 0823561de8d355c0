"""The frozen records that the pipeline stages hand each other.

sample -> evaluate -> alert/act -> expose: every stage consumes and produces these types, never loose dicts.
Sizes are bytes, times are seconds (wall-clock epoch for ``timestamp``/``*_at`` fields), percents are 0-100.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MB = 1024 * 1024
"""The guide's "MB" is a mebibyte: ``memory_usage_mb = bytes / 2**20``."""


class Level(enum.IntEnum):
    """Memory level, ordered so that ``max()`` gives the worst one."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    EMERGENCY = 3

    @property
    def label(self) -> str:
        """Lower-case name used in config keys, payloads and metric labels."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Level:
        """Level from its lower-case name; ``ValueError`` names the allowed values."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            allowed = ", ".join(level.label for level in cls)
            raise ValueError(f"unknown level {text!r}; expected one of {allowed}") from None


ALERT_LEVELS: tuple[Level, ...] = (Level.WARNING, Level.CRITICAL, Level.EMERGENCY)


@dataclass(frozen=True, slots=True)
class Degradation:
    """A source that could not be read this check, and why (shown in /health/memory and logged once)."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    """One watched process."""

    pid: int
    name: str
    rss_bytes: int
    vms_bytes: int
    role: str = "process"
    """``process``, or in a pre-fork server ``master`` or ``worker``."""


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """The watched processes, summed. ``gc_*`` are set only when the target is memmon's own process."""

    processes: tuple[ProcessMemory, ...]
    rss_bytes: int
    vms_bytes: int
    gc_collections: int | None = None
    gc_objects: int | None = None
    gc_objects_at: float | None = None
    """Wall-clock time ``gc_objects`` was counted (it is O(heap), so not every check)."""


@dataclass(frozen=True, slots=True)
class CgroupSample:
    """A memory cgroup (v1 or v2). ``limit_bytes`` is None when no limit is set ("max" or a huge value)."""

    path: str
    version: int
    usage_bytes: int
    limit_bytes: int | None
    inactive_file_bytes: int
    working_set_bytes: int
    """usage - inactive_file, floored at 0: what the kubelet and cAdvisor judge."""
    oom_kill_count: int | None = None
    failcnt: int | None = None


@dataclass(frozen=True, slots=True)
class HostSample:
    """Host memory, with psutil's definitions (used percent = (total - available) / total)."""

    total_bytes: int
    available_bytes: int
    used_percent: float
    swap_total_bytes: int
    swap_used_bytes: int
    swap_percent: float


@dataclass(frozen=True, slots=True)
class PressureSample:
    """PSI memory pressure, percent of wall time stalled over the last 10 s (avg10)."""

    source: str
    """The file read: a cgroup's ``memory.pressure`` or ``/proc/pressure/memory``."""
    some_avg10: float
    full_avg10: float | None


class TargetKind(enum.Enum):
    """What the memory thresholds judge."""

    PROCESS = "process"
    """Sum of the resident set size of the target processes."""
    CGROUP = "cgroup"
    """The target cgroup's working set."""
    HOST = "host"
    """The host's used memory (total - available): judged once by a multi-target agent."""


class TargetState(enum.Enum):
    """Whether this check could judge the target (``MemorySample.target_state``)."""

    PRESENT = "present"
    """The target's memory was read (``target_bytes`` is set)."""
    MISSING = "missing"
    """The target does not exist: every watched pid exited or never existed, nothing matches ``--match``, the
    cgroup directory is absent (not created yet, removed, or between a unit's stop and start). A firing
    alert of the target's component is resolved (reason ``target_missing``): there is no memory left to judge."""
    UNREADABLE = "unreadable"
    """The target exists but could not be read this check (permissions, an unexpected error): its component
    keeps its state, since one failed read is no recovery."""


@dataclass(frozen=True, slots=True)
class MemorySample:
    """Everything one check read. Missing sources are None and listed in ``degraded``."""

    timestamp: float
    monotonic: float
    target: str
    """Human label of what is watched, e.g. ``pid:1234`` or ``cgroup:/system.slice/app.service``."""
    target_kind: TargetKind
    target_bytes: int | None
    """The number ``memory_*_mb`` thresholds judge (rss sum, or cgroup working set); None if unreadable."""
    effective_limit_bytes: int
    limit_source: str
    """``cgroup`` (a cgroup limit below host memory), ``configured`` (``target.memory_limit_bytes``, lower
    still), else ``host``."""
    process: ProcessSample | None
    cgroup: CgroupSample | None
    host: HostSample | None
    pressure: PressureSample | None
    degraded: tuple[Degradation, ...] = ()
    target_state: TargetState = TargetState.PRESENT
    """``present`` exactly when ``target_bytes`` is set."""
    target_problem: str | None = None
    """Why the target is missing or unreadable (the failing source's reason); None when present."""

    @property
    def percent_of_limit(self) -> float | None:
        """Target memory as percent of the effective limit: what ``memory_percent_*`` thresholds judge."""
        if self.target_bytes is None or self.effective_limit_bytes <= 0:
            return None
        return 100.0 * self.target_bytes / self.effective_limit_bytes

    @property
    def available_bytes(self) -> int | None:
        """The guide's ``available_mb``: headroom to the limit when a cgroup or configured limit applies, else
        host available."""
        if self.limit_source != "host" and self.target_bytes is not None:
            return max(0, self.effective_limit_bytes - self.target_bytes)
        return None if self.host is None else self.host.available_bytes


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """The level of one component after hysteresis, with the number that decided it."""

    component: str
    level: Level
    value_mb: float
    percent: float | None
    threshold_mb: float | None
    """The threshold of ``level`` (or of the next level up when ok), in MB; None when that level is unset."""
    reason: str


def frozen_mapping(data: Mapping[str, object] | None = None) -> Mapping[str, object]:
    """A read-only copy of ``data`` for the ``metadata``/``detail`` fields of the records below."""
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing instance of (component, target, severity), and its resolution.

    An escalation warning -> critical resolves the warning alert and fires a critical one, so a fingerprint
    (like Alertmanager's, a hash of the labels) identifies a severity of a component of a target.
    """

    id: str
    fingerprint: str
    severity: Level
    component: str
    target: str
    state: str
    """``firing`` or ``resolved``."""
    started_at: float
    resolved_at: float | None
    memory_usage: float
    """MB, as the guide's payload."""
    threshold: float
    """MB: a percent threshold is converted with the limit it was judged against (see ``metadata``)."""
    message: str
    metadata: Mapping[str, object] = field(default_factory=frozen_mapping)

    @property
    def timestamp(self) -> float:
        """The time of the latest transition."""
        return self.resolved_at if self.resolved_at is not None else self.started_at


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one sample: overall level, each component, and the alert transitions it caused."""

    sample: MemorySample
    level: Level
    previous_level: Level
    components: tuple[ComponentStatus, ...]
    transitions: tuple[Alert, ...]
    active_alerts: tuple[Alert, ...]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did, with memory before and after."""

    action: str
    success: bool
    started_at: float
    duration_seconds: float
    detail: Mapping[str, object] = field(default_factory=frozen_mapping)
    error: str | None = None
    target: str | None = None
    """The target acted on, named by a multi-target agent (None: the agent's only target, or memmon itself)."""


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One check as kept in the history ring and the SQLite store (MB and percent, as the guide reports)."""

    timestamp: float
    level: Level
    target: str
    memory_usage_mb: float | None
    """The judged target memory (rss sum or cgroup working set)."""
    percent: float | None
    """``memory_usage_mb`` as percent of the effective limit."""
    effective_limit_mb: float
    limit_source: str
    rss_mb: float | None = None
    vms_mb: float | None = None
    cgroup_usage_mb: float | None = None
    cgroup_working_set_mb: float | None = None
    available_mb: float | None = None
    host_percent: float | None = None
    swap_percent: float | None = None
    pressure_some_avg10: float | None = None
    gc_collections: int | None = None
    gc_objects: int | None = None
    check_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class LimitPrediction:
    """Predictive alerting's estimate of when the target reaches its effective limit (and the critical threshold) at
    its current trend, rounded as reported: seconds and bytes per second to 0.1, ``r2`` to 3 places.

    The field names and their order are the keys of the ``prediction`` object in ``/health/memory``,
    ``/health/leaks`` and the ``memory_prediction`` alert's metadata (serialised there with ``dataclasses.asdict``).
    """

    seconds_to_limit: float | None
    """None when the target is not growing."""
    seconds_to_critical: float | None
    """None when not growing or no critical threshold applies."""
    slope_bytes_per_second: float
    """The slope used: the recent half's when ``accelerating``, else the whole window's."""
    confident: bool
    """Enough span (half the window) and a straight-line fit good enough: only then may the alert fire."""
    accelerating: bool
    r2: float
    points: int
    """Checks in the window the estimate was fitted on."""
