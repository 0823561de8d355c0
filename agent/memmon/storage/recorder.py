"""Writing history and alerts to the SQLite store off the event loop, in batches, without losing them.

Samples are buffered and written every ``flush_interval`` seconds (one transaction per batch); alert transitions
are written at once. All store calls go through one worker thread, so a query submitted after a write sees it.
When the store fails (disk full, file removed) the agent keeps monitoring: the error is logged once, counted,
shown as a degraded ``store`` source, and the buffered samples and alert transitions are kept (bounded) for the
next attempt. Only a successful write ends the failure ("state store works again"); at shutdown, what still
cannot be written is dropped with one line giving the counts.

The recorder holds the state directory's lock (:mod:`memmon.storage.lock`) from :meth:`StoreRecorder.open` to
:meth:`StoreRecorder.close`: a second agent on the same directory is refused before it writes anything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from memmon.model import MB, Alert, Evaluation, HistoryPoint
from memmon.storage.lock import StateDirLock
from memmon.storage.store import MemoryStore, StoreError
from memmon.telemetry import Telemetry

T = TypeVar("T")
log = logging.getLogger("memmon.store")

PRUNE_EVERY_SECONDS = 3600.0


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 3)


def history_point(evaluation: Evaluation, check_seconds: float) -> HistoryPoint:
    """The record of one check that history, the store and the live page use."""
    sample = evaluation.sample
    process, cgroup, host = sample.process, sample.cgroup, sample.host
    return HistoryPoint(
        timestamp=sample.timestamp,
        level=evaluation.level,
        target=sample.target,
        memory_usage_mb=_mb(sample.target_bytes),
        percent=None if sample.percent_of_limit is None else round(sample.percent_of_limit, 3),
        effective_limit_mb=round(sample.effective_limit_bytes / MB, 3),
        limit_source=sample.limit_source,
        rss_mb=_mb(process.rss_bytes) if process else None,
        vms_mb=_mb(process.vms_bytes) if process else None,
        cgroup_usage_mb=_mb(cgroup.usage_bytes) if cgroup else None,
        cgroup_working_set_mb=_mb(cgroup.working_set_bytes) if cgroup else None,
        available_mb=_mb(sample.available_bytes),
        host_percent=round(host.used_percent, 3) if host else None,
        swap_percent=round(host.swap_percent, 3) if host else None,
        pressure_some_avg10=sample.pressure.some_avg10 if sample.pressure else None,
        gc_collections=process.gc_collections if process else None,
        gc_objects=process.gc_objects if process else None,
        check_seconds=round(check_seconds, 6),
    )


class StoreRecorder:
    """Owns the store's worker thread, the state directory's lock, the sample and alert buffers and the periodic
    flush and prune."""

    def __init__(
        self,
        store: MemoryStore,
        telemetry: Telemetry,
        *,
        flush_interval: float = 5.0,
        max_buffered: int = 100_000,
        lock: StateDirLock | None = None,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.lock = lock
        """Held from :meth:`open` to :meth:`close`: one agent per state directory."""
        self.problem: str | None = None
        """Why the store is failing now, or None."""
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[HistoryPoint] = []
        self._alerts: list[Alert] = []
        """Alert transitions not written yet, in order (a later record of an id must land after an earlier one)."""
        self._alert_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._since_prune = 0.0

    async def open(self, recent: int) -> tuple[list[Alert], list[HistoryPoint]]:
        """Lock the state directory (``StateDirBusy`` naming the holder), open the store (``StoreError`` when it
        cannot be); returns the firing alerts and the last ``recent`` samples of the previous run, to restore
        state and history."""
        if self.lock is not None:
            self.lock.acquire()
        try:
            await self._call(self.store.open)
            await self._call(self.store.prune)
            active = await self._call(self.store.active_alerts)
            points = await self._call(lambda: self.store.recent(recent))
        except BaseException:
            await self._call(self.store.close)
            if self.lock is not None:
                self.lock.release()
            raise
        return active, points

    def start(self) -> None:
        """Start the periodic flush."""
        self._task = asyncio.get_running_loop().create_task(self._flush_loop(), name="memmon-store-flush")

    async def close(self) -> None:
        """Flush what is buffered, close the store, release the state directory. What cannot be written now is
        dropped and said so in one line with the counts (a failing store is never reported as working again)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
        samples, alerts = len(self._pending), len(self._alerts)
        if samples or alerts:
            log.error(
                "state store %s still fails at shutdown (%s): %d sample(s) and %d alert record(s) could not be "
                "written and are dropped",
                self.store.path,
                self.problem,
                samples,
                alerts,
            )
            self.telemetry.store_errors.inc("dropped_samples", amount=samples)
            self._pending, self._alerts = [], []
        await self._guard("close", self.store.close, proves_store_works=False)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.lock is not None:
            self.lock.release()

    def add_point(self, point: HistoryPoint) -> None:
        """Buffer one sample; the oldest are dropped (and counted) past ``max_buffered`` while the store fails."""
        self._pending.append(point)
        if len(self._pending) > self.max_buffered:
            del self._pending[: len(self._pending) - self.max_buffered]
            self.telemetry.store_errors.inc("dropped_samples")

    def add_alerts(self, alerts: Sequence[Alert]) -> None:
        """Write alert transitions now (queued on the store thread, never awaited by the check); while the store
        fails they are kept, in order, and written at the next flush."""
        self._alerts.extend(alerts)
        if len(self._alerts) > self.max_buffered:
            dropped = len(self._alerts) - self.max_buffered
            del self._alerts[:dropped]
            self.telemetry.store_errors.inc("alerts", amount=dropped)
        self._write_alerts_soon()

    async def flush(self) -> None:
        """Write the buffered samples in one transaction and any alert transitions still pending (both kept for
        retry when the store fails)."""
        if self._alert_task is not None:
            await asyncio.gather(self._alert_task, return_exceptions=True)
        if self._alerts:
            await self._write_alerts()
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        if not await self._guard("samples", lambda: self.store.add_samples(batch)):
            self._pending[:0] = batch

    async def history(self, since: float, target: str | None = None) -> list[HistoryPoint]:
        """Samples since ``since`` (of ``target`` only, when given) from SQLite plus what is still buffered."""
        await self.flush()
        stored = (
            await self._call(lambda: self.store.history(since, target=target)) if self.problem is None else []
        )
        buffered = [
            point
            for point in self._pending
            if point.timestamp >= since and (target is None or point.target == target)
        ]
        return stored + buffered

    async def alerts(self, since: float, active: Sequence[Alert]) -> list[Alert]:
        """Alert records since ``since``; falls back to the alerts in memory when the store fails."""
        try:
            return await self._call(lambda: self.store.alerts(since))
        except (StoreError, sqlite3.Error) as exc:
            self._failed("alerts_query", exc)
            return list(active)

    def _write_alerts_soon(self) -> None:
        """One writer task at a time, so that batches land in the order they came."""
        if self._alert_task is None or self._alert_task.done():
            self._alert_task = asyncio.get_running_loop().create_task(self._write_alerts())

    async def _write_alerts(self) -> None:
        while self._alerts:
            batch, self._alerts = self._alerts, []
            if not await self._guard("alerts", functools.partial(self.store.record_alerts, batch)):
                self._alerts[:0] = batch  # retried at the next flush
                return

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self.lock is not None:
                self.lock.verify()
            await self.flush()
            self._since_prune += self.flush_interval
            if self._since_prune >= PRUNE_EVERY_SECONDS:
                self._since_prune = 0.0
                await self._guard("prune", self.store.prune)

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="memmon-store")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def _guard(
        self, operation: str, fn: Callable[[], object], *, proves_store_works: bool = True
    ) -> bool:
        """Run ``fn`` on the store thread; False (logged once, counted) when it fails. Only a write that succeeds
        ends a failure (closing a read-only file succeeds too, and proves nothing)."""
        try:
            await self._call(fn)
        except (StoreError, sqlite3.Error, OSError) as exc:
            self._failed(operation, exc)
            return False
        if self.problem is not None and proves_store_works:
            log.info("state store works again (%s)", self.store.path)
            self.problem = None
        return True

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.telemetry.store_errors.inc(operation)
        reason = f"{operation} failed: {exc}"
        if self.problem is None:
            log.error(
                "state store %s: %s; monitoring continues, samples and alerts are kept in memory",
                self.store.path,
                reason,
            )
        self.problem = reason
