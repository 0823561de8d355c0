"""A fixed-rate loop that does not drift and does not stack.

Ticks are scheduled at ``start + k * interval`` (not "sleep interval after each run"), so the cadence holds however
long each run takes. A run that outlasts its tick is awaited, never run concurrently with the next: the ticks it
covered are skipped and counted, and a run longer than ``overrun_after`` is reported through ``on_overrun``.
:meth:`trigger` runs a tick at once (a kernel memory event), and ``next_interval`` may shorten the wait
(adaptive polling as headroom shrinks); the schedule then continues from that tick.

Triggers are coalesced: memory thrashing at a limit makes the kernel signal a threshold hundreds of times a
second (478 notifications in the issue 13 report, 8 checks a second against a configured 0.5), and a check per
notification tells nothing the first one did not. A trigger carries a ``rank`` (the agent ranks a threshold
crossing by its height in bytes, anything else 0). It runs a tick at once when its rank is above what the ticks
have served; otherwise it waits for ``last tick start + trigger_gap`` and every trigger meanwhile joins that one
tick (never dropped). What is served: by default the highest rank triggered in the current burst (ticks each
less than ``trigger_gap`` after the previous); the caller may say better after each tick with :meth:`served`
(the agent: just below where a level above the one the check found begins). So a leak climbing through
warning, critical and emergency within milliseconds gets a check at each line, while a storm at one line gets
one check per ``trigger_gap`` (measured: 12 checks in 6 s for 400 to 1400 notifications; 792 before).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

EVENT_GAP_SECONDS = 0.5
"""The ``trigger_gap`` the agent uses (or its check interval when shorter): notifications that cannot raise the
level cost at most two checks a second however many arrive; one that may raise it is never held."""


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
        trigger_gap: float = 0.0,
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
        self.trigger_gap = max(0.0, trigger_gap)
        self.triggered_ticks = 0
        """Ticks run for a trigger (each serving every trigger coalesced into it)."""
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._pending: float | None = None  # highest rank of the triggers not served yet
        self._served = -math.inf  # highest rank served in the current burst
        self._tick_rank: float | None = None  # the rank the running (or latest) tick was triggered for
        self._noise = -math.inf  # highest rank a triggered tick of this burst found to be no news
        self._last_start = -math.inf

    def stop(self) -> None:
        """Ask the loop to end after the current tick; :meth:`run` then returns."""
        self._stop.set()
        self._wake.set()

    def trigger(self, rank: float = 0.0) -> None:
        """Run a tick now (a kernel event said memory moved), or at ``trigger_gap`` after the last tick started
        when one started less than that ago and served a rank at least as high; the fixed schedule resumes after
        it. Safe to call while a tick runs (it is not lost)."""
        self._pending = rank if self._pending is None else max(self._pending, rank)
        self._wake.set()

    def served(self, rank: float) -> None:
        """After a tick: what it found makes triggers ranked up to ``rank`` old news (they are held to one tick
        per ``trigger_gap``) and any ranked higher news (a tick at once). Without it a tick serves the highest
        rank triggered in its burst.

        A tick triggered for a rank above what it then serves found the trigger to be no news (memory thrashing
        at a line: crossed up, down again by the time the tick looked). Triggers up to that rank then wait for
        the burst's ``trigger_gap`` too, or every crossing after a tick that caught the low point would run one
        at once (33 ticks in 6 s measured). A tick that found its trigger true (a leak at the line, the level
        raised) holds nothing back, so a crossing after a restart is never delayed by the one before it."""
        self._served = rank
        if self._tick_rank is not None and rank < self._tick_rank:
            self._noise = max(self._noise, self._tick_rank)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    async def run(self) -> None:
        """Run ticks until stopped."""
        next_at = self.monotonic()
        while not self._stop.is_set():
            started = self.monotonic()
            self._begin(started)
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
            if await self._wait(next_at):  # triggered: tick now, the schedule restarts here
                next_at = min(next_at, self.monotonic())

    def _begin(self, started: float) -> None:
        """A tick starts: it serves the pending triggers; a start ``trigger_gap`` after the previous begins a new
        burst (ranks served or found to be noise before no longer hold triggers back)."""
        if started - self._last_start >= self.trigger_gap:
            self._served = -math.inf
            self._noise = -math.inf
        if self._pending is not None:
            self._served = max(self._served, self._pending)
            self.triggered_ticks += 1
        self._tick_rank = self._pending
        self._pending = None
        self._wake.clear()
        self._last_start = started

    async def _wait(self, next_at: float) -> bool:
        """Sleep until ``next_at`` or a pending trigger is due; True when a trigger (not the schedule) ends it."""
        while not self._stop.is_set():
            deadline = next_at
            triggered = False
            if self._pending is not None:
                held = self._pending <= max(self._served, self._noise)
                due = self._last_start + self.trigger_gap if held else -math.inf
                triggered = due < next_at
                deadline = min(next_at, due)
            timeout = deadline - self.monotonic()
            if timeout <= 0:
                return triggered
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                return triggered
            self._wake.clear()  # a new trigger (or stop): decide again
        return False
