"""One costly computation shared: callers that ask while it runs, or soon after it ran, get its result.

For work that is expensive and stops the world, such as ``gc.get_objects()`` (O(heap), holding the GIL: every
thread waits), where a burst of requests must not multiply the cost: the first caller starts the computation in a
thread; concurrent callers await the same task (shielded: one caller's cancellation does not cancel it for the
others); callers within ``reuse_seconds`` of its start get the finished result again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["SharedResult"]


class SharedResult(Generic[T]):
    """``await get(compute)``: ``(compute() run in a thread, epoch seconds it finished)``, shared as above."""

    def __init__(
        self,
        reuse_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reuse_seconds = reuse_seconds
        self.clock = clock
        self.monotonic = monotonic
        self._result: tuple[T, float] | None = None
        self._task: asyncio.Task[tuple[T, float]] | None = None
        self._started_at = -math.inf

    async def get(self, compute: Callable[[], T]) -> tuple[T, float]:
        """The running computation's result, the last one when it started less than ``reuse_seconds`` ago, or
        a new one's. On the event loop; ``compute`` runs in a worker thread."""
        if self._task is None:
            if self._result is not None and self.monotonic() - self._started_at < self.reuse_seconds:
                return self._result
            self._started_at = self.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._compute(compute))
        return await asyncio.shield(self._task)

    async def _compute(self, compute: Callable[[], T]) -> tuple[T, float]:
        try:
            value = await asyncio.to_thread(compute)
            self._result = (value, self.clock())
            return self._result
        finally:
            self._task = None
