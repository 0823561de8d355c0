"""Reading history from the SQLite store on connections and threads of its own, downsampled inside SQLite.

The writer (:class:`~memmon.store.MemoryStore` on the recorder's one thread) never waits for a reader: every query
opens its own read-only connection (WAL: readers and the writer do not block each other) on one of this reader's
threads. So a day of history asked for ten times at once delays neither a flush nor the check loop, and a
shutdown's final flush does not queue behind reads.

Bounded per query: SQLite buckets the rows and keeps each bucket's peak (window functions, sqlite >= 3.25), so at
most ``max_points`` rows ever reach Python, whatever the window holds; SQLite's own working memory is its page
cache (2 MB by default) and temporary B-trees that spill to disk. The statement runs in C with the GIL released.

Cancellable: when the awaiting task is cancelled (the client went away, the agent stops) the query is interrupted
(``sqlite3.Connection.interrupt()``, safe from another thread per SQLite's docs) and its thread is free within
milliseconds; a progress handler also ends any query that runs past ``deadline_seconds``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memmon.model import HistoryPoint
from memmon.storage.store import SAMPLE_NAMES, StoreError, point_from_row

__all__ = ["HistoryReader"]

PROGRESS_EVERY = 20_000
"""SQLite virtual-machine steps between two looks at the cancel flag and the deadline (about a millisecond)."""

# Positions run oldest first from 0 to n-1. The newest row is kept on its own (bucket -1); the others fall into
# max_points - 1 buckets by position, exactly as memmon.history.downsample splits them: bucket b holds positions
# [b*(n-1) // (max-1), (b+1)*(n-1) // (max-1)), i.e. position p is in bucket ((p+1)*(max-1) - 1) // (n-1).
# Each bucket keeps its highest usage, a NULL usage ranking lowest, the earliest on a tie.
_WINDOW_SQL = f"""
WITH numbered AS (
    SELECT rowid AS rid, memory_usage_mb AS usage,
           row_number() OVER (ORDER BY timestamp, rowid) - 1 AS pos,
           count(*) OVER () AS n
    FROM samples WHERE timestamp >= :since AND (:target IS NULL OR target = :target)
), bucketed AS (
    SELECT rid, usage, pos, n, CASE
        WHEN n <= :max THEN pos
        WHEN pos = n - 1 THEN -1
        WHEN :max = 1 THEN NULL
        ELSE ((pos + 1) * (:max - 1) - 1) / (n - 1) END AS bucket
    FROM numbered
), ranked AS (
    SELECT rid, pos, n, bucket,
           row_number() OVER (PARTITION BY bucket ORDER BY usage IS NULL, usage DESC, pos) AS rank
    FROM bucketed
)
SELECT n, {SAMPLE_NAMES} FROM ranked JOIN samples ON samples.rowid = ranked.rid
WHERE rank = 1 AND bucket IS NOT NULL ORDER BY pos
"""


class _Query:
    """One read: its connection (while it runs) and the flag that interrupts it."""

    def __init__(
        self, path: Path, since: float, max_points: int, deadline_seconds: float, target: str | None = None
    ) -> None:
        self.path = path
        self.since = since
        self.target = target
        self.max_points = max_points
        self.deadline = time.monotonic() + deadline_seconds
        self.cancelled = threading.Event()
        self.stopped_early = False
        """Set (on the query's thread) when the statement was interrupted before it finished."""
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Stop the query now (from any thread)."""
        self.cancelled.set()
        with self._lock:
            if self._conn is not None:
                self._conn.interrupt()

    def _stop_wanted(self) -> int:
        return 1 if self.cancelled.is_set() or time.monotonic() > self.deadline else 0

    def run(self) -> tuple[int, list[HistoryPoint]]:
        """``(rows in the window, kept points oldest first)``; ``StoreError`` naming the file on any failure."""
        if self.cancelled.is_set():
            raise StoreError(f"history query on {self.path} cancelled")
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read history from {self.path}: {exc}") from exc
        with self._lock:
            self._conn = conn
        try:
            conn.set_progress_handler(self._stop_wanted, PROGRESS_EVERY)
            total = 0
            points: list[HistoryPoint] = []
            for row in conn.execute(
                _WINDOW_SQL, {"since": self.since, "max": self.max_points, "target": self.target}
            ):
                total = int(row[0])
                points.append(point_from_row(row[1:]))
        except sqlite3.Error as exc:
            self.stopped_early = self.cancelled.is_set() or time.monotonic() > self.deadline
            if self.cancelled.is_set():
                raise StoreError(f"history query on {self.path} cancelled") from exc
            if time.monotonic() > self.deadline:
                raise StoreError(f"history query on {self.path} took too long and was stopped") from exc
            raise StoreError(f"cannot read history from {self.path}: {exc}") from exc
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        return total, points


class HistoryReader:
    """Downsampled history queries on ``workers`` threads of their own; see the module docstring."""

    def __init__(self, path: Path, *, workers: int = 2, deadline_seconds: float = 30.0) -> None:
        """Nothing is opened before the first query. ``workers`` queries run at once; more wait their turn."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.path = Path(path)
        self.workers = workers
        self.deadline_seconds = deadline_seconds
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[_Query] = set()
        self._closed = False
        self.stopped = 0
        self._count_lock = threading.Lock()
        """Queries whose statement was interrupted (cancelled or past the deadline) before it finished."""

    async def window(
        self, since: float, max_points: int, target: str | None = None
    ) -> tuple[int, list[HistoryPoint]]:
        """Samples with ``timestamp >= since`` (of ``target`` only, when given) as ``(how many there are, at most
        max_points of them)``.

        The kept points are those :func:`memmon.history.downsample` keeps (per-bucket peaks and the newest).
        ``StoreError`` when the file cannot be read, the reader is closed, or the query ran past the deadline.
        Cancelling the caller interrupts the query.
        """
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        if self._closed:
            raise StoreError(f"history reads on {self.path} are closed")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="memmon-read")
        query = _Query(self.path, since, max_points, self.deadline_seconds, target)
        self._running.add(query)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, query)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not our caller's cancellation: close() dropped the queued query.
            raise StoreError(f"history reads on {self.path} are closed") from None
        finally:
            query.cancel()  # a no-op once it finished; on cancellation it frees the thread at once
            self._running.discard(query)

    def _run(self, query: _Query) -> tuple[int, list[HistoryPoint]]:
        try:
            return query.run()
        finally:
            if query.stopped_early:
                with self._count_lock:
                    self.stopped += 1

    @property
    def running(self) -> int:
        """Queries submitted and not yet finished or cancelled."""
        return len(self._running)

    def close(self) -> None:
        """Interrupt every query and refuse new ones (idempotent; does not wait for the threads)."""
        self._closed = True
        for query in list(self._running):
            query.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
