"""Robust linear trends of a memory series, and a predictor of when it reaches a level.

The estimator (:func:`fit_trend`):

- Optionally each value is first replaced by the maximum over the preceding ``rolling_max_seconds`` (a gc
  sawtooth is judged by its peaks, not its troughs). Monotonic deque: O(n).
- The slope is Theil-Sen: the median of pairwise slopes, so a one-off spike or a few wild samples barely move it.
  All pairs are used up to :data:`FULL_PAIRS_MAX_POINTS` points; above that, pairs are subsampled
  deterministically as Theil's "incomplete" method generalised to :data:`PAIR_OFFSETS` index offsets spread over
  ``[n/4, 3n/4]`` (each point is paired with the points a quarter to three quarters of the series later). Those are
  the long-baseline pairs that carry most of the information, so the estimate stays close to the full one at
  O(n * k) pairs instead of O(n^2).
- ``intercept_at_end`` is the robust intercept: the median of ``y_i - slope * (t_i - t_end)``.
- ``r2`` is the coefficient of determination of an ordinary least-squares fit of the same (rolled) points:
  a confidence figure, not the estimator.
- ``recent_slope`` is the Theil-Sen slope of the recent half (by time) of the window; the trend is
  ``accelerating`` when it exceeds :data:`ACCELERATION_FACTOR` times the whole window's slope, both positive.

Cost, measured on the development machine (CPython 3.11): about 0.30 ms for 300 points, 0.36 ms with rolling
maxima; O(n * k) pairs plus their sort, so it grows about linearly with the number of points.

Pure Python, standard library only: this runs in the agent's check loop.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ACCELERATION_FACTOR",
    "Prediction",
    "Trend",
    "TrendPredictor",
    "fit_trend",
    "seconds_until",
]

ACCELERATION_FACTOR = 1.5
"""The recent half's slope must exceed the whole window's by this factor to count as accelerating."""
FULL_PAIRS_MAX_POINTS = 40
"""Up to this many points, Theil-Sen uses every pair (at most 780)."""
PAIR_OFFSETS = 8
"""Above :data:`FULL_PAIRS_MAX_POINTS`, the number of index offsets whose pairs are used (about 4n pairs)."""
MIN_POINTS = 3
MIN_SPAN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Trend:
    """A robust straight line through a memory series."""

    slope: float
    """Bytes per second (Theil-Sen)."""
    intercept_at_end: float
    """Fitted bytes at the last point's time."""
    r2: float
    """Goodness (0..1) of a least-squares fit of the same points: the confidence in a straight line."""
    span_seconds: float
    points: int
    accelerating: bool
    """The recent half's slope exceeds ``ACCELERATION_FACTOR`` times ``slope``, both positive."""
    recent_slope: float
    """Bytes per second over the recent half (by time) of the points; ``slope`` when it has too few points."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """When a series reaches a level, at the slope the predictor trusts."""

    seconds: float | None
    """Seconds until ``level_bytes`` at ``slope`` (0 when the fitted value is already there); None when not
    growing. Meaningful only when ``confident``."""
    slope: float
    """Bytes per second used: the recent half's when ``accelerating``, else the whole window's."""
    confident: bool
    """Enough span (half the window) and a straight-line fit good enough (``r2 >= min_r2``)."""
    accelerating: bool
    r2: float
    window_points: int


def _median(values: list[float]) -> float:
    values.sort()
    n = len(values)
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2.0


def _rolling_max(ts: Sequence[float], ys: Sequence[float], seconds: float) -> list[float]:
    """Each value replaced by the maximum over the points in ``[t - seconds, t]``. O(n) with a monotonic deque."""
    out: list[float] = []
    window: deque[int] = deque()
    for i, (t, y) in enumerate(zip(ts, ys, strict=True)):
        while window and ys[window[-1]] <= y:
            window.pop()
        window.append(i)
        horizon = t - seconds
        while ts[window[0]] < horizon:
            window.popleft()
        out.append(ys[window[0]])
    return out


def _pair_offsets(n: int) -> range | list[int]:
    if n <= FULL_PAIRS_MAX_POINTS:
        return range(1, n)
    low, high = n // 4, (3 * n) // 4
    step = (high - low) / (PAIR_OFFSETS - 1)
    return sorted({low + round(j * step) for j in range(PAIR_OFFSETS)})


def _theil_sen(ts: Sequence[float], ys: Sequence[float]) -> float:
    """Median of the pairwise slopes (all pairs for short series, else the deterministic subsample)."""
    slopes: list[float] = []
    for h in _pair_offsets(len(ts)):
        slopes.extend(
            (y1 - y0) / (t1 - t0) for t0, t1, y0, y1 in zip(ts, ts[h:], ys, ys[h:], strict=False) if t1 > t0
        )
    return _median(slopes) if slopes else 0.0


def _robust_at_end(ts: Sequence[float], ys: Sequence[float], slope: float) -> float:
    end = ts[-1]
    return _median([y - slope * (t - end) for t, y in zip(ts, ys, strict=True)])


def _r2(ts: Sequence[float], ys: Sequence[float]) -> float:
    """R² of the least-squares line (the squared correlation); 1 for a constant series (a flat line fits it)."""
    n = len(ts)
    origin = ts[0]
    xs = [t - origin for t in ts]
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    sxx = sxy = syy = 0.0
    for x, y in zip(xs, ys, strict=True):
        dx = x - mean_x
        dy = y - mean_y
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    if syy <= 0.0:
        return 1.0
    if sxx <= 0.0:
        return 0.0
    return min(1.0, max(0.0, sxy * sxy / (sxx * syy)))


def fit_window(ts: Sequence[float], ys: Sequence[float]) -> tuple[Trend, float] | None:
    """The trend of points already rolled (when asked), oldest first, and the robust fitted value at the end along
    ``recent_slope`` (the anchor when accelerating); None below 3 points or 1 s."""
    n = len(ts)
    if n < MIN_POINTS:
        return None
    span = ts[-1] - ts[0]
    if not span >= MIN_SPAN_SECONDS:
        return None
    slope = _theil_sen(ts, ys)
    at_end = _robust_at_end(ts, ys, slope)
    r2 = _r2(ts, ys)
    half = bisect.bisect_left(ts, ts[-1] - span / 2.0)
    recent_ts, recent_ys = ts[half:], ys[half:]
    if len(recent_ts) >= MIN_POINTS and recent_ts[-1] - recent_ts[0] >= MIN_SPAN_SECONDS:
        recent_slope = _theil_sen(recent_ts, recent_ys)
        recent_at_end = _robust_at_end(recent_ts, recent_ys, recent_slope)
    else:
        recent_slope, recent_at_end = slope, at_end
    accelerating = slope > 0.0 and recent_slope > 0.0 and recent_slope > ACCELERATION_FACTOR * slope
    trend = Trend(
        slope=slope,
        intercept_at_end=at_end,
        r2=r2,
        span_seconds=span,
        points=n,
        accelerating=accelerating,
        recent_slope=recent_slope,
    )
    return trend, recent_at_end


def _split(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [float(p[0]) for p in points], [float(p[1]) for p in points]


def fit_trend(points: Sequence[tuple[float, float]], *, rolling_max_seconds: float = 0.0) -> Trend | None:
    """The robust trend of ``(timestamp seconds, bytes)`` points, oldest first; None below 3 points or 1 s.

    With ``rolling_max_seconds > 0`` each value is first replaced by the maximum over the preceding
    ``rolling_max_seconds`` (the first points see only what precedes them in ``points``).
    """
    ts, ys = _split(points)
    if rolling_max_seconds > 0.0:
        ys = _rolling_max(ts, ys, rolling_max_seconds)
    fitted = fit_window(ts, ys)
    return None if fitted is None else fitted[0]


def seconds_until(trend: Trend, level_bytes: float) -> float | None:
    """Seconds until the fitted line reaches ``level_bytes``: None when not growing (slope <= 0), 0 when the
    fitted value at the end is already there."""
    if not trend.slope > 0.0:
        return None
    remaining = level_bytes - trend.intercept_at_end
    return 0.0 if remaining <= 0.0 else remaining / trend.slope


# Helpers shared with memmon.evaluation.leaks (not part of __all__).


def windowed_series(
    history: deque[tuple[float, float]], window_seconds: float, rolling_max_seconds: float
) -> tuple[list[float], list[float]]:
    """The points of ``history`` in the last ``window_seconds``, rolled over ``rolling_max_seconds`` using the older
    points kept before the window as look-back (so the window's first points are not biased low)."""
    ts, ys = _split(history)
    if rolling_max_seconds > 0.0:
        ys = _rolling_max(ts, ys, rolling_max_seconds)
    first = bisect.bisect_left(ts, ts[-1] - window_seconds) if ts else 0
    return ts[first:], ys[first:]


def theil_sen_slope(ts: Sequence[float], ys: Sequence[float]) -> float:
    """Theil-Sen slope of the points (all pairs when short, deterministic subsample when long); 0 without pairs."""
    return _theil_sen(ts, ys)


def append_point(
    history: deque[tuple[float, float]], timestamp: float, value: float, keep_seconds: float
) -> None:
    """Append to a time-bounded history; a timestamp older than the newest restarts it (a wall-clock step makes
    the old points meaningless: pass monotonic seconds when you have them)."""
    if history and timestamp < history[-1][0]:
        history.clear()
    history.append((timestamp, value))
    horizon = timestamp - keep_seconds
    while history[0][0] < horizon:
        history.popleft()


class TrendPredictor:
    """When a series reaches a level, better than Prometheus' ``predict_linear``.

    ``predict_linear`` is least squares over the window. This uses a robust (Theil-Sen) slope, optionally on
    rolling maxima; a confidence check (``r2 >= min_r2`` and at least half the window spanned); and acceleration:
    when the recent half grows clearly faster than the whole window (``recent_slope > 1.5 * slope``, both > 0) it
    predicts with the recent slope from the recent half's fitted end, so an accelerating leak is flagged earlier.

    Keeps ``window_seconds`` (plus ``rolling_max_seconds`` of look-back) of points; not thread-safe.
    """

    def __init__(
        self,
        window_seconds: float = 600,
        *,
        min_points: int = 10,
        min_r2: float = 0.6,
        rolling_max_seconds: float = 0.0,
    ) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if rolling_max_seconds < 0:
            raise ValueError(f"rolling_max_seconds must be >= 0, got {rolling_max_seconds}")
        self.window_seconds = float(window_seconds)
        self.min_points = max(MIN_POINTS, min_points)
        self.min_r2 = min_r2
        self.rolling_max_seconds = float(rolling_max_seconds)
        self._history: deque[tuple[float, float]] = deque()
        self._fitted: tuple[Trend, float] | None = None
        self._stale = True
        """The fit is reused by every ``predict`` between two ``add`` calls (e.g. to the limit and to critical)."""

    def add(self, timestamp: float, value_bytes: float) -> None:
        """Record a point; points older than the window (and its look-back) are dropped. O(1) amortised."""
        keep = self.window_seconds + self.rolling_max_seconds
        append_point(self._history, float(timestamp), float(value_bytes), keep)
        self._stale = True

    def reset(self) -> None:
        """Forget every point (after a restart of the target)."""
        self._history.clear()
        self._stale = True

    def _fit(self) -> tuple[Trend, float] | None:
        if self._stale:
            self._fitted = None
            if self._history:
                ts, ys = windowed_series(self._history, self.window_seconds, self.rolling_max_seconds)
                if len(ts) >= self.min_points:
                    self._fitted = fit_window(ts, ys)
            self._stale = False
        return self._fitted

    def predict(self, level_bytes: float) -> Prediction | None:
        """When the series reaches ``level_bytes``; None below ``min_points`` points in the window (or 1 s).

        The fit is computed once per ``add``; further calls with other levels cost microseconds.
        """
        fitted = self._fit()
        if fitted is None:
            return None
        trend, recent_at_end = fitted
        if trend.accelerating:
            slope, at_end = trend.recent_slope, recent_at_end
        else:
            slope, at_end = trend.slope, trend.intercept_at_end
        seconds: float | None = None
        if slope > 0.0:
            seconds = max(0.0, (level_bytes - at_end) / slope)
        confident = trend.r2 >= self.min_r2 and trend.span_seconds >= self.window_seconds / 2.0
        return Prediction(
            seconds=seconds if seconds is None or math.isfinite(seconds) else None,
            slope=slope,
            confident=confident,
            accelerating=trend.accelerating,
            r2=trend.r2,
            window_points=trend.points,
        )
