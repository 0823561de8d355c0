"""The deliveries waiting for each channel: in the durable spool, or in memory while the spool cannot be written.

:meth:`DeliveryBacklog.add` writes a transition for a channel to the spool (SQLite) *before* any attempt, and
:meth:`~DeliveryBacklog.forget` removes it only once the receiver accepted (or rejected) it, so an agent killed
mid-delivery delivers the rest after a restart. Every spool call runs in ONE worker thread (``memmon-spool``),
never on the event loop; the event loop owns this object.

When the spool cannot be written (disk full, file system read-only), nothing is lost while the process lives:
the entry is held in memory (:class:`~memmon.alerting.fallback.MemorySpool`, bounded, negative ids) and delivered
from there; :meth:`~DeliveryBacklog.problem` says why the spool is degraded, and every ``retry_seconds``
(:meth:`~DeliveryBacklog.keep_respooling`) a probe write tests the spool again: once it works, the held entries
are spooled. An entry whose delete failed after delivery is never handed out again, and is deleted once the
spool can be written.

The channel workers (:mod:`memmon.alerting.channelworker`) take their entries from here: each channel has a lock
(held entries are moved into the spool only between a worker's batches) and a wake-up when entries arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from memmon.alerting.fallback import MemorySpool
from memmon.alerting.spool import AlertSpool, SpoolEntry
from memmon.model import Alert
from memmon.telemetry import Telemetry

T = TypeVar("T")
log = logging.getLogger("memmon.delivery")

BATCH_SIZE = 20
"""Entries a worker takes at a time."""


class DeliveryBacklog:
    """Pending deliveries per channel, spooled or held in memory."""

    def __init__(
        self,
        channels: Iterable[str],
        spool: AlertSpool,
        telemetry: Telemetry,
        *,
        memory_max_entries: int,
        retry_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.channels = tuple(channels)
        self.spool = spool
        self.telemetry = telemetry
        self.memory = MemorySpool(memory_max_entries, clock=clock)
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.spool_problem: str | None = None
        """Why the spool cannot be written, while it cannot."""
        self._spooled: dict[str, int] = dict.fromkeys(self.channels, 0)
        self._undeleted: set[int] = set()
        """Spool ids delivered (or rejected) whose delete failed: never attempted again, deleted once possible."""
        self._owner: dict[int, str] = {}
        """Channel of each id in ``_undeleted``."""
        self._locks = {name: asyncio.Lock() for name in self.channels}
        self._wake = {name: asyncio.Event() for name in self.channels}
        self._pool: ThreadPoolExecutor | None = None

    async def open(self) -> int:
        """Open the spool (``SpoolError`` if it cannot be); the number of entries a previous run left there."""
        await self._call(self.spool.open)
        self._spooled.update(await self._call(self.spool.pending))
        return sum(self._spooled.values())

    async def close(self) -> None:
        """Spool what memory holds if possible (logging what is lost), then close the spool and its thread."""
        if len(self.memory):
            await self.respool()
        if len(self.memory):
            log.error(
                "%d alert notification(s) held in memory were neither delivered nor spooled (%s): lost at exit",
                len(self.memory), self.spool_problem,
            )  # fmt: skip
        if self._pool is not None:
            await self._call(self.spool.close)
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- intake ----------------------------------------------------------------------------------------------

    async def add(self, name: str, key: str, alert: Alert) -> None:
        """Spool ``alert`` for channel ``name`` (in memory when the spool cannot be written) and wake its worker;
        entries the bound drops to make room are counted and logged."""
        try:
            _entry_id, dropped = await self._call(partial(self.spool.add, name, key, alert))
        except Exception as exc:  # a full or read-only disk: deliver from memory rather than lose it
            self.telemetry.deliveries.inc(name, "spool_error")
            self._failed(exc)
            log.warning("alert %s for %s held in memory: the spool cannot be written", alert.id, name)
            _entry_id, dropped = self.memory.add(name, key, alert)
        for lost in dropped:
            self.telemetry.deliveries.inc(name, "dropped")
            log.error(
                "alert spool for %s is full: dropped %s %s alert %s",
                name, lost.alert.severity.label, lost.alert.state, lost.alert.id,
            )  # fmt: skip
        await self._count_pending(name)
        self._wake[name].set()

    def pending(self, name: str) -> int:
        """Deliveries of channel ``name`` waiting: in the spool (as last counted) and in memory."""
        undeleted = sum(1 for entry_id in self._undeleted if self._owner.get(entry_id) == name)
        return max(0, self._spooled.get(name, 0) - undeleted) + self.memory.count(name)

    def held(self, name: str) -> int:
        """Of :meth:`pending`, the deliveries held in memory only."""
        return self.memory.count(name)

    def problem(self) -> str | None:
        """Why the spool is degraded (it cannot be written), None while it is not."""
        if self.spool_problem is None:
            return None
        return (
            f"cannot write {self.spool.path}: {self.spool_problem}; "
            f"{len(self.memory)} notification(s) held in memory"
        )

    # -- for the channel workers -----------------------------------------------------------------------------

    def lock(self, name: str) -> asyncio.Lock:
        """Held by channel ``name``'s worker during a batch: the respool moves its held entries only between."""
        return self._locks[name]

    async def wait(self, name: str, within: float | None) -> None:
        """Until entries are added for channel ``name``, or ``within`` seconds (None: no limit)."""
        wake = self._wake[name]
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), within)

    async def due(self, name: str) -> list[SpoolEntry]:
        """Due entries of the spool and of memory: highest severity first, then oldest."""
        now = self.clock()
        try:
            spooled = await self._call(partial(self.spool.due, name, now, BATCH_SIZE + len(self._undeleted)))
        except Exception as exc:
            self._failed(exc)
            spooled = []
        spooled = [entry for entry in spooled if entry.id not in self._undeleted]
        entries = spooled + self.memory.due(name, now, BATCH_SIZE)
        return sorted(entries, key=lambda e: (-int(e.alert.severity), e.created_at))[:BATCH_SIZE]

    async def next_due_at(self, name: str) -> float | None:
        """When the next entry of channel ``name`` is due (epoch seconds), None when it has none."""
        try:
            spooled = await self._call(partial(self.spool.next_due_at, name))
        except Exception as exc:
            self._failed(exc)
            spooled = self.clock() + self.retry_seconds
        times = [t for t in (spooled, self.memory.next_due_at(name)) if t is not None]
        return min(times) if times else None

    async def forget(self, name: str, entry: SpoolEntry) -> None:
        """Remove a delivered or rejected entry from wherever it is held."""
        if entry.id < 0:
            self.memory.delete(entry.id)
        else:
            try:
                await self._call(partial(self.spool.delete, entry.id))
            except Exception as exc:  # never deliver it twice: skip it until the delete succeeds
                self._failed(exc)
                self._undeleted.add(entry.id)
                self._owner[entry.id] = name
        await self._count_pending(name)

    async def postpone(self, entry: SpoolEntry, next_attempt_at: float, error: str) -> None:
        """Record a failed attempt of ``entry``: retried at ``next_attempt_at``."""
        if entry.id < 0:
            self.memory.failed(entry.id, next_attempt_at=next_attempt_at, error=error)
        else:
            try:
                await self._call(
                    partial(self.spool.failed, entry.id, next_attempt_at=next_attempt_at, error=error)
                )
            except Exception as exc:  # the channel's pause still spaces the retries
                self._failed(exc)

    # -- recovery --------------------------------------------------------------------------------------------

    async def keep_respooling(self) -> None:
        """While the spool cannot be written: probe it every ``retry_seconds``, spool what memory holds."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            if self.spool_problem is not None or len(self.memory) or self._undeleted:
                await self.respool()

    async def respool(self) -> None:
        """One try: probe-write the spool, finish failed deletes, move held entries into the spool."""
        try:
            await self._call(self.spool.probe)
            for entry_id in sorted(self._undeleted):
                await self._call(partial(self.spool.delete, entry_id))
                self._undeleted.discard(entry_id)
                self._owner.pop(entry_id, None)
            moved = 0
            for name in self.channels:
                async with self._locks[name]:
                    for entry in self.memory.entries(name):
                        add = partial(self.spool.add, name, entry.idempotency_key, entry.alert,
                                      not_before=entry.next_attempt_at)  # fmt: skip
                        await self._call(add)
                        self.memory.delete(entry.id)
                        moved += 1
                    await self._count_pending(name)
                    self._wake[name].set()
        except Exception as exc:
            self._failed(exc)
            return
        if self.spool_problem is not None:
            log.warning("alert spool %s can be written again: %d held notification(s) spooled", self.spool.path,
                        moved)  # fmt: skip
        self.spool_problem = None

    async def _count_pending(self, name: str) -> None:
        try:
            self._spooled[name] = (await self._call(self.spool.pending)).get(name, 0)
        except Exception as exc:  # keep the last count; the problem is reported once by _failed
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if self.spool_problem is None:
            log.error(
                "alert spool %s cannot be written (%s): holding notifications in memory and retrying every %gs",
                self.spool.path, exc, self.retry_seconds,
            )  # fmt: skip
        self.spool_problem = str(exc)

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="memmon-spool")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
