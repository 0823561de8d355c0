"""Delivering alert notifications without losing them and without slowing the check loop.

``submit()`` is called from the check loop and returns at once. For each transition the rate limiter lets
through, one entry per routed channel is written to the durable spool (SQLite, its own worker thread) *before*
any attempt; one worker per channel then delivers what is due, and deletes an entry only once the receiver
accepted it. So an agent killed mid-delivery delivers the rest after a restart (at least once; the idempotency
key ``<alert id>:<state>`` lets receivers drop repeats).

A failed attempt pauses the whole channel (a down receiver is down for every alert): exponential backoff with
"equal jitter" (half the delay fixed, half random), or exactly the receiver's ``Retry-After``. A channel with
``degraded_after`` consecutive failures is reported degraded until a delivery succeeds. An answer a retry cannot
change (HTTP 4xx, a refused recipient) drops the entry, counted and logged as ``rejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from memmon.alerting.channel import Channel, Delivery, DeliveryFailed, Receipt
from memmon.alerting.kinds import is_silent, tracks_state
from memmon.alerting.log import LogChannel
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.spool import AlertSpool, SpoolEntry
from memmon.alerting.testalert import not_configured, send_test_alert
from memmon.model import Alert, Level
from memmon.telemetry import Telemetry

T = TypeVar("T")
log = logging.getLogger("memmon.delivery")


def idempotency_key(alert: Alert) -> str:
    """Identical for every attempt of one transition of one alert, across restarts."""
    return f"{alert.id}:{alert.state}"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): ``min(maximum, initial * 2**(attempt-1))``, equal jitter."""

    initial: float = 1.0
    maximum: float = 300.0
    rng: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure."""
        ceiling: float = min(self.maximum, self.initial * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + float(self.rng()) * ceiling / 2


@dataclass(slots=True)
class ChannelState:
    """What /health and the metrics say about one channel."""

    consecutive_failures: int = 0
    last_error: str | None = None
    last_success_at: float | None = None
    paused_until: float = 0.0
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class ChannelReport:
    """One channel's health, as /health and the metrics show it."""

    name: str
    degraded: bool
    pending: int
    consecutive_failures: int
    last_error: str | None
    last_success_at: float | None


