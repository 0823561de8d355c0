"""A fixed-rate loop that does not drift and does not stack.

Ticks are scheduled at ``start + k * interval`` (not "sleep interval after each run"), so the cadence holds however
long each run takes. A run that outlasts its tick is awaited, never run concurrently with the next: the ticks it
covered are skipped and counted, and a run longer than ``overrun_after`` is reported through ``on_overrun``.
:meth:`trigger` runs a tick at once (a kernel memory event), and ``next_interval`` may shorten the wait
(adaptive polling as headroom shrinks); the schedule then continues from that tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable


class FixedRateLoop:
    """Calls ``tick()`` every ``interval`` seconds until :meth:`stop`; exceptions are logged, never fatal."""

    def __init__(
        self,
        tick: Callable[[], Awaitable[object]],
        interval: float,
        *,
        overrun_after: float | None = None,
        on_overrun: Callable[[float, int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        next_interval: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.tick = tick
        self.interval = interval
        self.overrun_after = overrun_after if overrun_after is not None else interval
        self.on_overrun = on_overrun
        self.on_error = on_error
        self.monotonic = monotonic
        self.logger = logger or logging.getLogger("memmon.loop")
        self.last_completed: float | None = None
        """Monotonic time the latest tick finished (successfully or not)."""
        self.skipped_ticks = 0
        self.next_interval = next_interval
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to end after the current tick; :meth:`run` then returns."""
        self._stop.set()
        self._wake.set()

    def trigger(self) -> None:
        """Run the next tick now (a kernel event said memory moved); the fixed schedule resumes after it."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    async def run(self) -> None:
        """Run ticks until stopped."""
        next_at = self.monotonic()
        while not self._stop.is_set():
            started = self.monotonic()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad check must not end monitoring
                self.logger.exception("check failed: %s", exc)
                if self.on_error is not None:
                    self.on_error(exc)
            finished = self.monotonic()
            self.last_completed = finished
            next_at += self.interval
            skipped = 0
            if next_at < finished:
                skipped = math.ceil((finished - next_at) / self.interval)
                next_at += skipped * self.interval
                self.skipped_ticks += skipped
            duration = finished - started
            if duration > self.overrun_after:
                self.logger.warning(
                    "check took %.3fs (limit %.3fs); %d tick(s) skipped, not stacked",
                    duration,
                    self.overrun_after,
                    skipped,
                )
                if self.on_overrun is not None:
                    self.on_overrun(duration, skipped)
            if self.next_interval is not None:
                # Adaptive polling: an earlier tick when the hint says memory nears its limit.
                next_at = min(next_at, finished + self.next_interval())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, next_at - self.monotonic()))
            if (
                self._wake.is_set()
            ):  # triggered (also while the tick ran): tick now, the schedule restarts here
                self._wake.clear()
                next_at = min(next_at, self.monotonic())
