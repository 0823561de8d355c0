"""The tracemalloc window that names a leak's allocation line (library mode with ``enable_tracemalloc``).

Wiring like :mod:`memmon.leakwatch`, which owns the leak alert and drives the window: the check that confirms a
suspected leak opens it (:meth:`AllocationWindow.open`), and the alert says so
(``metadata["allocation_trace"]["state"] == "running"``). Each later check calls :meth:`AllocationWindow.step`.
The window ends early, at the first check where its top allocation site holds :data:`TRACE_SHARE` of the growth
the detector found (at least :data:`MIN_TRACED_BYTES`), and never runs past ``tracemalloc_window_seconds``: it
ends at the last check that comes before that length is reached (checks come ``check_interval`` apart, or
sooner; with a ``check_interval`` as long as the window, at the first check after the one that opened it). A
leak alert that resolves while its window runs ends the window (the sites go to ``/health/leaks`` only).

The sites then (:func:`site_alerts`):

* update the firing alert in place: same id and start, its message names the top site, its metadata gets
  ``top_sites`` and ``allocation_trace`` ``done``; recorded in the store, shown by ``/health/leaks`` and the
  active alerts, and re-pushed with them to Alertmanager (whose annotations take the new text);
* go out once as a follow-up: a *notice* (:mod:`memmon.alerting.kinds`) of component ``memory_leak_site``
  naming the site, with the leak alert's id in ``metadata["alert_id"]``. A notice passes the rate limiter
  (which holds back a second notification of one fingerprint, and whose idempotency key ``<id>:<state>``
  would make a re-sent leak alert a duplicate to receivers) and ends at once, silently: people get one
  message, Alertmanager gets a notice resolved before it could notify, never a second leak alert.

:mod:`memmon.sampling.allocations` (and tracemalloc) is imported with the first profiler: an agent that never
explains a leak never loads it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from memmon.alerting.kinds import NOTICE
from memmon.config import Settings
from memmon.evaluation.evaluator import fingerprint
from memmon.evaluation.leaks import LeakVerdict
from memmon.model import MB, Alert, frozen_mapping

if TYPE_CHECKING:
    from memmon.sampling.allocations import AllocationProfiler, AllocationReport

log = logging.getLogger("memmon.leaks")

LEAK_SITE = "memory_leak_site"
"""The follow-up notice naming a leak's allocation site."""
TRACE_SHARE = 0.25
"""A tracemalloc window ends early once its top site holds this share of the growth the detector found."""
MIN_TRACED_BYTES = 1 * MB
"""... and at least this many bytes (a detector with ``min_growth_mb`` near 0 must not stop at a few kB)."""
TRACING_NOTE = "; tracing allocations to name the line"
"""Appended to the leak alert's message while its window runs (and cut off when the site is found)."""


def new_profiler(frames: int) -> AllocationProfiler:
    """A tracemalloc profiler of ``frames`` frames (its module, and tracemalloc's, imported on the first one)."""
    from memmon.sampling.allocations import AllocationProfiler

    return AllocationProfiler(frames=frames)


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


class AllocationWindow:
    """At most one tracemalloc window at a time, for the leak alert; the check loop owns it."""

    def __init__(
        self,
        settings: Settings,
        profiler: AllocationProfiler | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``profiler`` is None where no window may open (agent mode, or ``enable_tracemalloc`` off)."""
        self.settings = settings
        self.profiler = profiler
        self.clock = clock
        self._trace: _Trace | None = None

    @property
    def running(self) -> bool:
        """A window is open."""
        return self._trace is not None

    def can_open(self, alert: Alert | None) -> bool:
        """A window can open for the leak ``alert``: a profiler, idle, and no site found for the alert yet."""
        return (
            self.profiler is not None
            and self._trace is None
            and not self.profiler.active
            and (alert is None or "top_sites" not in alert.metadata)
        )

    def open(self, verdict: LeakVerdict) -> None:
        """Start tracing for ``verdict`` (nothing happens while an on-request snapshot holds the profiler)."""
        assert self.profiler is not None
        if not self.profiler.start():  # an on-request snapshot holds the profiler: try again next check
            return
        enough = max(MIN_TRACED_BYTES, TRACE_SHARE * verdict.growth_bytes)
        self._trace = _Trace(self.profiler.started_at or self.clock(), enough, enough, verdict.slope)
        log.warning(
            "growth suspected (%s); tracing allocations until one line holds %.1f MiB, at most %gs",
            verdict.reason, enough / MB, self.settings.monitoring.leak_detection.tracemalloc_window_seconds,
        )  # fmt: skip

    def status(self) -> dict[str, object]:
        """The running window, as the alert's ``allocation_trace`` and ``/health/leaks`` show it."""
        trace = self._trace
        assert trace is not None and self.profiler is not None
        return {
            "state": "running",
            "started_at": trace.started_at,
            "traced_mb": round(self.profiler.traced_growth() / MB, 1),
            "ends_early_at_mb": round(trace.enough_bytes / MB, 1),
            "max_seconds": self.settings.monitoring.leak_detection.tracemalloc_window_seconds,
        }

    def step(self, resolved: bool) -> tuple[AllocationReport, str, float] | None:
        """End the window when the alert ``resolved``, its top site holds enough, or the next check would be late.

        Returns ``(report, ended, grown_bytes)`` when it ended with a report: ``ended`` is ``resolved``,
        ``window`` or ``early``; ``grown_bytes`` is what the target grew during the window at the detector's
        rate. None while it runs on (or when no window runs, or the trace was lost)."""
        trace, profiler = self._trace, self.profiler
        if trace is None or profiler is None:
            return None
        if trace.fresh:  # opened by this very check: the window must see at least one check interval
            trace.fresh = False
            return None
        monitoring = self.settings.monitoring
        report: AllocationReport | None = None
        try:
            if resolved:
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
            return None
        if report is None:
            return None
        self._trace = None
        return report, ended, trace.slope * report.window_seconds


def _sites(report: AllocationReport) -> list[dict[str, object]]:
    return [
        {"site": f"{s.file}:{s.line}", "size_mb": round(s.size_bytes / MB, 3), "count": s.count,
         "traceback": list(s.traceback)}
        for s in report.sites[:5]
    ]  # fmt: skip


def site_alerts(
    alert: Alert, report: AllocationReport, ended: str, grown_bytes: float, now: float, value: float
) -> tuple[Alert, list[Alert]]:
    """The firing leak ``alert`` updated with the sites (to record, not to publish), and the follow-up notice
    (firing and resolved at once) to publish.

    ``grown_bytes``: what the target grew during the window at the detector's rate; ``value`` its bytes now."""
    top = report.sites[0] if report.sites else None
    trace = {
        "state": "done",
        "ended": ended,
        "started_at": report.started_at,
        "window_seconds": round(report.window_seconds, 1),
        "top_mb": round(top.size_bytes / MB, 1) if top is not None else 0.0,
    }
    base = alert.message.partition(TRACING_NOTE)[0].rstrip(".")
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
        metadata=frozen_mapping({**alert.metadata, "allocation_trace": trace, "top_sites": _sites(report)}),
    )
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
    return updated, [notice, replace(notice, state="resolved", resolved_at=now)]