class AlertDispatcher:
    """Routes, rate-limits, spools and delivers; one instance per monitor."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        routes: Mapping[Level, tuple[str, ...]],
        spool: AlertSpool,
        telemetry: Telemetry,
        *,
        limiter: NotificationLimiter,
        send_resolved: Mapping[str, bool] | None = None,
        backoff: Backoff | None = None,
        degraded_after: int = 3,
        attempt_timeout: float = 15.0,
        active_alerts: Callable[[], Iterable[Alert]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channels = dict(channels)
        self.routes = dict(routes)
        self.spool = spool
        self.telemetry = telemetry
        self.limiter = limiter
        self.send_resolved = dict(send_resolved or {})
        self.backoff = backoff or Backoff()
        self.degraded_after = degraded_after
        self.attempt_timeout = attempt_timeout
        self.active_alerts = active_alerts
        self.clock = clock
        self.log_channel = LogChannel()
        self.states = {name: ChannelState() for name in self.channels}
        self.pending: dict[str, int] = dict.fromkeys(self.channels, 0)
        self._wake = {name: asyncio.Event() for name in self.channels}
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._limiter_wake = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (``SpoolError`` if it cannot be) and start a worker per channel; pending deliveries
        of a previous run are resumed."""
        await self._spool(self.spool.open)
        self.pending.update(await self._spool(self.spool.pending))
        loop = asyncio.get_running_loop()
        for name in self.channels:
            self._tasks.append(loop.create_task(self._deliver_loop(name), name=f"memmon-deliver-{name}"))
        self._tasks.append(loop.create_task(self._limiter_loop(), name="memmon-rate-limit"))
        if "alertmanager" in self.channels:
            self._tasks.append(loop.create_task(self._repush_loop(), name="memmon-alertmanager-repush"))
        resumed = sum(self.pending.values())
        if resumed:
            log.info("resuming %d undelivered alert notification(s) from %s", resumed, self.spool.path)

    async def close(self, wait_seconds: float = 2.0) -> None:
        """Give due deliveries ``wait_seconds``, then stop; what is undelivered stays in the spool."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=wait_seconds)
        deadline = time.monotonic() + wait_seconds
        while any(self._due_now(name) for name in self.channels) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # workers own the progress; this only bounds how long shutdown waits
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for channel in self.channels.values():
            await channel.close()
        if self._pool is not None:
            await self._spool(self.spool.close)
            self._pool.shutdown(wait=True)
            self._pool = None

    def _due_now(self, name: str) -> bool:
        return self.pending.get(name, 0) > 0 and self.states[name].paused_until <= self.clock()

    # -- intake ----------------------------------------------------------------------------------------------

    def submit(self, transitions: Iterable[Alert]) -> None:
        """Hand over the transitions of one check; never blocks."""
        notify = [alert for alert in transitions if self.limiter.offer(alert)]
        if self.limiter.next_due_at() is not None:
            self._limiter_wake.set()
        self._notify(notify)

    def _notify(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            silent = is_silent(alert)
            if alert.state == "firing":
                self.telemetry.alerts_notified.inc(alert.severity.label)
            if silent:
                log.debug("%s %s %s ended without a message (%s)", alert.component, alert.severity.label,
                          alert.id, alert.message)  # fmt: skip
            else:
                self.log_channel.write(Delivery(alert, idempotency_key(alert)))
                self.telemetry.deliveries.inc("log", "delivered")
            targets = [
                name
                for name in self.routes.get(alert.severity, ())
                if (alert.state == "firing" or self.send_resolved.get(name, True))
                and (not silent or tracks_state(self.channels.get(name)))
            ]
            if targets:
                task = asyncio.get_running_loop().create_task(self._enqueue(alert, targets))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)

    async def _enqueue(self, alert: Alert, targets: list[str]) -> None:
        key = idempotency_key(alert)
        for name in targets:
            try:
                _entry_id, dropped = await self._spool(partial(self.spool.add, name, key, alert))
            except Exception as exc:  # the spool failing must not stop delivery attempts elsewhere
                self.telemetry.deliveries.inc(name, "spool_error")
                log.error("cannot spool alert %s for %s: %s", alert.id, name, exc)
                continue
            for lost in dropped:
                self.telemetry.deliveries.inc(name, "dropped")
                log.error(
                    "alert spool for %s is full: dropped %s %s alert %s",
                    name, lost.alert.severity.label, lost.alert.state, lost.alert.id,
                )  # fmt: skip
            await self._count_pending(name)
            self._wake[name].set()

    async def _count_pending(self, name: str) -> None:
        self.pending[name] = (await self._spool(self.spool.pending)).get(name, 0)

    # -- delivery --------------------------------------------------------------------------------------------

    async def _deliver_loop(self, name: str) -> None:
        channel = self.channels[name]
        state = self.states[name]
        wake = self._wake[name]
        while True:
            wait = state.paused_until - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            entries = await self._spool(partial(self.spool.due, name, self.clock(), 20))
            if not entries:
                next_at = await self._spool(partial(self.spool.next_due_at, name))
                timeout = None if next_at is None else max(0.0, next_at - self.clock())
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
                continue
            for entry in entries:
                if not await self._attempt(name, channel, state, entry):
                    break

    async def _attempt(self, name: str, channel: Channel, state: ChannelState, entry: SpoolEntry) -> bool:
        """One attempt; True to go on with the next entry, False when the channel must pause."""
        delivery = Delivery(entry.alert, entry.idempotency_key, attempt=entry.attempts + 1)
        try:
            async with asyncio.timeout(self.attempt_timeout):
                await channel.send(delivery)
        except (DeliveryFailed, TimeoutError) as exc:
            failure = exc if isinstance(exc, DeliveryFailed) else DeliveryFailed("no answer in time")
            return await self._failed(name, state, entry, failure)
        except Exception as exc:  # a channel bug: retry like a transient failure, with the traceback logged
            log.exception("channel %s raised while delivering alert %s", name, entry.alert.id)
            return await self._failed(name, state, entry, DeliveryFailed(f"{type(exc).__name__}: {exc}"))
        await self._spool(partial(self.spool.delete, entry.id))
        await self._count_pending(name)
        self.telemetry.deliveries.inc(name, "delivered")
        if state.degraded:
            log.info("alert channel %s delivers again (after %d failures)", name, state.consecutive_failures)
        state.consecutive_failures, state.degraded, state.last_error = 0, False, None
        state.last_success_at = self.clock()
        return True

    async def _failed(
        self, name: str, state: ChannelState, entry: SpoolEntry, failure: DeliveryFailed
    ) -> bool:
        alert = entry.alert
        if not failure.retryable:
            await self._spool(partial(self.spool.delete, entry.id))
            await self._count_pending(name)
            self.telemetry.deliveries.inc(name, "rejected")
            log.error("%s rejected alert %s for good: %s", name, alert.id, failure.reason)
            return True
        delay = (
            failure.retry_after if failure.retry_after is not None else self.backoff.delay(entry.attempts + 1)
        )
        next_at = self.clock() + delay
        await self._spool(partial(self.spool.failed, entry.id, next_attempt_at=next_at, error=failure.reason))
        self.telemetry.deliveries.inc(name, "failed")
        state.consecutive_failures += 1
        state.last_error = failure.reason
        state.paused_until = next_at
        if not state.degraded and state.consecutive_failures >= self.degraded_after:
            state.degraded = True
            log.error(
                "alert channel %s degraded after %d failed attempts: %s; retrying, alerts kept in the spool",
                name, state.consecutive_failures, failure.reason,
            )  # fmt: skip
        elif not state.degraded:
            log.warning(
                "%s delivery of alert %s failed (%s); retry in %.1fs", name, alert.id, failure.reason, delay
            )
        return False

    # -- timers ----------------------------------------------------------------------------------------------

    async def _limiter_loop(self) -> None:
        """Sends the transitions the rate limiter held back once their interval ends."""
        while True:
            due_at = self.limiter.next_due_at()
            self._limiter_wake.clear()
            timeout = None if due_at is None else max(0.0, due_at - self.clock())
            try:
                # Not asyncio.wait_for: on Python 3.11 a cancel that arrives while it cancels its inner task at
                # timeout 0 comes out as TimeoutError, so the loop would go on and shutdown would hang
                # (bpo-42130); asyncio.timeout tells the two apart.
                async with asyncio.timeout(timeout):
                    await self._limiter_wake.wait()
            except TimeoutError:
                self._notify(self.limiter.due())

    async def _repush_loop(self) -> None:
        """Alertmanager resolves alerts it stops hearing about: re-push the firing ones routed there."""
        channel = self.channels["alertmanager"]
        interval = float(getattr(channel, "repush_seconds", 60.0))
        while True:
            await asyncio.sleep(interval)
            firing = [a for a in self.active_alerts() if "alertmanager" in self.routes.get(a.severity, ())]
            if not firing:
                continue
            try:
                await channel.repush(firing)  # type: ignore[attr-defined]
                self.telemetry.deliveries.inc("alertmanager", "repushed")
            except DeliveryFailed as exc:
                self.telemetry.deliveries.inc("alertmanager", "repush_failed")
                log.warning("alertmanager re-push of %d alert(s) failed: %s", len(firing), exc.reason)

    # -- on request ------------------------------------------------------------------------------------------

    async def send_test(self, name: str, alert: Alert) -> Receipt:
        """Send ``alert`` through one channel now, bypassing spool and rate limit (``memmon test-alert``);
        ``KeyError`` when the channel is not configured, ``DeliveryFailed`` when the receiver refuses."""
        channel: Channel | None = self.log_channel if name == "log" else self.channels.get(name)
        if channel is None:
            raise KeyError(not_configured(name, self.channels))
        return await send_test_alert(channel, alert, self.attempt_timeout)

    def report(self) -> dict[str, ChannelReport]:
        """Every delivery channel's health and pending count."""
        return {
            name: ChannelReport(
                name,
                state.degraded,
                self.pending.get(name, 0),
                state.consecutive_failures,
                state.last_error,
                state.last_success_at,
            )
            for name, state in self.states.items()
        }

    def degraded(self) -> dict[str, str]:
        """Channel -> reason, for the channels currently degraded."""
        return {
            name: f"{state.consecutive_failures} failed attempts; last: {state.last_error}"
            for name, state in self.states.items()
            if state.degraded
        }

    async def _spool(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="memmon-spool")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
