"""Leak detection and predictive alerting, wired: the trend rules fed with every check, the windowed
tracemalloc profile in library mode, the biggest mappings in agent mode, and the finding alerts.

Wiring like ``memmon.app``: it joins the evaluation rules (``LeakDetector``, ``TrendPredictor``) with the
sampling helpers that explain a leak (``AllocationProfiler``, ``read_mappings``).

A suspected leak fires its ``memory_leak`` alert at once, at the check that confirms it. In library mode with
``enable_tracemalloc`` that check also opens a tracemalloc window to name the leaking line; the alert says so
(``metadata["allocation_trace"]["state"] == "running"``). The window ends early, at the first check where its
top allocation site holds :data:`TRACE_SHARE` of the growth the detector found (at least
:data:`MIN_TRACED_BYTES`), and never runs past ``tracemalloc_window_seconds``: it ends at the last check that
comes before that length is reached (checks come ``check_interval`` apart, or sooner; with a ``check_interval``
as long as the window, at the first check after the one that opened it). The sites then:

* update the firing alert in place: same id and start, its message names the top site, its metadata gets
  ``top_sites`` and ``allocation_trace`` ``done``; recorded in the store, shown by ``/health/leaks`` and the
  active alerts, and re-pushed with them to Alertmanager (whose annotations take the new text);
* go out once as a follow-up: a *notice* (:mod:`memmon.alerting.kinds`) of component ``memory_leak_site``
  naming the site, with the leak alert's id in ``metadata["alert_id"]``. A notice passes the rate limiter
  (which holds back a second notification of one fingerprint, and whose idempotency key ``<id>:<state>``
  would make a re-sent leak alert a duplicate to receivers) and ends at once, silently: people get one
  message, Alertmanager gets a notice resolved before it could notify, never a second leak alert.

A leak alert that resolves while its window runs ends the window (the sites go to ``/health/leaks`` only).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from memmon.alerting.kinds import NOTICE
from memmon.config import Settings
from memmon.evaluation.evaluator import fingerprint
from memmon.evaluation.findings import FindingAlerts
from memmon.evaluation.leaks import LeakDetector, LeakVerdict
from memmon.evaluation.trend import Prediction, TrendPredictor
from memmon.model import MB, Alert, Evaluation, LimitPrediction, TargetState, frozen_mapping
from memmon.telemetry import Telemetry

if TYPE_CHECKING:
    # imported where a trace or a mappings read is made: an agent that never explains a leak never loads them
    from memmon.sampling.allocations import AllocationProfiler, AllocationReport
    from memmon.sampling.mappings import MappingReport

log = logging.getLogger("memmon.leaks")

LEAK = "memory_leak"
LEAK_SITE = "memory_leak_site"
"""The follow-up notice naming a leak's allocation site."""
PREDICTION = "memory_prediction"
TRACE_SHARE = 0.25
"""A tracemalloc window ends early once its top site holds this share of the growth the detector found."""
MIN_TRACED_BYTES = 1 * MB
"""... and at least this many bytes (a detector with ``min_growth_mb`` near 0 must not stop at a few kB)."""
_TRACING = "; tracing allocations to name the line"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


@dataclass(slots=True)
class _Trace:
    """The tracemalloc window opened for the leak alert."""

    started_at: float
    enough_bytes: float
    """The top site's surviving bytes that end the window early."""
    next_look_bytes: float
    """Traced growth (O(1) to read) at which the next snapshot is taken to look at the top site."""
    slope: float
    """The growth rate (bytes per second) the detector found."""
    fresh: bool = True
    """Opened at this check: the window is judged from the next check on."""


def _profiler(frames: int) -> AllocationProfiler:
    """A tracemalloc profiler of ``frames`` frames (its module, and tracemalloc's, imported on the first one)."""
    from memmon.sampling.allocations import AllocationProfiler

    return AllocationProfiler(frames=frames)


