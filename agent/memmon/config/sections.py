"""The sections of what is watched and how: sampling, leak detection, the usage watcher, the level thresholds,
the target, memmon's own cost and the experimental features.

The root and the loading are ``memmon.config.settings``; the other sections are ``alerting``, ``actions``
(``auto_response``), ``node`` and ``runtime`` (server, storage, logging); the field types and the ``Section``
base they share are ``memmon.config.fields``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_settings import NoDecode

from memmon.config.fields import Float, Int, Percent, Port, PositiveMb, Seconds, Section, split_list
from memmon.config.rules import Unsure, problem, problems_error
from memmon.model import ALERT_LEVELS, Level


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


class LeakDetectionSettings(Section):
    """Flags steady growth of the target's memory (the guide's ``monitoring.leak_detection``)."""

    enabled: bool = False
    """Run leak detection."""
    threshold_growth_rate: Annotated[Float, Field(gt=0)] = 0.1
    """Growth over the window, as a fraction of the memory at its start, that counts as a suspected leak."""
    monitoring_window: Seconds = 300
    """Seconds of history the growth is measured over."""
    min_growth_mb: Annotated[Float, Field(ge=0)] = 16
    """Growth below this many MB over the window is never a leak (tiny processes do not page people)."""
    confirm_checks: Annotated[Int, Field(ge=1)] = 3
    """Consecutive checks the growth must hold before a leak is reported."""
    tracemalloc_window_seconds: Seconds = 60
    """Library mode with ``enable_tracemalloc``: the longest allocations are traced once a leak is confirmed (the
    window ends earlier once its top line holds a quarter of the detected growth)."""
    tracemalloc_frames: Annotated[Int, Field(ge=1, le=50)] = 5
    """Frames kept per allocation (cost grows with it: about 7x slower allocation at 1 frame, 14-20x at 10)."""


class UsageWatchSettings(Section):
    """The usage watcher: re-reads the target's usage counter between checks, paced by the headroom left to
    the emergency threshold, and runs a check at once when a threshold is crossed. Needs no write access and
    no kernel notification (cgroup v2, read-only cgroupfs, unprivileged)."""

    enabled: bool = True
    """Run the usage watcher."""
    worst_case_mb_per_second: Annotated[Float, Field(gt=0, le=1_000_000)] = 2000
    """The fastest leak (MiB/s) that must not cross the emergency threshold unseen between two reads."""
    min_interval_seconds: Annotated[Float, Field(ge=0.0005, le=1)] = 0.002
    """The shortest pause between two reads (near the threshold)."""
    max_interval_seconds: Annotated[Float, Field(ge=0.01, le=60)] = 1.0
    """The longest pause between two reads (far from the threshold)."""

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """max_interval_seconds >= min_interval_seconds."""
        if unsure("min_interval_seconds") or unsure("max_interval_seconds"):
            return []
        if self.min_interval_seconds > self.max_interval_seconds:
            text = f"must be at least min_interval_seconds ({_num(self.min_interval_seconds)})"
            return [problem(text, at="max_interval_seconds")]
        return []


class MonitoringSettings(Section):
    """How often and how deeply memory is sampled."""

    check_interval: Annotated[Float, Field(ge=0.05, le=3600)] = 5.0
    """Seconds between two checks, 0.05 to 3600: below 0.05 s the checks alone busy a core (the usage watcher,
    not the check loop, is what reacts within milliseconds); above an hour memory is not being watched."""
    enable_tracemalloc: bool = False
    """Trace Python allocations of memmon's own process (precise, but costs memory and CPU)."""
    prometheus_port: Port = 9091
    """Port of the separate Prometheus /metrics listener; 0 = no separate port (served on the health port)."""
    history_size: Annotated[Int, Field(ge=10)] = 2000
    """Checks kept in memory for /health/metrics/history."""
    gc_objects_every: Annotated[Int, Field(ge=1)] = 10
    """Count gc objects (O(heap)) at most every N checks."""
    leak_detection: LeakDetectionSettings = Field(default_factory=LeakDetectionSettings)
    """Leak detection (also accepted as a top-level ``leak_detection`` section)."""
    kernel_events: bool = True
    """Arm kernel memory notifications on the watched cgroup (v1 usage thresholds and OOM eventfds, v2
    ``memory.events`` inotify and PSI triggers): each one runs a check at once. Off: polling and the usage
    watcher alone."""
    usage_watch: UsageWatchSettings = Field(default_factory=UsageWatchSettings)
    """The usage watcher between checks."""
    forget_missing_targets_seconds: Seconds = 300
    """A match of a ``targets`` glob pattern missing this long (its unit stopped, its cgroup removed) is
    forgotten: its series leave /metrics and /health/targets (its history and alert log stay in the store)."""


