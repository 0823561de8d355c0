"""Leak detection and predictive alerting, wired: the trend rules fed with every check, the windowed
tracemalloc profile in library mode, the biggest mappings in agent mode, and the finding alerts.

Wiring like ``memmon.app``: it joins the evaluation rules (``LeakDetector``, and ``TrendPredictor`` through
:mod:`memmon.limitwatch`) with the sampling helpers that explain a leak (``AllocationProfiler`` through
:mod:`memmon.leaktrace`, ``read_mappings``).

A suspected leak fires its ``memory_leak`` alert at once, at the check that confirms it. In library mode with
``enable_tracemalloc`` that check also opens a tracemalloc window to name the leaking line
(:class:`~memmon.leaktrace.AllocationWindow`, which says when it ends and what the sites then change). In
agent mode the first check that suspects a leak reads the target's biggest mappings into the alert's
``top_mappings``. A target that goes missing resolves the firing finding alerts and starts the trends afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from memmon.config import Settings
from memmon.evaluation.findings import FindingAlerts
from memmon.evaluation.leaks import LeakDetector, LeakVerdict
from memmon.leaktrace import (
    LEAK_SITE,
    MIN_TRACED_BYTES,
    TRACE_SHARE,
    TRACING_NOTE,
    AllocationWindow,
    new_profiler,
    site_alerts,
)
from memmon.limitwatch import PREDICTION, LimitWatch
from memmon.model import MB, Alert, Evaluation, LimitPrediction, TargetState, frozen_mapping
from memmon.telemetry import Telemetry

if TYPE_CHECKING:
    # imported where a trace or a mappings read is made: an agent that never explains a leak never loads them
    from memmon.sampling.allocations import AllocationReport
    from memmon.sampling.mappings import MappingReport

__all__ = ["LEAK", "LEAK_SITE", "MIN_TRACED_BYTES", "PREDICTION", "TRACE_SHARE", "LeakWatch"]
"""``LEAK_SITE``, ``MIN_TRACED_BYTES``, ``TRACE_SHARE`` (:mod:`memmon.leaktrace`) and ``PREDICTION``
(:mod:`memmon.limitwatch`) are re-exported where they were first defined."""

LEAK = "memory_leak"


class LeakWatch:
    """Feeds the trend rules with each check and turns their verdicts into alerts."""

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        *,
        in_process: bool,
        target_pids: Callable[[], tuple[int, ...]],
        record: Callable[[Sequence[Alert]], None] = lambda alerts: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``record`` stores a firing alert updated in place (not a transition: it is not published)."""
        leak = settings.monitoring.leak_detection
        self.settings = settings
        self.telemetry = telemetry
        self.in_process = in_process
        self.target_pids = target_pids
        self.record = record
        self.clock = clock
        self.detector = (
            LeakDetector(
                window_seconds=leak.monitoring_window,
                threshold_growth_rate=leak.threshold_growth_rate,
                min_growth_bytes=leak.min_growth_mb * MB,
                confirm=leak.confirm_checks,
            )
            if leak.enabled
            else None
        )
        self.limits = LimitWatch(settings)
        self.profiler = (
            new_profiler(leak.tracemalloc_frames)
            if in_process and settings.monitoring.enable_tracemalloc
            else None
        )
        self.window = AllocationWindow(settings, self.profiler, clock=clock)
        self.leak_alerts = FindingAlerts(LEAK)
        self.verdict: LeakVerdict | None = None
        self.last_profile: AllocationReport | None = None
        self.last_mappings: MappingReport | None = None

    @property
    def prediction(self) -> LimitPrediction | None:
        """The latest prediction of when the limit is reached (None without one)."""
        return self.limits.prediction

    # -- each check ----------------------------------------------------------------------------------------------

    def on_evaluation(self, evaluation: Evaluation, critical_bytes: float | None) -> list[Alert]:
        """Feed one check; the finding alerts it fires or resolves."""
        sample = evaluation.sample
        if sample.target_state is TargetState.MISSING:
            return self._target_gone(sample.timestamp, sample.target, sample.target_problem or "not found")
        if sample.target_bytes is None:
            return []
        now, value = sample.timestamp, float(sample.target_bytes)
        transitions: list[Alert] = []
        # The trend rules get the monotonic clock: a wall-clock step back would restart their history.
        if self.detector is not None:
            transitions += self._leak(self.detector.add(sample.monotonic, value), now, value, sample.target)
        transitions += self.limits.on_sample(
            sample.monotonic, now, value, sample.target, sample.effective_limit_bytes, critical_bytes
        )
        return transitions

    def _target_gone(self, now: float, target: str, problem: str) -> list[Alert]:
        """A missing target ends its findings like its threshold alerts (memmon.evaluation.evaluator): the firing
        leak and prediction alerts resolve with ``resolved_reason: target_missing``, and the trends start afresh
        when it is back (a new process or cgroup has nothing to do with the old one's growth)."""
        transitions: list[Alert] = []
        for findings in (self.leak_alerts, self.limits.alerts):
            alert = findings.alert
            if alert is None:
                continue
            findings.alert = None
            transitions.append(
                replace(
                    alert,
                    state="resolved",
                    resolved_at=now,
                    message=f"RESOLVED: {alert.component} ended: target {target} is gone ({problem})",
                    metadata=frozen_mapping(
                        {**alert.metadata, "resolved_reason": "target_missing", "target_problem": problem}
                    ),
                )
            )
        if self.detector is not None:
            self.detector.reset()
        self.limits.reset()
        self.verdict = None
        return transitions

    def _leak(self, verdict: LeakVerdict | None, now: float, value: float, target: str) -> list[Alert]:
        transitions: list[Alert] = []
        if verdict is not None:
            self.verdict = verdict
            if verdict.suspected and self.window.can_open(self.leak_alerts.alert):
                self.window.open(verdict)
            if verdict.suspected and self.leak_alerts.alert is None:
                if self.profiler is None and not self.in_process:
                    self.last_mappings = self._mappings()
                self.telemetry.leaks_detected.inc()
            tracing = verdict.suspected and self.window.running
            transitions += self.leak_alerts.update(
                verdict.suspected,
                now=now,
                target=target,
                usage_mb=value / MB,
                threshold_mb=value / MB - verdict.growth_bytes / MB,
                message=f"LEAK SUSPECTED: {verdict.reason.rstrip('.') + TRACING_NOTE if tracing else verdict.reason}",
                metadata=self._metadata(verdict),
            )
        return transitions + self._trace_step(now, value)

    def _metadata(self, verdict: LeakVerdict) -> dict[str, object]:
        metadata: dict[str, object] = {
            "growth_ratio": round(verdict.growth_ratio, 4),
            "growth_mb": round(verdict.growth_bytes / MB, 1),
            "slope_mb_per_minute": round(verdict.slope * 60 / MB, 3),
            "window_seconds": verdict.window_seconds,
        }
        if self.window.running:
            metadata["allocation_trace"] = self.window.status()
        if self.last_mappings is not None:
            metadata["top_mappings"] = [
                {"path": m.path, "rss_mb": round(m.rss_bytes / MB, 1)}
                for m in self.last_mappings.mappings[:5]
            ]
        return metadata

    def _trace_step(self, now: float, value: float) -> list[Alert]:
        """Let the window end; once it has, update the firing leak alert with the sites (recorded, not
        published) and return the follow-up notice."""
        ended = self.window.step(resolved=self.leak_alerts.alert is None)
        if ended is None:
            return []
        report, how, grown_bytes = ended
        self.last_profile = report
        alert = self.leak_alerts.alert
        if alert is None:
            return []
        updated, notices = site_alerts(alert, report, how, grown_bytes, now, value)
        self.leak_alerts.alert = updated
        self.record([updated])
        return notices

    # -- on request ----------------------------------------------------------------------------------------------

    def _mappings(self) -> MappingReport | None:
        from memmon.sampling.mappings import read_mappings

        pids = self.target_pids()
        return read_mappings(pids[0]) if pids else None

    def snapshot(self, seconds: float) -> dict[str, Any]:
        """``POST /health/actions/leak-snapshot`` (blocking; run it in a worker thread): a tracemalloc window of
        ``seconds`` in library mode, the biggest mappings of the target otherwise."""
        if self.in_process:
            profiler = self.profiler or new_profiler(
                self.settings.monitoring.leak_detection.tracemalloc_frames
            )
            if profiler.active:
                raise RuntimeError("an allocation trace is already running; try again when it has finished")
            self.last_profile = profiler.snapshot_now(seconds)
            return {"kind": "tracemalloc", "report": asdict(self.last_profile)}
        self.last_mappings = self._mappings()
        if self.last_mappings is None:
            raise RuntimeError("no target process to read mappings from")
        return {"kind": "smaps", "report": asdict(self.last_mappings)}

    def report(self) -> dict[str, Any]:
        """What ``GET /health/leaks`` shows."""
        return {
            "enabled": self.detector is not None,
            "verdict": None if self.verdict is None else asdict(self.verdict),
            "alert_firing": self.leak_alerts.alert is not None,
            "profiling": self.profiler is not None and self.profiler.active,
            "allocation_trace": self.window.status() if self.window.running else None,
            "last_profile": None if self.last_profile is None else asdict(self.last_profile),
            "last_mappings": None if self.last_mappings is None else asdict(self.last_mappings),
            "prediction": None if self.prediction is None else asdict(self.prediction),
        }

    def active_alerts(self) -> tuple[Alert, ...]:
        """The finding alerts firing now."""
        return tuple(a for a in (self.leak_alerts.alert, self.limits.alerts.alert) if a is not None)

    def restore(self, alerts: list[Alert]) -> list[Alert]:
        """Take back this module's firing alerts after a restart; returns the others."""
        others = []
        for alert in alerts:
            if alert.component == LEAK:
                self.leak_alerts.restore(alert)
            elif alert.component == PREDICTION:
                self.limits.alerts.restore(alert)
            else:
                others.append(alert)
        return others
