"""HistoryRing and downsample."""

from __future__ import annotations

from collections import deque

import pytest

from memmon.model import HistoryPoint, Level
from memmon.storage.history import HistoryRing, downsample

T0 = 1_700_000_000.0


def make_point(ts: float, mb: float | None = 100.0) -> HistoryPoint:
    return HistoryPoint(
        timestamp=ts,
        level=Level.OK,
        target="pid:1",
        memory_usage_mb=mb,
        percent=None,
        effective_limit_mb=1000.0,
        limit_source="host",
    )


def ring_of(size: int, timestamps: list[float]) -> HistoryRing:
    ring = HistoryRing(size)
    for ts in timestamps:
        ring.append(make_point(ts))
    return ring


def stamps(points: list[HistoryPoint]) -> list[float]:
    return [p.timestamp - T0 for p in points]


# -- HistoryRing ---------------------------------------------------------------------------------------


def test_empty_ring() -> None:
    """An empty ring has no latest point, returns nothing and covers no time."""
    ring = HistoryRing(3)
    assert len(ring) == 0 and ring.latest() is None
    assert ring.since(0) == []
    assert not ring.covers(T0)


def test_size_must_be_positive() -> None:
    """A ring of size < 1 is a configuration error."""
    with pytest.raises(ValueError, match="size"):
        HistoryRing(0)


def test_latest_and_maxlen_eviction() -> None:
    """The ring keeps the newest `size` points, drops the oldest first, and latest() is the last appended."""
    ring = ring_of(3, [T0 + i for i in range(5)])
    assert len(ring) == 3 and ring.size == 3
    latest = ring.latest()
    assert latest is not None and latest.timestamp == T0 + 4
    assert stamps(ring.since(0)) == [2, 3, 4]


def test_since_is_inclusive_and_oldest_first() -> None:
    """since(ts) returns points with timestamp >= ts, oldest first, and a new list each time."""
    ring = ring_of(10, [T0 + i for i in range(6)])
    assert stamps(ring.since(T0 + 3)) == [3, 4, 5]
    assert stamps(ring.since(T0 + 2.5)) == [3, 4, 5]
    assert stamps(ring.since(T0 - 100)) == [0, 1, 2, 3, 4, 5]
    assert ring.since(T0 + 6) == []
    first = ring.since(T0 + 5)
    first.clear()
    assert len(ring.since(T0 + 5)) == 1


def test_since_with_equal_timestamps_includes_all_of_them() -> None:
    """Several points at the boundary timestamp are all returned, in arrival order."""
    ring = HistoryRing(10)
    points = [make_point(T0, mb) for mb in (1.0, 2.0, 3.0)] + [make_point(T0 + 1)]
    for p in points:
        ring.append(p)
    assert ring.since(T0) == points
    assert ring.since(T0 + 0.5) == points[3:]


def test_since_stays_correct_after_a_clock_step_back() -> None:
    """A point older than its predecessor (wall clock stepped back) is still found, until it is evicted."""
    ring = ring_of(4, [T0 + 10, T0 + 11, T0 + 5, T0 + 12])
    assert stamps(ring.since(T0 + 6)) == [10, 11, 12]
    assert stamps(ring.since(T0 + 5)) == [10, 11, 5, 12]
    for ts in (T0 + 13, T0 + 14, T0 + 15):  # evicts 10, 11 and the stepped-back 5
        ring.append(make_point(ts))
    assert stamps(ring.since(T0 + 13)) == [13, 14, 15]
    assert stamps(ring.since(0)) == [12, 13, 14, 15]


def test_covers_iff_oldest_held_point_is_at_or_before_ts() -> None:
    """covers(ts) is True exactly when the ring is non-empty and its oldest point is <= ts."""
    ring = ring_of(3, [T0, T0 + 1])
    assert ring.covers(T0) and ring.covers(T0 + 0.5) and ring.covers(T0 + 100)
    assert not ring.covers(T0 - 0.001)
    ring.append(make_point(T0 + 2))
    ring.append(make_point(T0 + 3))  # T0 evicted
    assert not ring.covers(T0)
    assert ring.covers(T0 + 1)


# -- downsample ----------------------------------------------------------------------------------------


def test_downsample_returns_everything_when_small_enough() -> None:
    """With no more points than max_points, all points come back unchanged, as a new list."""
    points = [make_point(T0 + i) for i in range(5)]
    assert downsample(points, 5) == points
    assert downsample(points, 50) == points
    assert downsample(points, 5) is not points
    assert downsample([], 3) == []


def test_downsample_keeps_requested_count_and_newest() -> None:
    """A long series comes back as exactly max_points points, oldest first, ending with the newest point."""
    points = [make_point(T0 + i, mb=float(i % 7)) for i in range(1000)]
    for max_points in (1, 2, 3, 10, 999):
        got = downsample(points, max_points)
        assert len(got) == max_points
        assert got[-1] is points[-1]
        assert stamps(got) == sorted(stamps(got))


def test_downsample_keeps_peaks_not_means() -> None:
    """Each bucket is represented by its highest memory_usage_mb point, so a one-sample spike survives."""
    usage = [100.0] * 100
    usage[37] = 950.0  # the spike
    usage[80] = 400.0
    points = [make_point(T0 + i, mb=mb) for i, mb in enumerate(usage)]
    got = downsample(points, 5)  # 4 buckets of ~25 over the 99 older points, plus the newest
    assert len(got) == 5
    assert 950.0 in [p.memory_usage_mb for p in got]
    assert 400.0 in [p.memory_usage_mb for p in got]
    assert got[1] is points[37]


def test_downsample_buckets_are_even_and_ties_keep_earliest() -> None:
    """Flat data picks the first point of each equal-sized bucket; None usage ranks below any number."""
    points = [make_point(T0 + i) for i in range(9)]  # 8 older points -> 4 buckets of 2
    assert stamps(downsample(points, 5)) == [0, 2, 4, 6, 8]
    gappy = [make_point(T0, None), make_point(T0 + 1, 5.0), make_point(T0 + 2, None), make_point(T0 + 3)]
    assert stamps(downsample(gappy, 2)) == [1, 3]
    all_none = [make_point(T0, None), make_point(T0 + 1, None), make_point(T0 + 2)]
    assert stamps(downsample(all_none, 2)) == [0, 2]  # an all-None bucket: its first point


def test_downsample_accepts_a_deque_and_rejects_nonpositive_count() -> None:
    """downsample works on any sequence (e.g. a ring's deque) and max_points < 1 raises ValueError."""
    points = deque(make_point(T0 + i, mb=float(i)) for i in range(10))
    assert stamps(downsample(points, 3)) == [3, 8, 9]  # buckets [0..3] and [4..8] of the 9 older points
    with pytest.raises(ValueError, match="max_points"):
        downsample(list(points), 0)