def _check_increasing(
    model: BaseModel, unsure: Unsure, names: list[str], fallbacks: list[str] | None = None
) -> list[dict[str, Any]]:
    """Problems of one threshold family (``names`` in level order) that does not strictly increase; a level
    whose value is unsure (it was invalid) is left out of the comparison."""
    problems = []
    previous: tuple[str, float] | None = None
    for index, name in enumerate(names):
        value, origin, source = getattr(model, name), "", name
        if value is None and fallbacks is not None:
            value, source = getattr(model, fallbacks[index]), fallbacks[index]
            origin = f" (from {fallbacks[index]}, as {name} is null)"
        if value is None or unsure(name) or unsure(source):
            continue
        if previous is not None and value <= previous[1]:
            text = f"{_num(value)}{origin} must be greater than {previous[0]} ({_num(previous[1])})"
            problems.append(problem(text, at=name))
        previous = (name, value)
    return problems


class ThresholdSettings(Section):
    """Each family must increase warning < critical < emergency; null = that level has no threshold."""

    memory_warning_mb: PositiveMb | None = 1024
    """Target memory (MiB) at which the warning level starts."""
    memory_critical_mb: PositiveMb | None = 2048
    """Target memory (MiB) at which the critical level starts."""
    memory_emergency_mb: PositiveMb | None = 4096
    """Target memory (MiB) at which the emergency level starts."""
    memory_percent_warning: Percent | None = 70
    """Target memory as percent of its effective limit (cgroup limit or host RAM) for the warning level."""
    memory_percent_critical: Percent | None = 85
    """Target memory as percent of its effective limit for the critical level."""
    memory_percent_emergency: Percent | None = 95
    """Target memory as percent of its effective limit for the emergency level."""
    system_percent_warning: Percent | None = None
    """Host used-memory percent for the warning level; null = same as memory_percent_warning."""
    system_percent_critical: Percent | None = None
    """Host used-memory percent for the critical level; null = same as memory_percent_critical."""
    system_percent_emergency: Percent | None = None
    """Host used-memory percent for the emergency level; null = same as memory_percent_emergency."""
    swap_percent_warning: Percent | None = 50
    """Host swap used percent for the warning level."""
    swap_percent_critical: Percent | None = 80
    """Host swap used percent for the critical level."""
    swap_percent_emergency: Percent | None = 95
    """Host swap used percent for the emergency level."""
    resolve_margin_ratio: Annotated[Float, Field(ge=0, lt=0.5)] = 0.05
    """Hysteresis: a level resolves only below threshold * (1 - margin)."""
    min_duration_seconds: Annotated[Float, Field(ge=0)] = 0
    """A level must hold this long before it is reported (0 = at once)."""

    def _family(self, prefix: str, suffix: str = "") -> dict[Level, float | None]:
        return {level: getattr(self, f"{prefix}{level.label}{suffix}") for level in ALERT_LEVELS}

    @staticmethod
    def _set(values: Mapping[Level, float | None]) -> dict[Level, float]:
        return {level: float(value) for level, value in values.items() if value is not None}

    def mb_thresholds(self) -> dict[Level, float]:
        """``memory_*_mb`` by level, unset levels left out."""
        return self._set({level: getattr(self, f"memory_{level.label}_mb") for level in ALERT_LEVELS})

    def percent_thresholds(self) -> dict[Level, float]:
        """``memory_percent_*`` by level, unset levels left out."""
        return self._set(self._family("memory_percent_"))

    def system_thresholds(self) -> dict[Level, float]:
        """``system_percent_*`` by level, null ones taken from ``memory_percent_*``; unset levels left out."""
        own, fallback = self._family("system_percent_"), self._family("memory_percent_")
        return self._set({level: fallback[level] if value is None else value for level, value in own.items()})

    def swap_thresholds(self) -> dict[Level, float]:
        """``swap_percent_*`` by level, unset levels left out."""
        return self._set(self._family("swap_percent_"))

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """Each family strictly increases with the level."""
        labels = [level.label for level in ALERT_LEVELS]
        problems = _check_increasing(self, unsure, [f"memory_{x}_mb" for x in labels])
        problems += _check_increasing(self, unsure, [f"memory_percent_{x}" for x in labels])
        fallbacks = [f"memory_percent_{x}" for x in labels]
        problems += _check_increasing(self, unsure, [f"system_percent_{x}" for x in labels], fallbacks)
        problems += _check_increasing(self, unsure, [f"swap_percent_{x}" for x in labels])
        return problems