def _sites(report: AllocationReport) -> list[dict[str, object]]:
    return [
        {"site": f"{s.file}:{s.line}", "size_mb": round(s.size_bytes / MB, 3), "count": s.count,
         "traceback": list(s.traceback)}
        for s in report.sites[:5]
    ]  # fmt: skip


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
        experimental = settings.experimental
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
        self.predictor = (
            TrendPredictor(experimental.prediction_window) if experimental.predictive_alerting else None
        )
        self.profiler = (
            _profiler(leak.tracemalloc_frames)
            if in_process and settings.monitoring.enable_tracemalloc
            else None
        )
        self.leak_alerts = FindingAlerts(LEAK)
        self.prediction_alerts = FindingAlerts(PREDICTION)
        self.verdict: LeakVerdict | None = None
        self.prediction: LimitPrediction | None = None
        self.last_profile: AllocationReport | None = None
        self.last_mappings: MappingReport | None = None
        self._trace: _Trace | None = None

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
        if self.predictor is not None:
            self.predictor.add(sample.monotonic, value)
            transitions += self._predict(
                now, value, sample.target, sample.effective_limit_bytes, critical_bytes
            )
        return transitions

    def _target_gone(self, now: float, target: str, problem: str) -> list[Alert]:
        """A missing target ends its findings like its threshold alerts (memmon.evaluation.evaluator): the firing
        leak and prediction alerts resolve with ``resolved_reason: target_missing``, and the trends start afresh
        when it is back (a new process or cgroup has nothing to do with the old one's growth)."""
        transitions: list[Alert] = []
        for findings in (self.leak_alerts, self.prediction_alerts):
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
        if self.predictor is not None:
            self.predictor.reset()
        self.verdict = None
        self.prediction = None
        return transitions

    def _leak(self, verdict: LeakVerdict | None, now: float, value: float, target: str) -> list[Alert]:
        transitions: list[Alert] = []
        if verdict is not None:
            self.verdict = verdict
            if verdict.suspected and self._wants_site():
                self._start_trace(verdict)
            if verdict.suspected and self.leak_alerts.alert is None:
                if self.profiler is None and not self.in_process:
                    self.last_mappings = self._mappings()
                self.telemetry.leaks_detected.inc()
            tracing = verdict.suspected and self._trace is not None
            transitions += self.leak_alerts.update(
                verdict.suspected,
                now=now,
                target=target,
                usage_mb=value / MB,
                threshold_mb=value / MB - verdict.growth_bytes / MB,
                message=f"LEAK SUSPECTED: {verdict.reason.rstrip('.') + _TRACING if tracing else verdict.reason}",
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
        if self._trace is not None:
            metadata["allocation_trace"] = self._trace_status()
        if self.last_mappings is not None:
            metadata["top_mappings"] = [
                {"path": m.path, "rss_mb": round(m.rss_bytes / MB, 1)}
                for m in self.last_mappings.mappings[:5]
            ]
        return metadata

    # -- the tracemalloc window (library mode) -------------------------------------------------------------------

    def _wants_site(self) -> bool:
        """A window can open for the leak alert: a profiler, idle, and no site found for the alert yet."""
        alert = self.leak_alerts.alert
        return (
            self.profiler is not None
            and self._trace is None
            and not self.profiler.active
            and (alert is None or "top_sites" not in alert.metadata)
        )

    def _start_trace(self, verdict: LeakVerdict) -> None:
        assert self.profiler is not None
        if not self.profiler.start():  # an on-request snapshot holds the profiler: try again next check
            return
        enough = max(MIN_TRACED_BYTES, TRACE_SHARE * verdict.growth_bytes)
        self._trace = _Trace(self.profiler.started_at or self.clock(), enough, enough, verdict.slope)
        log.warning(
            "growth suspected (%s); tracing allocations until one line holds %.1f MiB, at most %gs",
            verdict.reason, enough / MB, self.settings.monitoring.leak_detection.tracemalloc_window_seconds,
        )  # fmt: skip

    def _trace_status(self) -> dict[str, object]:
        trace = self._trace
        assert trace is not None and self.profiler is not None
        return {
            "state": "running",
            "started_at": trace.started_at,
            "traced_mb": round(self.profiler.traced_growth() / MB, 1),
            "ends_early_at_mb": round(trace.enough_bytes / MB, 1),
            "max_seconds": self.settings.monitoring.leak_detection.tracemalloc_window_seconds,
        }

    def _trace_step(self, now: float, value: float) -> list[Alert]:
        """End the window when the alert resolved, its top site holds enough, or the next check would be late."""
        trace, profiler = self._trace, self.profiler
        if trace is None or profiler is None:
            return []
        if trace.fresh:  # opened by this very check: the window must see at least one check interval
            trace.fresh = False
            return []
        monitoring = self.settings.monitoring
        report: AllocationReport | None = None
        try:
            if self.leak_alerts.alert is None:
                report, ended = profiler.finish(), "resolved"
            elif (
                profiler.elapsed + monitoring.check_interval
                >= monitoring.leak_detection.tracemalloc_window_seconds
            ):
                # Checks come check_interval apart (or sooner): the next one could be past the window.
                report, ended = profiler.finish(), "window"
            elif profiler.traced_growth() >= trace.next_look_bytes:
                report, ended = profiler.finish_if(trace.enough_bytes), "early"
                if report is None:  # what was traced is spread over many lines: look again after as much more
                    trace.next_look_bytes = profiler.traced_growth() + trace.enough_bytes
        except RuntimeError as exc:  # somebody stopped tracemalloc during the window
            log.warning("allocation trace lost: %s", exc)
            self._trace = None
            return []
        if report is None:
            return []
        self._trace = None
        self.last_profile = report
        return self._site_found(report, ended, trace.slope * report.window_seconds, now, value)

    def _site_found(
        self, report: AllocationReport, ended: str, grown_bytes: float, now: float, value: float
    ) -> list[Alert]:
        """Update the firing leak alert with the sites (recorded, not published); the follow-up notice.

        ``grown_bytes``: what the target grew during the window at the detector's rate."""
        alert = self.leak_alerts.alert
        if alert is None:
            return []
        top = report.sites[0] if report.sites else None
        trace = {
            "state": "done",
            "ended": ended,
            "started_at": report.started_at,
            "window_seconds": round(report.window_seconds, 1),
            "top_mb": round(top.size_bytes / MB, 1) if top is not None else 0.0,
        }
        base = alert.message.partition(_TRACING)[0].rstrip(".")
        if top is not None:
            site = f"{top.file}:{top.line}"
            found = f"top allocation site {site} (+{top.size_bytes / MB:.1f} MB)"
            said = (
                f"top allocation site {site}: +{top.size_bytes / MB:.1f} MB allocated in "
                f"{report.window_seconds:.0f} s of tracing and still alive"
            )
            if top.size_bytes < TRACE_SHARE * grown_bytes:
                said += (
                    f", a small part of the ~{grown_bytes / MB:.0f} MB the target grew meanwhile: most of it may "
                    "be outside Python's allocators (native memory)"
                )
        else:
            site = None
            found = said = (
                f"no Python allocation survived {report.window_seconds:.0f} s of tracing (the growth is in native "
                "memory, outside Python's allocators)"
            )
        updated = replace(
            alert,
            message=f"{base}; {found}",
            metadata=frozen_mapping(
                {**alert.metadata, "allocation_trace": trace, "top_sites": _sites(report)}
            ),
        )
        self.leak_alerts.alert = updated
        self.record([updated])
        since = time.strftime("%H:%M:%S UTC", time.gmtime(alert.started_at))
        notice = Alert(
            id=uuid.uuid4().hex,
            fingerprint=fingerprint(LEAK_SITE, alert.target, alert.severity),
            severity=alert.severity,
            component=LEAK_SITE,
            target=alert.target,
            state="firing",
            started_at=now,
            resolved_at=None,
            memory_usage=round(value / MB, 1),
            threshold=alert.threshold,
            message=f"LEAK SITE of {alert.target} (leak alert firing since {since}): {said}",
            metadata=frozen_mapping({
                NOTICE: True,
                "alertname": "MemmonLeakSite",
                "alert_id": alert.id,
                "site": site,
                "top_sites": _sites(report),
                "allocation_trace": trace,
                "host": alert.metadata.get("host"),
            }),
        )  # fmt: skip
        # A notice ends at once and silently (memmon.alerting.kinds): one message for people, no firing leftover.
        return [notice, replace(notice, state="resolved", resolved_at=now)]

    def _predict(
        self, now: float, value: float, target: str, limit_bytes: int, critical_bytes: float | None
    ) -> list[Alert]:
        assert self.predictor is not None
        experimental = self.settings.experimental
        to_limit = self.predictor.predict(limit_bytes)
        to_critical = self.predictor.predict(critical_bytes) if critical_bytes else None
        self.prediction = None if to_limit is None else _limit_prediction(to_limit, to_critical)
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
            "prediction": {} if self.prediction is None else asdict(self.prediction),
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
        from memmon.sampling.mappings import read_mappings

        pids = self.target_pids()
        return read_mappings(pids[0]) if pids else None

    def snapshot(self, seconds: float) -> dict[str, Any]:
        """``POST /health/actions/leak-snapshot`` (blocking; run it in a worker thread): a tracemalloc window of
        ``seconds`` in library mode, the biggest mappings of the target otherwise."""
        if self.in_process:
            profiler = self.profiler or _profiler(self.settings.monitoring.leak_detection.tracemalloc_frames)
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
            "allocation_trace": None if self._trace is None else self._trace_status(),
            "last_profile": None if self.last_profile is None else asdict(self.last_profile),
            "last_mappings": None if self.last_mappings is None else asdict(self.last_mappings),
            "prediction": None if self.prediction is None else asdict(self.prediction),
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


def _limit_prediction(to_limit: Prediction, to_critical: Prediction | None) -> LimitPrediction:
    return LimitPrediction(
        seconds_to_limit=None if to_limit.seconds is None else round(to_limit.seconds, 1),
        seconds_to_critical=None if to_critical is None or to_critical.seconds is None
        else round(to_critical.seconds, 1),
        slope_bytes_per_second=round(to_limit.slope, 1),
        confident=to_limit.confident,
        accelerating=to_limit.accelerating,
        r2=round(to_limit.r2, 3),
        points=to_limit.window_points,
    )  # fmt: skip
