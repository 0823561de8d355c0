"""A concurrency limiter the app wraps its work in, shrunk by memmon under memory pressure (action ``throttle``).

Fewer requests in flight means fewer live buffers: at critical/emergency memmon lowers the limit so that new
work waits while the work in progress finishes and frees its memory; when the level clears the full capacity
comes back and the waiters go in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from types import TracebackType

from memmon.model import ActionResult, Level, frozen_mapping


class _Waiter:
    """One queued acquire: a thread (``loop`` None, woken by the condition) or a task (woken via its future)."""

    __slots__ = ("future", "granted", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, future: asyncio.Future[None] | None = None
    ) -> None:
        self.loop = loop
        self.future = future
        self.granted = False
        """Set under the lock when a slot is handed to this waiter (it then owns the slot)."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _on_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Throttle:
    """A concurrency limiter the app wraps work in; memmon shrinks its capacity at critical/emergency and
    restores it when the level clears.

    Usable from asyncio (``async with monitor.throttle:``) and from threads (``with monitor.throttle:``), the
    same instance in both. Waiters of both kinds queue in one FIFO line: a freed slot goes to the longest
    waiting one, and a newcomer never overtakes the queue. Shrinking never cancels work in progress; it only
    stops new entries until fewer than ``limit`` are inside. Do not use ``with`` (a blocking acquire) on a
    thread that runs an event loop: it would freeze the loop, so it raises ``RuntimeError`` there.
    """

    def __init__(
        self, capacity: int = 64, *, critical_factor: float = 0.5, emergency_factor: float = 0.1
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        for label, factor in (("critical_factor", critical_factor), ("emergency_factor", emergency_factor)):
            if not 0 < factor <= 1:
                raise ValueError(f"{label} must be in (0, 1], got {factor!r}")
        self._capacity = capacity
        self._factors = {Level.CRITICAL: critical_factor, Level.EMERGENCY: emergency_factor}
        self._level = Level.OK
        self._limit = capacity
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        self._cond = threading.Condition(threading.Lock())

    @property
    def capacity(self) -> int:
        """The limit when memory is fine."""
        return self._capacity

    @property
    def level(self) -> Level:
        """The level of the latest :meth:`set_level`."""
        return self._level

    @property
    def limit(self) -> int:
        """How many may be inside at once now."""
        return self._limit

    @property
    def in_use(self) -> int:
        """How many are inside (may exceed ``limit`` just after a shrink)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """How many wait to enter."""
        return len(self._waiters)

    def limit_for(self, level: Level) -> int:
        """``max(1, floor(capacity * factor))`` at critical/emergency, the full capacity otherwise."""
        factor = self._factors.get(level)
        return self._capacity if factor is None else max(1, math.floor(self._capacity * factor))

    def set_level(self, level: Level) -> ActionResult:
        """Apply the limit of ``level``; raising it lets in as many waiters as now fit."""
        started_at = time.time()
        start = time.monotonic()
        limit = self.limit_for(level)
        with self._cond:
            previous = self._limit
            self._level = level
            self._limit = limit
            self._grant_locked()
            in_use = self._in_use
        return ActionResult(
            action="throttle",
            success=True,
            started_at=started_at,
            duration_seconds=time.monotonic() - start,
            detail=frozen_mapping({"limit": limit, "previous_limit": previous, "in_use": in_use}),
        )

    async def acquire(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - mirrors acquire_blocking
        """Wait for a slot; False when ``timeout`` seconds pass first (``timeout <= 0`` only tries)."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._take_locked():
                return True
            if timeout is not None and timeout <= 0:
                return False
            future: asyncio.Future[None] = loop.create_future()
            waiter = _Waiter(loop, future)
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            with self._cond:
                if waiter.granted:  # the slot arrived as the time ran out: keep it
                    return True
                self._forget_locked(waiter)
            return False
        except BaseException:
            self._abandon(waiter)
            raise
        return True

    def acquire_blocking(self, timeout: float | None = None) -> bool:
        """Block the calling thread until a slot is free; False when ``timeout`` seconds pass first."""
        with self._cond:
            if self._take_locked():
                return True
            if timeout is not None and timeout <= 0:
                return False
            if _on_running_loop():
                raise RuntimeError("a blocking acquire would freeze the event loop; use 'async with' instead")
            waiter = _Waiter()
            self._waiters.append(waiter)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while not waiter.granted:
                    if deadline is None:
                        self._cond.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._forget_locked(waiter)
                        return False
                    self._cond.wait(remaining)
            except BaseException:
                if waiter.granted:
                    self._release_locked()
                else:
                    self._forget_locked(waiter)
                raise
            return True

    def release(self) -> None:
        """Give a slot back; ``RuntimeError`` when none is held."""
        with self._cond:
            self._release_locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __enter__(self) -> None:
        self.acquire_blocking()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Throttle(limit={self._limit}/{self._capacity}, in_use={self._in_use}, waiting={len(self._waiters)})"

    def _take_locked(self) -> bool:
        if self._waiters or self._in_use >= self._limit:
            return False
        self._in_use += 1
        return True

    def _release_locked(self) -> None:
        if self._in_use <= 0:
            raise RuntimeError("Throttle.release() called more often than acquire")
        self._in_use -= 1
        self._grant_locked()

    def _grant_locked(self) -> None:
        """Hand free slots to the waiters at the head of the line."""
        woke_threads = False
        while self._waiters and self._in_use < self._limit:
            waiter = self._waiters.popleft()
            if waiter.loop is None:
                woke_threads = True
            else:
                assert waiter.future is not None
                try:
                    waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
                except RuntimeError:  # its loop is closed: nobody is left to take the slot
                    continue
            waiter.granted = True
            self._in_use += 1
        if woke_threads:
            self._cond.notify_all()

    def _forget_locked(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):  # already handed a slot, or dropped with its closed loop
            self._waiters.remove(waiter)

    def _abandon(self, waiter: _Waiter) -> None:
        """A cancelled task gives back the slot it was handed, or leaves the line."""
        with self._cond:
            if waiter.granted:
                self._release_locked()
            else:
                self._forget_locked(waiter)
