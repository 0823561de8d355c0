"""History reads downsampled inside SQLite (memmon.storage.reads) against the Python contract (memmon.history)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from memmon.model import HistoryPoint, Level
from memmon.storage.history import downsample
from memmon.storage.reads import HistoryReader
from memmon.storage.store import MemoryStore, StoreError
from tests.waiting import wait_until


def point(ts: float, usage: float | None) -> HistoryPoint:
    return HistoryPoint(ts, Level.OK, "self", usage, None if usage is None else usage / 10, 1000.0, "host")


def fill(state: Path, points: list[HistoryPoint]) -> MemoryStore:
    store = MemoryStore(state)
    store.open()
    store.add_samples(points)
    return store


def awkward_points(count: int, seed: int) -> list[HistoryPoint]:
    """Ties, None usages, equal timestamps and a clock step back: every case the contract names."""
    rng = random.Random(seed)
    points = []
    ts = 1000.0
    for _ in range(count):
        ts += rng.choice((0.0, 1.0, 1.0, 2.5))  # equal timestamps keep insertion order
        usage = rng.choice((None, 10.0, 10.0, 20.0, rng.uniform(0, 100)))
        points.append(point(ts, usage))
    return points


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sql_downsample_keeps_exactly_what_downsample_keeps(tmp_path: Path, seed: int) -> None:
    """For any max_points, the reader returns the total and the same points as history.downsample (peaks per
    positional bucket, earliest on a tie, None lowest, the newest always), oldest first."""
    points = awkward_points(503, seed)
    store = fill(tmp_path, points)
    reader = HistoryReader(store.path)
    try:
        for since in (0.0, points[200].timestamp):
            stored = store.history(since)
            for max_points in (1, 2, 3, 7, 10, 100, 250, 501, 502, 503, 600):
                total, kept = await reader.window(since, max_points)
                assert total == len(stored)
                assert kept == downsample(stored, max_points), (since, max_points)
    finally:
        reader.close()
        store.close()


async def test_an_empty_window_is_zero_points(tmp_path: Path) -> None:
    """No sample since ``since``: total 0, no points."""
    store = fill(tmp_path, [point(10.0, 1.0)])
    reader = HistoryReader(store.path)
    try:
        assert await reader.window(11.0, 10) == (0, [])
    finally:
        reader.close()
        store.close()


def fill_many(state: Path, count: int) -> Path:
    store = fill(state, [point(0.0, 1.0)])
    store.close()
    with sqlite3.connect(store.path) as conn:
        conn.executemany(
            "INSERT INTO samples (timestamp, level, target, memory_usage_mb, effective_limit_mb, limit_source) "
            "VALUES (?, 'ok', 'self', ?, 1000.0, 'host')",
            ((float(i), float(i % 977)) for i in range(1, count)),
        )
    return store.path


async def test_a_cancelled_query_is_interrupted_and_frees_its_thread(tmp_path: Path) -> None:
    """Cancelling the caller interrupts the running SQLite statement (counted in ``stopped``) and the reader's one
    thread answers the next query."""
    path = fill_many(tmp_path, 400_000)
    reader = HistoryReader(path, workers=1)
    try:
        task = asyncio.create_task(reader.window(0.0, 10))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert reader.running == 0
        await wait_until(lambda: reader.stopped == 1)
        total, kept = await reader.window(399_990.0, 5)  # the one thread is free again
        assert total == 10 and len(kept) == 5
    finally:
        reader.close()


async def test_a_query_past_its_deadline_is_stopped(tmp_path: Path) -> None:
    """A query running longer than deadline_seconds ends with StoreError saying it took too long."""
    path = fill_many(tmp_path, 400_000)
    reader = HistoryReader(path, deadline_seconds=0.0)
    try:
        with pytest.raises(StoreError, match="took too long"):
            await reader.window(0.0, 10)
        assert reader.stopped == 1
    finally:
        reader.close()


async def test_a_closed_reader_refuses_and_a_missing_file_is_a_store_error(tmp_path: Path) -> None:
    """After close() every query is a StoreError; a database that does not exist is one naming the file."""
    missing = HistoryReader(tmp_path / "nothing" / "memmon.db")
    with pytest.raises(StoreError, match=r"memmon\.db"):
        await missing.window(0.0, 10)
    missing.close()
    with pytest.raises(StoreError, match="closed"):
        await missing.window(0.0, 10)
