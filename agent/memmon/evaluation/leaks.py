"""Leak suspicion from a memory series: sustained, confident, still-continuing growth, not noise.

"10 % growth in 5 minutes" as a two-point difference fires on healthy services: a gc sawtooth sampled at a trough
then a peak, a cache warming up, a one-off spike. :class:`LeakDetector` judges instead:

1. rolling maxima (default ``window / 20``), so a sawtooth is judged by its peaks;
2. a robust (Theil-Sen) line over the long window; its growth ``slope * span`` relative to the fitted start
   must reach ``threshold_growth_rate`` and, in bytes, ``min_growth_bytes`` (tiny processes do not page people);
3. the least-squares ``r2`` of the long window must be at least :data:`MIN_R2` (a straight rise, not a spike or
   a sawtooth's phase);
4. the short window (``window / 4``) must still grow, at least :data:`SHORT_RATE_FRACTION` of the long window's
   rate: growth that has stopped (a cache that reached its cap) is not a leak;
5. all of that for ``confirm`` consecutive checks (one check per :meth:`LeakDetector.add`).

A cache that is still filling *is* growth: while it fills by more than the thresholds it is reported like a leak
(nothing in the numbers tells them apart yet); the verdict clears once the short window is flat, and at the latest
when the cache has been flat for one window.

Cost per check: one fit over the window plus a slope over the short window, about 0.5 ms at 300 points.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

from memmon.evaluation.trend import append_point, fit_window, theil_sen_slope, windowed_series
from memmon.model import MB

__all__ = ["MIN_R2", "SHORT_RATE_FRACTION", "LeakDetector", "LeakVerdict"]

MIN_R2 = 0.6
"""Least-squares R² the long window must reach for its growth to count."""
SHORT_RATE_FRACTION = 0.5
"""The short window must grow at least this fraction of the long window's rate."""
FULL_WINDOW_FRACTION = 0.9
"""Verdicts start once the points span this fraction of the window."""


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    """One check's judgement of the series."""

    suspected: bool
    """Growth held for ``confirm`` consecutive checks."""
    growth_ratio: float
    """Relative growth over the long window: fitted end / fitted start - 1 (inf when the fitted start is <= 0)."""
    growth_bytes: float
    slope: float
    """Bytes per second (robust, on rolling maxima)."""
    window_seconds: float
    """Seconds the long window's points actually span."""
    confirmations: int
    """Consecutive checks (this one included) on which the growth held; 0 when it does not hold now."""
    reason: str
    """A human sentence without a verdict prefix: the growth found, or the condition that failed."""


def _mb(value: float) -> str:
    return f"{value / MB:.1f} MiB"


class LeakDetector:
    """Growth detection for any target (process RSS or cgroup working set).

    A robust trend over the window (not a two-point difference), relative growth against
    ``threshold_growth_rate``, a minimum absolute growth (``min_growth_bytes``, default 16 MiB) so tiny processes
    do not page people, on rolling maxima (so a gc sawtooth is judged by its peaks), requiring the short window
    (``window / 4``) to grow too, the long-window fit to be confident (r2), and the verdict to hold for ``confirm``
    consecutive checks. Not thread-safe (the check loop owns it).
    """

    def __init__(
        self,
        *,
        window_seconds: float = 300,
        threshold_growth_rate: float = 0.1,
        min_growth_bytes: float = 16 * 2**20,
        confirm: int = 3,
        rolling_max_seconds: float | None = None,
    ) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if confirm < 1:
            raise ValueError(f"confirm must be >= 1, got {confirm}")
        self.window_seconds = float(window_seconds)
        self.threshold_growth_rate = threshold_growth_rate
        self.min_growth_bytes = min_growth_bytes
        self.confirm = confirm
        self.rolling_max_seconds = (
            self.window_seconds / 20.0
            if rolling_max_seconds is None
            else max(0.0, float(rolling_max_seconds))
        )
        self.short_window_seconds = self.window_seconds / 4.0
        self._history: deque[tuple[float, float]] = deque()
        self._confirmations = 0

    def reset(self) -> None:
        """Forget the series and the confirmations (after a restart of the target)."""
        self._history.clear()
        self._confirmations = 0

    def add(self, timestamp: float, value_bytes: float) -> LeakVerdict | None:
        """Record a point and judge the window; None until the points span 90 % of the window.

        A timestamp older than the previous one restarts the history (pass monotonic seconds when you have them).
        """
        restarted = bool(self._history) and timestamp < self._history[-1][0]
        append_point(
            self._history,
            float(timestamp),
            float(value_bytes),
            self.window_seconds + self.rolling_max_seconds,
        )
        if restarted:
            self._confirmations = 0
        ts, ys = windowed_series(self._history, self.window_seconds, self.rolling_max_seconds)
        if ts[-1] - ts[0] < FULL_WINDOW_FRACTION * self.window_seconds:
            return None
        fitted = fit_window(ts, ys)
        if fitted is None:
            return None
        trend = fitted[0]
        span = trend.span_seconds
        growth = trend.slope * span
        start = trend.intercept_at_end - growth
        ratio = growth / start if start > 0.0 else (math.inf if growth > 0.0 else 0.0)

        reason = self._failed_condition(ts, ys, trend.slope, trend.r2, growth, ratio, span)
        self._confirmations = self._confirmations + 1 if reason is None else 0
        suspected = self._confirmations >= self.confirm
        grew = f"Grew {_mb(growth)} ({ratio:.1%}) over {span:.0f} s at {_mb(trend.slope * 60)}/min, still growing"
        if reason is not None:
            sentence = reason[0].upper() + reason[1:] + "."
        elif suspected:
            sentence = f"{grew}, for {self._confirmations} consecutive checks."
        else:
            sentence = f"{grew}; awaiting confirmation ({self._confirmations}/{self.confirm} checks)."
        return LeakVerdict(
            suspected=suspected,
            growth_ratio=ratio,
            growth_bytes=growth,
            slope=trend.slope,
            window_seconds=span,
            confirmations=self._confirmations,
            reason=sentence,
        )

    def _failed_condition(
        self,
        ts: list[float],
        ys: list[float],
        slope: float,
        r2: float,
        growth: float,
        ratio: float,
        span: float,
    ) -> str | None:
        """Why the window does not look like a leak, or None when it does."""
        if ratio < self.threshold_growth_rate:
            return f"growth {ratio:.1%} over {span:.0f} s is below {self.threshold_growth_rate:.0%}"
        if growth < self.min_growth_bytes:
            return f"growth {_mb(growth)} over {span:.0f} s is below the minimum {_mb(self.min_growth_bytes)}"
        if r2 < MIN_R2:
            return f"the rise is not steady (r2 {r2:.2f} < {MIN_R2})"
        short_start = ts[-1] - self.short_window_seconds
        first = bisect.bisect_left(ts, short_start)
        short_slope = theil_sen_slope(ts[first:], ys[first:])
        if short_slope < SHORT_RATE_FRACTION * slope:
            return (
                f"growth has slowed or stopped: {_mb(short_slope * 60)}/min over the last "
                f"{self.short_window_seconds:.0f} s against {_mb(slope * 60)}/min over the window"
            )
        return None
