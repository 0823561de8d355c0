"""The in-memory history ring that serves the hot path (``/health/memory``, trend queries).

The ring keeps the newest ``size`` points; older ones live only in the SQLite store (:mod:`memmon.storage.store`).
Callers check :meth:`HistoryRing.covers` first and fall back to the store when the ring does not reach far
enough back.

Timestamps are wall-clock seconds, so they normally only grow, but a clock step (NTP, a VM resume) can make
a point older than its predecessor. The ring accepts such points in arrival order; while one is held,
:meth:`HistoryRing.since` scans instead of bisecting so that its answer stays correct.

Not thread-safe: one event loop owns a ring.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Sequence

from memmon.model import HistoryPoint

__all__ = ["HistoryRing", "downsample"]


def _timestamp(point: HistoryPoint) -> float:
    return point.timestamp


class HistoryRing:
    """The newest ``size`` history points, in arrival order (oldest first)."""

    __slots__ = ("_appended", "_last_inversion", "_points")

    def __init__(self, size: int) -> None:
        """A ring holding at most ``size`` points; ``ValueError`` when ``size < 1``."""
        if size < 1:
            raise ValueError(f"history ring size must be >= 1, got {size}")
        self._points: deque[HistoryPoint] = deque(maxlen=size)
        self._appended = 0
        """How many points were ever appended: the sequence number of the next point."""
        self._last_inversion = -1
        """Sequence number of the latest point older than its predecessor, or -1."""

    @property
    def size(self) -> int:
        """The capacity given at construction."""
        maxlen = self._points.maxlen
        assert maxlen is not None
        return maxlen

    def append(self, point: HistoryPoint) -> None:
        """Add ``point`` as the newest; when full, the oldest point is dropped. O(1)."""
        if self._points and point.timestamp < self._points[-1].timestamp:
            self._last_inversion = self._appended
        self._points.append(point)
        self._appended += 1

    def latest(self) -> HistoryPoint | None:
        """The most recently appended point, or None when the ring is empty."""
        return self._points[-1] if self._points else None

    def _is_sorted(self) -> bool:
        """True when the held points have non-decreasing timestamps (no clock step inside the ring)."""
        first_held = self._appended - len(self._points)
        # An inversion at sequence s is between points s-1 and s; it is gone once s-1 was dropped.
        return self._last_inversion - 1 < first_held

    def since(self, ts: float) -> list[HistoryPoint]:
        """The held points with ``timestamp >= ts``, oldest first (a new list).

        Bisects on timestamps and copies only the matching tail, so asking for the last minute of a long ring
        costs O(log n + k). Falls back to a filtering scan (arrival order kept) while the ring holds a point
        that arrived out of timestamp order.
        """
        points = self._points
        if not self._is_sorted():
            return [point for point in points if point.timestamp >= ts]
        start = bisect.bisect_left(points, ts, key=_timestamp)
        tail = len(points) - start
        if tail <= 0:
            return []
        if start == 0:
            return list(points)
        # Walk from the newest end: deque indexing is O(n), reversed iteration is O(k).
        result = list(itertools.islice(reversed(points), tail))
        result.reverse()
        return result

    def covers(self, ts: float) -> bool:
        """True iff the ring is non-empty and its oldest held point has ``timestamp <= ts``.

        Then :meth:`since` returns everything this process recorded since ``ts``; otherwise older points may
        have been dropped (or were never seen, e.g. before a restart) and the store must be asked.
        """
        return bool(self._points) and self._points[0].timestamp <= ts

    def __len__(self) -> int:
        """Number of points held (at most ``size``)."""
        return len(self._points)

    def __repr__(self) -> str:
        return f"HistoryRing(size={self.size}, held={len(self._points)})"


def _peak_key(point: HistoryPoint) -> float:
    usage = point.memory_usage_mb
    return float("-inf") if usage is None else usage


def downsample(points: Sequence[HistoryPoint], max_points: int) -> list[HistoryPoint]:
    """At most ``max_points`` of ``points`` (given oldest first), for charts and API responses.

    - ``len(points) <= max_points``: all points, as a new list.
    - Otherwise exactly ``max_points`` points, oldest first: the newest point is always kept, and the other
      points are split by position into ``max_points - 1`` consecutive buckets of near-equal size (sizes
      differ by at most one). From each bucket the point with the highest ``memory_usage_mb`` is kept (the
      earliest one on a tie; a None usage ranks lowest): for memory a peak matters, and a mean would hide it.

    Buckets are by position, not by time: history points come at the check interval, and a gap (a restart)
    stays visible as a gap between kept timestamps. ``ValueError`` when ``max_points < 1``.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    count = len(points)
    if count <= max_points:
        return list(points)
    if not isinstance(points, list | tuple):
        points = list(points)  # a deque indexes in O(n)
    older = count - 1
    buckets = max_points - 1
    kept: list[HistoryPoint] = []
    for bucket in range(buckets):
        start = bucket * older // buckets
        stop = (bucket + 1) * older // buckets
        kept.append(max((points[i] for i in range(start, stop)), key=_peak_key))
    kept.append(points[-1])
    return kept
