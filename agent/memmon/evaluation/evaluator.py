"""The alert state machine: levels per component with hysteresis and debouncing, alerts firing -> resolved.

Rules of the machine, per component:
- Escalation to a higher level is immediate, or after the raw level has stayed above the current one for
  ``min_duration_seconds`` (debounce).
- A level resolves only when no measure holds it any more, i.e. every value is below its threshold times
  ``1 - resolve_margin_ratio`` (hysteresis); it then steps down level by level to the one that still holds.
- A level change resolves the alert of the old level (if any) and fires one for the new level (if not ok), so an
  alert is one (component, target, severity), like an Alertmanager alert with a severity label. A change between
  two alert levels (an escalation critical -> emergency, a de-escalation emergency -> critical) is one event for a
  human: the firing alert's message says ``critical -> emergency``, and the resolved alert of the old level carries
  ``metadata["replaced_by"]`` (the new level) so that delivery can end it as state (Alertmanager) without
  announcing it as a message of its own.
- A firing alert's message and metadata say how fast the judged number moves (``growth_mib_per_second``, over up
  to ``growth_window_seconds`` of checks) and which watched process is the largest (``fattest_process``: pid,
  name, rss_mb), when known.
- A component missing from a sample (its source degraded) keeps its state: one failed read is no recovery.
- Except the target's own component (``process_memory``, or ``cgroup_memory`` for a cgroup target) when the
  sample says the target is *missing* (``TargetState.MISSING``: the pids exited, nothing matches, the cgroup
  directory is gone): there is no memory left to judge, so its firing alert is resolved with
  ``metadata["resolved_reason"] = "target_missing"`` (and ``target_problem``, the reason) and the component is
  dropped (no stale level, usage or growth); a target that comes back starts again from ok. A target that is
  only *unreadable* keeps its state.
"""

from __future__ import annotations

import collections
import hashlib
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from memmon.evaluation.rules import Measure, Reading, ThresholdRule
from memmon.model import (
    MB,
    Alert,
    ComponentStatus,
    Evaluation,
    Level,
    MemorySample,
    TargetKind,
    TargetState,
    frozen_mapping,
)

_GROWTH_POINTS = 512
"""At most this many recent (monotonic, MiB) points per component for the growth rate."""


@dataclass(slots=True)
class _ComponentState:
    level: Level = Level.OK
    pending_since: float | None = None
    alert: Alert | None = None
    status: ComponentStatus | None = None
    points: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=_GROWTH_POINTS)
    )
    growth: float | None = None
    """MiB per second over the recent points; None with a single point."""


def fattest_process(sample: MemorySample) -> dict[str, object] | None:
    """``{"pid", "name", "rss_mb"}`` of the watched process with the largest RSS; None without process data."""
    if sample.process is None or not sample.process.processes:
        return None
    top = max(sample.process.processes, key=lambda p: p.rss_bytes)
    return {"pid": top.pid, "name": top.name, "rss_mb": round(top.rss_bytes / MB, 1)}


def growth_text(mib_per_second: float) -> str:
    """``growing 98.2 MiB/s``, ``shrinking 3.1 MiB/s``, ``growing 3906 MiB/s`` or ``steady`` (under 0.001 MiB/s
    either way); three significant digits, never an exponent."""
    if abs(mib_per_second) < 0.001:
        return "steady"
    verb = "growing" if mib_per_second > 0 else "shrinking"
    rate = abs(mib_per_second)
    return f"{verb} {rate:.0f} MiB/s" if rate >= 100 else f"{verb} {rate:.3g} MiB/s"


def context_text(growth: float | None, fattest: Mapping[str, object] | None) -> str:
    """The message tail naming the growth rate and the largest process, when known (empty otherwise)."""
    parts = []
    if growth is not None:
        parts.append(growth_text(growth))
    if fattest is not None:
        parts.append(f"largest process pid {fattest['pid']} ({fattest['name']}, {fattest['rss_mb']} MiB)")
    return "".join(f"; {part}" for part in parts)


def fingerprint(component: str, target: str, severity: Level) -> str:
    """Stable identity of an alert's labels (same inputs, same fingerprint, across restarts)."""
    key = f"{component}\x1f{target}\x1f{severity.label}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


