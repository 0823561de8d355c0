"""Delivering alert notifications without losing them and without slowing the check loop.

``submit()`` is called from the check loop and returns at once. For each transition the rate limiter lets
through, one entry per routed channel is written to the durable spool (SQLite, its own worker thread) *before*
any attempt; one worker per channel then delivers what is due, and deletes an entry only once the receiver
accepted it. So an agent killed mid-delivery delivers the rest after a restart (at least once; the idempotency
key ``<alert id>:<state>`` lets receivers drop repeats).

A failed attempt pauses the whole channel (a down receiver is down for every alert): exponential backoff with
"equal jitter" (half the delay fixed, half random), or exactly the receiver's ``Retry-After``. A channel with
``degraded_after`` consecutive failures is reported degraded until a delivery succeeds. An answer a retry cannot
change (HTTP 4xx, a refused recipient) drops the entry, counted and logged as ``rejected``, and shows the
channel ``failing`` until a delivery succeeds (a rejection usually means the channel's configuration is wrong).

When the spool cannot be written (disk full, file system read-only), nothing is lost while the process lives:
the transition is held in memory (:class:`~memmon.alerting.fallback.MemorySpool`, bounded) and delivered from
there; the spool is reported degraded (``alerting.spool``), each channel holding such entries too, and every
``spool_retry_seconds`` a probe write tests the spool again: once it works, the held entries are spooled.

Every reason and receipt detail passes :func:`~memmon.alerting.redaction.send_redacted` first: what /health,
the log and the test-alert answer show is scrubbed of credentials.
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

from memmon.alerting.channel import Channel, Delivery, DeliveryFailed, Receipt, StatefulChannel
from memmon.alerting.fallback import DEFAULT_MAX_ENTRIES, MemorySpool
from memmon.alerting.kinds import is_silent, tracks_state
from memmon.alerting.log import LogChannel
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.redaction import redactor_for, send_redacted
from memmon.alerting.spool import AlertSpool, SpoolEntry
from memmon.alerting.testalert import not_configured, send_test_alert
from memmon.kits.redaction import Redactor, redacted_traceback
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
    rejected: bool = False
    """The last answer was a final rejection: the channel is failing until a delivery succeeds."""


@dataclass(frozen=True, slots=True)
class ChannelReport:
    """One channel's health, as /health and the metrics show it."""

    name: str
    degraded: bool
    pending: int
    consecutive_failures: int
    last_error: str | None
    last_success_at: float | None
    state: str = "ok"
    """``ok``; ``degraded`` (retrying, or holding deliveries in memory only); ``failing`` (deliveries rejected)."""
    in_memory: int = 0
    """Of ``pending``, how many are held in memory only because the spool cannot be written."""


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
        memory_max_entries: int = DEFAULT_MAX_ENTRIES,
        spool_retry_seconds: float = 2.0,
        target_routes: Mapping[str, Mapping[Level, tuple[str, ...]]] | None = None,
    ) -> None:
        self.channels = dict(channels)
        self.routes = dict(routes)
        self.target_routes = {target: dict(own) for target, own in (target_routes or {}).items()}
        """Routes of the targets that have their own (``targets[].alert_levels``), by target name."""
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
        self.memory = MemorySpool(memory_max_entries, clock=clock)
        self.spool_retry_seconds = spool_retry_seconds
        self.spool_problem: str | None = None
        """Why the spool cannot be written, while it cannot."""
        self._spooled: dict[str, int] = dict.fromkeys(self.channels, 0)
        self._undeleted: set[int] = set()
        """Spool ids delivered (or rejected) whose delete failed: never attempted again, deleted once possible."""
        self._owner: dict[int, str] = {}
        """Channel of each id in ``_undeleted``."""
        self._locks = {name: asyncio.Lock() for name in self.channels}
        self._redactors: dict[str, Redactor] = {name: redactor_for(ch) for name, ch in self.channels.items()}
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
        self._spooled.update(await self._spool(self.spool.pending))
        loop = asyncio.get_running_loop()
        for name in self.channels:
            self._tasks.append(loop.create_task(self._deliver_loop(name), name=f"memmon-deliver-{name}"))
        self._tasks.append(loop.create_task(self._limiter_loop(), name="memmon-rate-limit"))
        self._tasks.append(loop.create_task(self._respool_loop(), name="memmon-respool"))
        for name, channel in self.channels.items():
            if isinstance(channel, StatefulChannel):
                repush = self._repush_loop(name, channel)
                self._tasks.append(loop.create_task(repush, name=f"memmon-{name}-repush"))
        resumed = sum(self._spooled.values())
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
        if len(self.memory):
            await self._respool()
        if len(self.memory):
            log.error(
                "%d alert notification(s) held in memory were neither delivered nor spooled (%s): lost at exit",
                len(self.memory), self.spool_problem,
            )  # fmt: skip
        if self._pool is not None:
            await self._spool(self.spool.close)
            self._pool.shutdown(wait=True)
            self._pool = None

    def routes_of(self, alert: Alert) -> tuple[str, ...]:
        """The channels an alert goes to: its target's own routes when it has them, else the global ones."""
        routes = self.target_routes.get(alert.target, self.routes)
        return routes.get(alert.severity, ())

    def _due_now(self, name: str) -> bool:
        return self.pending(name) > 0 and self.states[name].paused_until <= self.clock()

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
                for name in self.routes_of(alert)
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
            except Exception as exc:  # a full or read-only disk: deliver from memory rather than lose it
                self.telemetry.deliveries.inc(name, "spool_error")
                self._spool_failed(exc)
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

    async def _count_pending(self, name: str) -> None:
        try:
            self._spooled[name] = (await self._spool(self.spool.pending)).get(name, 0)
        except Exception as exc:  # keep the last count; the problem is reported once by _spool_failed
            self._spool_failed(exc)

    def pending(self, name: str) -> int:
        """Deliveries of channel ``name`` waiting: in the spool (as last counted) and in memory."""
        undeleted = sum(1 for entry_id in self._undeleted if self._owner.get(entry_id) == name)
        return max(0, self._spooled.get(name, 0) - undeleted) + self.memory.count(name)

    def _spool_failed(self, exc: BaseException) -> None:
        if self.spool_problem is None:
            log.error(
                "alert spool %s cannot be written (%s): holding notifications in memory and retrying every %gs",
                self.spool.path, exc, self.spool_retry_seconds,
            )  # fmt: skip
        self.spool_problem = str(exc)

    # -- delivery --------------------------------------------------------------------------------------------

    async def _deliver_loop(self, name: str) -> None:
        channel = self.channels[name]
        state = self.states[name]
        wake = self._wake[name]
        while True:
            wait = state.paused_until - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._locks[name]:  # the respool task moves held entries only between batches
                entries = await self._due(name)
                for entry in entries:
                    if not await self._attempt(name, channel, state, entry):
                        break
            if entries:
                continue
            next_at = await self._next_due_at(name)
            timeout = None if next_at is None else max(0.0, next_at - self.clock())
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    async def _due(self, name: str) -> list[SpoolEntry]:
        """Due entries of the spool and of memory: highest severity first, then oldest."""
        now = self.clock()
        try:
            spooled = await self._spool(partial(self.spool.due, name, now, 20 + len(self._undeleted)))
        except Exception as exc:
            self._spool_failed(exc)
            spooled = []
        spooled = [entry for entry in spooled if entry.id not in self._undeleted]
        entries = spooled + self.memory.due(name, now, 20)
        return sorted(entries, key=lambda e: (-int(e.alert.severity), e.created_at))[:20]

    async def _next_due_at(self, name: str) -> float | None:
        try:
            spooled = await self._spool(partial(self.spool.next_due_at, name))
        except Exception as exc:
            self._spool_failed(exc)
            spooled = self.clock() + self.spool_retry_seconds
        times = [t for t in (spooled, self.memory.next_due_at(name)) if t is not None]
        return min(times) if times else None

    async def _forget(self, name: str, entry: SpoolEntry) -> None:
        """Remove a delivered or rejected entry from wherever it is held."""
        if entry.id < 0:
            self.memory.delete(entry.id)
        else:
            try:
                await self._spool(partial(self.spool.delete, entry.id))
            except Exception as exc:  # never deliver it twice: skip it until the delete succeeds
                self._spool_failed(exc)
                self._undeleted.add(entry.id)
                self._owner[entry.id] = name
        await self._count_pending(name)

    async def _attempt(self, name: str, channel: Channel, state: ChannelState, entry: SpoolEntry) -> bool:
        """One attempt; True to go on with the next entry, False when the channel must pause."""
        delivery = Delivery(entry.alert, entry.idempotency_key, attempt=entry.attempts + 1)
        try:
            async with asyncio.timeout(self.attempt_timeout):
                await send_redacted(channel, delivery, self._redactors[name])
        except (DeliveryFailed, TimeoutError) as exc:
            failure = exc if isinstance(exc, DeliveryFailed) else DeliveryFailed("no answer in time")
            if (
                failure.__cause__ is not None
            ):  # a channel bug: retried like a transient failure, traceback logged
                log.error("channel %s raised while delivering alert %s:\n%s", name, entry.alert.id,
                          redacted_traceback(failure.__cause__, self._redactors[name]))  # fmt: skip
            return await self._failed(name, state, entry, failure)
        await self._forget(name, entry)
        self.telemetry.deliveries.inc(name, "delivered")
        if state.degraded or state.rejected:
            log.info("alert channel %s delivers again (after %d failures)", name, state.consecutive_failures)
        state.consecutive_failures, state.degraded, state.last_error, state.rejected = 0, False, None, False
        state.last_success_at = self.clock()
        return True

    async def _failed(
        self, name: str, state: ChannelState, entry: SpoolEntry, failure: DeliveryFailed
    ) -> bool:
        alert = entry.alert
        if not failure.retryable:
            await self._forget(name, entry)
            self.telemetry.deliveries.inc(name, "rejected")
            state.rejected, state.last_error = True, failure.reason
            log.error("%s rejected alert %s for good: %s", name, alert.id, failure.reason)
            return True
        delay = (
            failure.retry_after if failure.retry_after is not None else self.backoff.delay(entry.attempts + 1)
        )
        next_at = self.clock() + delay
        if entry.id < 0:
            self.memory.failed(entry.id, next_attempt_at=next_at, error=failure.reason)
        else:
            try:
                await self._spool(
                    partial(self.spool.failed, entry.id, next_attempt_at=next_at, error=failure.reason)
                )
            except Exception as exc:  # the channel's pause still spaces the retries
                self._spool_failed(exc)
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

    async def _repush_loop(self, name: str, channel: StatefulChannel) -> None:
        """Alertmanager resolves alerts it stops hearing about: re-push the firing ones routed there."""
        while True:
            await asyncio.sleep(channel.repush_seconds)
            firing = [a for a in self.active_alerts() if name in self.routes_of(a)]
            if not firing:
                continue
            try:
                await channel.repush(firing)
                self.telemetry.deliveries.inc(name, "repushed")
            except DeliveryFailed as exc:
                self.telemetry.deliveries.inc(name, "repush_failed")
                reason = self._redactors[name](exc.reason)
                log.warning("%s re-push of %d alert(s) failed: %s", name, len(firing), reason)

    async def _respool_loop(self) -> None:
        """While the spool cannot be written: probe it every ``spool_retry_seconds``, spool what memory holds."""
        while True:
            await asyncio.sleep(self.spool_retry_seconds)
            if self.spool_problem is not None or len(self.memory) or self._undeleted:
                await self._respool()

    async def _respool(self) -> None:
        """One try: probe-write the spool, finish failed deletes, move held entries into the spool."""
        try:
            await self._spool(self.spool.probe)
            for entry_id in sorted(self._undeleted):
                await self._spool(partial(self.spool.delete, entry_id))
                self._undeleted.discard(entry_id)
                self._owner.pop(entry_id, None)
            moved = 0
            for name in self.channels:
                async with self._locks[name]:
                    for entry in self.memory.entries(name):
                        add = partial(self.spool.add, name, entry.idempotency_key, entry.alert,
                                      not_before=entry.next_attempt_at)  # fmt: skip
                        await self._spool(add)
                        self.memory.delete(entry.id)
                        moved += 1
                    await self._count_pending(name)
                    self._wake[name].set()
        except Exception as exc:
            self._spool_failed(exc)
            return
        if self.spool_problem is not None:
            log.warning("alert spool %s can be written again: %d held notification(s) spooled", self.spool.path,
                        moved)  # fmt: skip
        self.spool_problem = None

    # -- on request ------------------------------------------------------------------------------------------

    async def send_test(self, name: str, alert: Alert) -> Receipt:
        """Send ``alert`` through one channel now, bypassing spool and rate limit (``memmon test-alert``);
        ``KeyError`` when the channel is not configured, ``DeliveryFailed`` when the receiver refuses."""
        channel: Channel | None = self.log_channel if name == "log" else self.channels.get(name)
        if channel is None:
            raise KeyError(not_configured(name, self.channels))
        return await send_test_alert(channel, alert, self.attempt_timeout)

    def _state_of(self, name: str, state: ChannelState) -> str:
        if state.rejected:
            return "failing"
        return "degraded" if state.degraded or self.memory.count(name) else "ok"

    def report(self) -> dict[str, ChannelReport]:
        """Every delivery channel's health and pending count."""
        return {
            name: ChannelReport(
                name,
                self._state_of(name, state) != "ok",
                self.pending(name),
                state.consecutive_failures,
                state.last_error,
                state.last_success_at,
                self._state_of(name, state),
                self.memory.count(name),
            )
            for name, state in self.states.items()
        }

    def degraded(self) -> dict[str, str]:
        """Channel -> reason, for the channels currently degraded or failing, and ``spool`` -> reason while the
        spool cannot be written."""
        found: dict[str, str] = {}
        for name, state in self.states.items():
            reasons = []
            if state.rejected:
                reasons.append(f"deliveries rejected; last: {state.last_error}")
            elif state.degraded:
                reasons.append(f"{state.consecutive_failures} failed attempts; last: {state.last_error}")
            held = self.memory.count(name)
            if held:
                reasons.append(f"{held} notification(s) held in memory only (the spool cannot be written)")
            if reasons:
                found[name] = "; ".join(reasons)
        if self.spool_problem is not None:
            found["spool"] = (
                f"cannot write {self.spool.path}: {self.spool_problem}; "
                f"{len(self.memory)} notification(s) held in memory"
            )
        return found

    async def _spool(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="memmon-spool")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
