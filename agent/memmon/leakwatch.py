"""Leak detection and predictive alerting, wired: the trend rules fed with every check, the windowed
tracemalloc profile in library mode, the biggest mappings in agent mode, and the finding alerts.

Wiring like ``memmon.app``: it joins the evaluation rules (``LeakDetector``, ``TrendPredictor``) with the
sampling helpers that explain a leak (``AllocationProfiler``, ``read_mappings``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from memmon.config import Settings
from memmon.evaluation.findings import FindingAlerts
from memmon.evaluation.leaks import LeakDetector, LeakVerdict
from memmon.evaluation.trend import Prediction, TrendPredictor
from memmon.model import MB, Alert, Evaluation
from memmon.sampling.allocations import AllocationProfiler, AllocationReport
from memmon.sampling.mappings import MappingReport, read_mappings
from memmon.telemetry import Telemetry

log = logging.getLogger("memmon.leaks")

LEAK = "memory_leak"
PREDICTION = "memory_prediction"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


class LeakWatch:
    """Feeds the trend rules with each check and turns their verdicts into alerts."""

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        *,
        in_process: bool,
        target_pids: Callable[[], tuple[int, ...]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        leak = settings.monitoring.leak_detection
        experimental = settings.experimental
        self.settings = settings
        self.telemetry = telemetry
        self.in_process = in_process
        self.target_pids = target_pids
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
        self.predictor = (
            TrendPredictor(experimental.prediction_window) if experimental.predictive_alerting else None
        )
        self.profiler = (
            AllocationProfiler(frames=leak.tracemalloc_frames)
            if in_process and settings.monitoring.enable_tracemalloc
            else None
        )
        self.leak_alerts = FindingAlerts(LEAK)
        self.prediction_alerts = FindingAlerts(PREDICTION)
        self.verdict: LeakVerdict | None = None
        self.prediction: dict[str, Any] | None = None
        self.last_profile: AllocationReport | None = None
        self.last_mappings: MappingReport | None = None
        self._pending_leak: LeakVerdict | None = None

    # -- each check ----------------------------------------------------------------------------------------------

    def on_evaluation(self, evaluation: Evaluation, critical_bytes: float | None) -> list[Alert]:
        """Feed one check; the finding alerts it fires or resolves."""
        sample = evaluation.sample
        if sample.target_bytes is None:
            return []
        now, value = sample.timestamp, float(sample.target_bytes)
        transitions: list[Alert] = []
        # The trend rules get the monotonic clock: a wall-clock step back would restart their history.
        if self.detector is not None:
            transitions += self._leak(self.detector.add(sample.monotonic, value), now, value, sample.target)
        if self.predictor is not None:
            self.predictor.add(sample.monotonic, value)
            transitions += self._predict(
                now, value, sample.target, sample.effective_limit_bytes, critical_bytes
            )
        return transitions

    def _leak(self, verdict: LeakVerdict | None, now: float, value: float, target: str) -> list[Alert]:
        if verdict is None:
            return []
        self.verdict = verdict
        profiler = self.profiler
        if verdict.suspected and self.leak_alerts.alert is None:
            if profiler is not None:
                # Name the guilty line: trace one window, then fire with the sites (a few ms of work at the end).
                if not profiler.active:
                    profiler.start()
                    log.warning("growth suspected (%s); tracing allocations for %gs", verdict.reason,
                                self.settings.monitoring.leak_detection.tracemalloc_window_seconds)  # fmt: skip
                    return []
                started = profiler.started_at or now
                if now - started < self.settings.monitoring.leak_detection.tracemalloc_window_seconds:
                    return []
                self.last_profile = profiler.finish()
            elif not self.in_process:
                self.last_mappings = self._mappings()
            self.telemetry.leaks_detected.inc()
        metadata: dict[str, object] = {
            "growth_ratio": round(verdict.growth_ratio, 4),
            "growth_mb": round(verdict.growth_bytes / MB, 1),
            "slope_mb_per_minute": round(verdict.slope * 60 / MB, 3),
            "window_seconds": verdict.window_seconds,
        }
        if self.last_profile is not None:
            metadata["top_sites"] = [
                {"site": f"{s.file}:{s.line}", "size_mb": round(s.size_bytes / MB, 3), "count": s.count,
                 "traceback": list(s.traceback)}
                for s in self.last_profile.sites[:5]
            ]  # fmt: skip
        if self.last_mappings is not None:
            metadata["top_mappings"] = [
                {"path": m.path, "rss_mb": round(m.rss_bytes / MB, 1)}
                for m in self.last_mappings.mappings[:5]
            ]
        where = ""
        if self.last_profile is not None and self.last_profile.sites:
            top = self.last_profile.sites[0]
            where = f"; top allocation site {top.file}:{top.line} (+{top.size_bytes / MB:.1f} MB)"
        message = f"LEAK SUSPECTED: {verdict.reason}{where}"
        return self.leak_alerts.update(
            verdict.suspected,
            now=now,
            target=target,
            usage_mb=value / MB,
            threshold_mb=value / MB - verdict.growth_bytes / MB,
            message=message,
            metadata=metadata,
        )

    def _predict(
        self, now: float, value: float, target: str, limit_bytes: int, critical_bytes: float | None
    ) -> list[Alert]:
        assert self.predictor is not None
        experimental = self.settings.experimental
        to_limit = self.predictor.predict(limit_bytes)
        to_critical = self.predictor.predict(critical_bytes) if critical_bytes else None
        self.prediction = None if to_limit is None else _prediction_payload(to_limit, to_critical)
        holds = (
            to_limit is not None
            and to_limit.confident
            and to_limit.seconds is not None
            and to_limit.seconds <= experimental.prediction_window
            and to_limit.slope * experimental.prediction_window >= experimental.trend_threshold * limit_bytes
        )
        seconds = to_limit.seconds if to_limit is not None and to_limit.seconds is not None else float("inf")
        message = (
            f"PREDICTED: at this rate the limit ({limit_bytes / MB:.0f} MB) is reached in {_duration(seconds)}"
            if holds
            else "no longer predicted to reach the limit within the prediction window"
        )
        metadata: dict[str, object] = {
            "prediction": self.prediction or {},
            "limit_mb": round(limit_bytes / MB, 1),
        }
        return self.prediction_alerts.update(
            holds,
            now=now,
            target=target,
            usage_mb=value / MB,
            threshold_mb=limit_bytes / MB,
            message=message,
            metadata=metadata,
        )

    # -- on request ----------------------------------------------------------------------------------------------

    def _mappings(self) -> MappingReport | None:
        pids = self.target_pids()
        return read_mappings(pids[0]) if pids else None

    def snapshot(self, seconds: float) -> dict[str, Any]:
        """``POST /health/actions/leak-snapshot`` (blocking; run it in a worker thread): a tracemalloc window of
        ``seconds`` in library mode, the biggest mappings of the target otherwise."""
        if self.in_process:
            profiler = self.profiler or AllocationProfiler(
                frames=self.settings.monitoring.leak_detection.tracemalloc_frames
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
            "last_profile": None if self.last_profile is None else asdict(self.last_profile),
            "last_mappings": None if self.last_mappings is None else asdict(self.last_mappings),
            "prediction": self.prediction,
        }

    def active_alerts(self) -> tuple[Alert, ...]:
        """The finding alerts firing now."""
        return tuple(a for a in (self.leak_alerts.alert, self.prediction_alerts.alert) if a is not None)

    def restore(self, alerts: list[Alert]) -> list[Alert]:
        """Take back this module's firing alerts after a restart; returns the others."""
        others = []
        for alert in alerts:
            if alert.component == LEAK:
                self.leak_alerts.restore(alert)
            elif alert.component == PREDICTION:
                self.prediction_alerts.restore(alert)
            else:
                others.append(alert)
        return others


def _prediction_payload(to_limit: Prediction, to_critical: Prediction | None) -> dict[str, Any]:
    return {
        "seconds_to_limit": None if to_limit.seconds is None else round(to_limit.seconds, 1),
        "seconds_to_critical": None if to_critical is None or to_critical.seconds is None
        else round(to_critical.seconds, 1),
        "slope_bytes_per_second": round(to_limit.slope, 1),
        "confident": to_limit.confident,
        "accelerating": to_limit.accelerating,
        "r2": round(to_limit.r2, 3),
        "points": to_limit.window_points,
    }  # fmt: skip