class ExperimentalSettings(Section):
    """Experimental features."""

    predictive_alerting: bool = False
    """Alert when the trend predicts a threshold crossing within the prediction window."""
    prediction_window: Seconds = 600
    """Seconds ahead the trend is extrapolated."""
    trend_threshold: Annotated[Float, Field(ge=0)] = 0.05
    """Relative growth over the window that counts as a trend."""


class PerformanceSettings(Section):
    """Limits on memmon's own cost."""

    monitoring_overhead_limit_percent: Annotated[Float, Field(gt=0, le=100)] = 5
    """Maximum share of wall time spent checking."""
    max_monitoring_time_seconds: Seconds = 2
    """Maximum seconds one check may take."""
    async_processing: bool = True
    """Process alerts and actions off the check loop."""
    batch_processing: bool = True
    """Write history to the store in batches."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise problems_error(problem(f"invalid regular expression: {exc}", got=value)) from None
    return value


class TargetSettings(Section):
    """What is watched: processes (pids or a name regex; memmon itself when neither) or a cgroup."""

    pids: Annotated[list[Annotated[Int, Field(gt=0)]], NoDecode, BeforeValidator(split_list)] = Field(
        default_factory=list
    )
    """Process ids to watch (summed)."""
    match: Annotated[str, Field(min_length=1), AfterValidator(_regex)] | None = None
    """Python regular expression matched against process command lines."""
    cgroup: Annotated[str, Field(min_length=1)] | None = None
    """Cgroup path to watch, e.g. /system.slice/app.service."""
    unit: Annotated[str, Field(min_length=1)] | None = None
    """Systemd unit whose cgroup is watched."""
    server: Literal["gunicorn", "uwsgi", "celery", "generic"] | None = None
    """A pre-fork server: the master is ``pids``, the top of ``match``'s process tree, or the main process of
    ``cgroup``/``unit``; its children are the workers, recycled one at a time (see the README's gunicorn/uWSGI
    section for what each preset sets)."""
    worker_budget_mb: PositiveMb | None = None
    """A server's worker whose unique memory (USS, MiB) exceeds this is recycled before any level is reached
    (like uWSGI's ``reload-on-rss``); null = the warning threshold's share of the limit per worker."""
    memory_limit_bytes: Annotated[Int, Field(gt=0)] | None = None
    """The target's memory limit when memmon cannot see its cgroup (a sidecar: the app container's
    ``limits.memory`` from the downward API, ``MEMMON_TARGET__MEMORY_LIMIT_BYTES``); the effective limit is the
    smallest of this, a cgroup limit and host memory."""

    @property
    def kind(self) -> str:
        """``cgroup`` when a cgroup or unit is set, else ``process``."""
        return "cgroup" if self.cgroup or self.unit else "process"

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """pids or match; cgroup or unit; a server needs its master; worker_budget_mb needs a server."""

        def known(*names: str) -> bool:
            return not any(unsure(name) for name in names)

        problems = []
        if self.pids and self.match is not None and known("pids", "match"):
            problems.append(
                problem("cannot be combined with target.pids", at="match", expected="pids or match")
            )
        masterless = not (self.pids or self.match or self.cgroup or self.unit)
        if self.server is not None and masterless and known("server", "pids", "match", "cgroup", "unit"):
            problems.append(
                problem(
                    "a server needs its master",
                    at="server",
                    expected="target.pids (--pid MASTER), target.match, target.cgroup or target.unit",
                )
            )
        if self.worker_budget_mb is not None and self.server is None and known("worker_budget_mb", "server"):
            problems.append(
                problem("only applies to a server", at="worker_budget_mb", expected="target.server")
            )
        if self.cgroup is not None and self.unit is not None and known("cgroup", "unit"):
            problems.append(
                problem("cannot be combined with target.cgroup", at="unit", expected="cgroup or unit")
            )
        return problems
