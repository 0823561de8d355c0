"""What the health API and the library read of the past: a target's points and the alert log.

A target's points come from its in-memory ring when the ring reaches back far enough (the hot path: no thread, no
SQLite), else from the store: whole through the recorder's one writer thread (the library's unbounded
``history_since``), or downsampled inside SQLite on the reader's own threads and connections (the HTTP history:
memory bounded by ``max_points``, never queued behind a flush or a check). When the store cannot be read, the
ring's points alone answer, and the problem is logged once per distinct reason, not at every dashboard poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from memmon.model import Alert, HistoryPoint
from memmon.storage.history import HistoryRing, downsample
from memmon.storage.reads import HistoryReader
from memmon.storage.recorder import StoreRecorder
from memmon.storage.store import StoreError

__all__ = ["HistoryQueries"]

log = logging.getLogger("memmon.monitor")


class HistoryQueries:
    """Reads of one agent's history: rings first, then the store at ``path`` through ``recorder`` or
    :attr:`reader`. :meth:`reopen` after the store is opened, :meth:`close` before it is closed."""

    def __init__(self, recorder: StoreRecorder, path: Path) -> None:
        self.recorder = recorder
        self.path = path
        self.reader = HistoryReader(path)
        """The downsampling reader (its own threads and read-only connections)."""
        self._problem = ""

    def reopen(self) -> None:
        """A fresh reader (the agent started again after :meth:`close`)."""
        self.reader = HistoryReader(self.path)

    def close(self) -> None:
        """End the reads now (each running query is interrupted), so that nothing queues before a final flush."""
        self.reader.close()

    async def points_since(self, ring: HistoryRing, target: str, since: float) -> list[HistoryPoint]:
        """Every point of ``target`` since ``since`` (epoch seconds): its ring's when it covers the window, else
        the store's (unbounded; through the writer's thread)."""
        if ring.covers(since):
            return list(ring.since(since))
        points: list[HistoryPoint] = await self.recorder.history(since, target=target)
        return points

    async def alerts_since(self, since: float, active: Sequence[Alert], target: str | None) -> list[Alert]:
        """Alert records started, resolved or still firing (``active``) since ``since``, newest first, of one
        target or of all (None)."""
        alerts: list[Alert] = await self.recorder.alerts(since, active)
        return alerts if target is None else [alert for alert in alerts if alert.target == target]

    async def window(
        self, ring: HistoryRing, target: str, since: float, max_points: int
    ) -> tuple[int, list[HistoryPoint]]:
        """``target``'s points since ``since`` as ``(how many, at most max_points of them: peaks and the newest
        kept)``: from its ring when it covers the window; else downsampled inside SQLite (interrupted when the
        caller is cancelled) plus the ring's points not yet in the store; the ring's alone when the store cannot
        be read."""
        if ring.covers(since):
            return await _downsampled(ring.since(since), max_points)
        try:
            total, stored = await self.reader.window(since, max_points, target=target)
        except StoreError as exc:
            if str(exc) != self._problem:
                log.warning("history query: %s; answering from memory", exc)
            self._problem = str(exc)
            return await _downsampled(ring.since(since), max_points)
        self._problem = ""
        newest = stored[-1].timestamp if stored else -math.inf
        unflushed = [point for point in ring.since(since) if point.timestamp > newest]
        if not unflushed:
            return total, stored
        return total + len(unflushed), await asyncio.to_thread(downsample, stored + unflushed, max_points)


async def _downsampled(points: list[HistoryPoint], max_points: int) -> tuple[int, list[HistoryPoint]]:
    """``(len(points), points downsampled)``, off the event loop (a day of points takes milliseconds)."""
    return len(points), await asyncio.to_thread(downsample, points, max_points)