class Evaluator:
    """Grades samples and keeps the alert state; not thread-safe (the check loop owns it)."""

    def __init__(
        self,
        rule: ThresholdRule,
        *,
        resolve_margin_ratio: float = 0.05,
        min_duration_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
        hostname: str | None = None,
        growth_window_seconds: float = 60.0,
    ) -> None:
        """``growth_window_seconds``: the growth rate in a firing alert runs from the oldest check at most this
        old to the current one (from the previous check when that is older)."""
        self.rule = rule
        self.margin = resolve_margin_ratio
        self.min_duration = min_duration_seconds
        self.growth_window = growth_window_seconds
        self.clock = clock
        self.hostname = hostname or socket.gethostname()
        self._states: dict[str, _ComponentState] = {}
        self._level = Level.OK

    @property
    def level(self) -> Level:
        """The worst component level after the latest evaluation."""
        return self._level

    def active_alerts(self) -> tuple[Alert, ...]:
        """Alerts currently firing, worst first."""
        alerts = [state.alert for state in self._states.values() if state.alert is not None]
        return tuple(sorted(alerts, key=lambda alert: (-alert.severity, alert.component)))

    def annotate(self, alert_id: str, extra: Mapping[str, object]) -> Alert | None:
        """Merge ``extra`` into the metadata of the firing alert ``alert_id`` (its resolution keeps it); the
        annotated alert, or None when no such alert fires now."""
        for state in self._states.values():
            if state.alert is not None and state.alert.id == alert_id:
                state.alert = replace(state.alert, metadata=frozen_mapping({**state.alert.metadata, **extra}))
                return state.alert
        return None

    def restore(self, alerts: Iterable[Alert], target: str, now: float) -> list[Alert]:
        """Resume after a restart: alerts still firing for ``target`` become the current state again (no new
        notification). Firing alerts of another target (the watched target changed) are resolved; they are
        returned so that the caller records their resolution."""
        stale: list[Alert] = []
        for alert in alerts:
            if alert.state != "firing":
                continue
            if alert.target != target:
                stale.append(
                    replace(
                        alert,
                        state="resolved",
                        resolved_at=now,
                        message=f"RESOLVED: {alert.component} {alert.severity.label} no longer watched "
                        f"(target is now {target})",
                    )
                )
                continue
            state = self._states.setdefault(alert.component, _ComponentState())
            if state.alert is None or alert.severity > state.level:
                state.level = alert.severity
                state.alert = alert
        self._level = max((state.level for state in self._states.values()), default=Level.OK)
        return stale

    def raw_level(self, sample: MemorySample) -> Level:
        """The level ``sample`` reaches by thresholds alone (no hysteresis, no state change): the re-read that
        actions do right before acting."""
        return max(
            (m.level() for reading in self.rule.readings(sample) for m in reading.measures), default=Level.OK
        )

    def evaluate(self, sample: MemorySample) -> Evaluation:
        """Judge one sample; returns the verdict and the alert transitions it caused."""
        now = sample.timestamp
        previous = self._level
        transitions: list[Alert] = []
        fattest = fattest_process(sample)
        for reading in self.rule.readings(sample):
            state = self._states.setdefault(reading.component, _ComponentState())
            self._track_growth(state, sample.monotonic, reading.usage_mb)
            new_level = self._next_level(state, reading, now)
            if new_level != state.level:
                replaced_by = new_level if new_level > Level.OK else None
                if state.alert is not None:
                    transitions.append(self._resolved(state.alert, reading, now, replaced_by))
                    state.alert = None
                if new_level > Level.OK:
                    state.alert = self._fired(
                        reading, new_level, state.level, sample.target, now, state.growth, fattest
                    )
                    transitions.append(state.alert)
                state.level = new_level
            state.status = self._status(reading, state.level)
        if sample.target_state is TargetState.MISSING:
            transitions += self._target_gone(sample, now)
        self._level = max((state.level for state in self._states.values()), default=Level.OK)
        components = tuple(state.status for state in self._states.values() if state.status is not None)
        return Evaluation(
            sample=sample,
            level=self._level,
            previous_level=previous,
            components=components,
            transitions=tuple(transitions),
            active_alerts=self.active_alerts(),
        )

    def _target_gone(self, sample: MemorySample, now: float) -> list[Alert]:
        """Drop the target's component when the target is missing; the resolution of its firing alert, if any."""
        component = "process_memory" if sample.target_kind is TargetKind.PROCESS else "cgroup_memory"
        state = self._states.pop(component, None)
        if state is None or state.alert is None:
            return []
        alert = state.alert
        problem = sample.target_problem or "not found"
        last_mb = state.points[-1][1] if state.points else alert.memory_usage
        return [
            replace(
                alert,
                state="resolved",
                resolved_at=now,
                memory_usage=round(last_mb, 1),
                message=(
                    f"RESOLVED: {component} {alert.severity.label} ended: target {sample.target} is gone "
                    f"({problem}); no memory left to judge (last usage {last_mb:.1f} MiB)"
                ),
                metadata=frozen_mapping(
                    {**alert.metadata, "resolved_reason": "target_missing", "target_problem": problem}
                ),
            )
        ]

    def _track_growth(self, state: _ComponentState, monotonic: float, usage_mb: float) -> None:
        points = state.points
        if points and monotonic <= points[-1][0]:
            points.clear()  # a clock that did not advance (or a restored evaluator): start again
        points.append((monotonic, usage_mb))
        while len(points) > 2 and monotonic - points[0][0] > self.growth_window:
            points.popleft()  # the previous check is kept even when older: then the rate spans one interval
        first_at, first_mb = points[0]
        state.growth = None if len(points) < 2 else (usage_mb - first_mb) / (monotonic - first_at)

    def _next_level(self, state: _ComponentState, reading: Reading, now: float) -> Level:
        raw = max((measure.level() for measure in reading.measures), default=Level.OK)
        if raw > state.level:
            if self.min_duration <= 0:
                return raw
            if state.pending_since is None:
                state.pending_since = now
            return raw if now - state.pending_since >= self.min_duration else state.level
        state.pending_since = None
        level = state.level
        while level > raw and not any(measure.holds(level, self.margin) for measure in reading.measures):
            level = Level(level - 1)
        return level

    @staticmethod
    def _deciding(reading: Reading, level: Level) -> Measure | None:
        """The measure closest to (or furthest past) its threshold for ``level``."""
        candidates = [m for m in reading.measures if level in m.thresholds]
        return max(candidates, key=lambda m: m.value / m.thresholds[level], default=None)

    def _threshold_mb(self, reading: Reading, measure: Measure, level: Level) -> float:
        limit = measure.thresholds[level]
        return limit if measure.unit == "MB" else limit * reading.mb_per_percent

    def _status(self, reading: Reading, level: Level) -> ComponentStatus:
        judged = level if level > Level.OK else Level.WARNING
        measure = self._deciding(reading, judged)
        threshold = None if measure is None else round(self._threshold_mb(reading, measure, judged), 1)
        reason = "no threshold set" if measure is None else self._describe(reading, measure, judged)
        return ComponentStatus(
            reading.component, level, round(reading.usage_mb, 1), reading.percent, threshold, reason
        )

    @staticmethod
    def _describe(reading: Reading, measure: Measure, level: Level) -> str:
        limit = measure.thresholds[level]
        verb = "exceeds" if measure.value >= limit else "is below"
        if measure.unit == "MB":  # the guide's "MB" thresholds are MiB (model.MB)
            return f"{reading.component} {measure.value:.1f} MiB {verb} {level.label} threshold {limit:g} MiB"
        source = reading.context.get("limit_source", "host")
        return (
            f"{reading.component} {measure.value:.1f}% of {source} limit {verb} {level.label} threshold "
            f"{limit:g}% ({limit * reading.mb_per_percent:.1f} MiB)"
        )

    def _fired(
        self,
        reading: Reading,
        level: Level,
        previous: Level,
        target: str,
        now: float,
        growth: float | None,
        fattest: Mapping[str, object] | None,
    ) -> Alert:
        measure = self._deciding(reading, level)
        assert measure is not None, "a level is only reached through a measure that has its threshold"
        held = measure.value >= measure.thresholds[level]
        detail = self._describe(reading, measure, level)
        change = f" ({previous.label} -> {level.label})" if previous > Level.OK else ""
        message = (
            f"{level.label.upper()}{change}: Memory usage {reading.usage_mb:.1f} MiB "
            + (
                f"exceeds {level.label} threshold ({detail})"
                if held
                else f"back down to {level.label} level ({detail}, within the resolve margin)"
            )
            + context_text(growth, fattest)
        )
        metadata: dict[str, object] = {
            **reading.context,
            "threshold_kind": "memory_mb" if measure.unit == "MB" else "memory_percent",
            "threshold_value": measure.thresholds[level],
            "previous_level": previous.label,
            "host": self.hostname,
        }
        if growth is not None:
            metadata["growth_mib_per_second"] = round(growth, 4)
        if fattest is not None:
            metadata["fattest_process"] = dict(fattest)
        return Alert(
            id=uuid.uuid4().hex,
            fingerprint=fingerprint(reading.component, target, level),
            severity=level,
            component=reading.component,
            target=target,
            state="firing",
            started_at=now,
            resolved_at=None,
            memory_usage=round(reading.usage_mb, 1),
            threshold=round(self._threshold_mb(reading, measure, level), 1),
            message=message,
            metadata=frozen_mapping(metadata),
        )

    def _resolved(self, alert: Alert, reading: Reading, now: float, replaced_by: Level | None) -> Alert:
        """The resolution of ``alert``; ``replaced_by`` is the level whose alert fires in its place (metadata
        ``replaced_by``: delivery ends such an alert as state but does not announce it as a message)."""
        percent = "" if reading.percent is None else f", {reading.percent:.1f}%"
        how = "cleared" if replaced_by is None else f"replaced by {replaced_by.label}"
        metadata: dict[str, object] = {**alert.metadata, "percent": reading.context.get("percent")}
        if replaced_by is not None:
            metadata["replaced_by"] = replaced_by.label
        return replace(
            alert,
            state="resolved",
            resolved_at=now,
            memory_usage=round(reading.usage_mb, 1),
            message=(
                f"RESOLVED: {alert.component} {alert.severity.label} {how} "
                f"(usage {reading.usage_mb:.1f} MiB{percent})"
            ),
            metadata=frozen_mapping(metadata),
        )
