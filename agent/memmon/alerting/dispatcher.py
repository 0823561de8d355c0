"""Delivering alert notifications without losing them and without slowing the check loop.

``submit()`` is called from the check loop and returns at once. For each transition the rate limiter
(:mod:`memmon.alerting.ratelimit`) lets through, the dispatcher writes the log line and routes it: one entry per
routed channel goes into the :class:`~memmon.alerting.backlog.DeliveryBacklog` (the durable spool, or memory
while the spool cannot be written) *before* any attempt; one :class:`~memmon.alerting.channelworker.ChannelWorker`
per channel then delivers what is due, and removes an entry only once the receiver accepted it. So an agent
killed mid-delivery delivers the rest after a restart (at least once; the idempotency key
``<alert id>:<state>`` lets receivers drop repeats).

The dispatcher owns the tasks (a worker per channel, the rate limiter's timer, the spool's recovery probe, the
re-push of state-keeping channels), answers for every channel's health (:class:`ChannelReport`, ``degraded()``)
and sends test alerts on request, bypassing spool and rate limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial

from memmon.alerting.backlog import DeliveryBacklog
from memmon.alerting.channel import Channel, Delivery, Receipt, StatefulChannel
from memmon.alerting.channelhealth import ChannelReport
from memmon.alerting.channelworker import Backoff, ChannelWorker
from memmon.alerting.fallback import DEFAULT_MAX_ENTRIES
from memmon.alerting.kinds import is_silent, tracks_state
from memmon.alerting.log import LogChannel
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.spool import AlertSpool
from memmon.alerting.testalert import not_configured, send_test_alert
from memmon.model import Alert, Level
from memmon.telemetry import Telemetry

__all__ = ["AlertDispatcher", "ChannelReport", "idempotency_key"]
"""``ChannelReport`` lives in :mod:`memmon.alerting.channelhealth`; it is re-exported for older importers."""

log = logging.getLogger("memmon.delivery")


def idempotency_key(alert: Alert) -> str:
    """Identical for every attempt of one transition of one alert, across restarts."""
    return f"{alert.id}:{alert.state}"


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
        self.backlog = DeliveryBacklog(
            self.channels,
            spool,
            telemetry,
            memory_max_entries=memory_max_entries,
            retry_seconds=spool_retry_seconds,
            clock=clock,
        )
        self.workers = {
            name: ChannelWorker(
                name,
                channel,
                self.backlog,
                telemetry,
                backoff=self.backoff,
                degraded_after=degraded_after,
                attempt_timeout=attempt_timeout,
                clock=clock,
            )
            for name, channel in self.channels.items()
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self._limiter_wake = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (``SpoolError`` if it cannot be) and start a worker per channel; pending deliveries
        of a previous run are resumed."""
        resumed = await self.backlog.open()
        loop = asyncio.get_running_loop()
        for name, worker in self.workers.items():
            self._tasks.append(loop.create_task(worker.run(), name=f"memmon-deliver-{name}"))
        self._tasks.append(loop.create_task(self._limiter_loop(), name="memmon-rate-limit"))
        self._tasks.append(loop.create_task(self.backlog.keep_respooling(), name="memmon-respool"))
        for name, channel in self.channels.items():
            if isinstance(channel, StatefulChannel):
                repush = self.workers[name].keep_repushing(channel, partial(self._firing_routed_to, name))
                self._tasks.append(loop.create_task(repush, name=f"memmon-{name}-repush"))
        if resumed:
            log.info("resuming %d undelivered alert notification(s) from %s", resumed, self.spool.path)

    async def close(self, wait_seconds: float = 2.0) -> None:
        """Give due deliveries ``wait_seconds``, then stop; what is undelivered stays in the spool."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=wait_seconds)
        deadline = time.monotonic() + wait_seconds
        while any(w.due_now() for w in self.workers.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # workers own the progress; this only bounds how long shutdown waits
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for channel in self.channels.values():
            await channel.close()
        await self.backlog.close()

    def routes_of(self, alert: Alert) -> tuple[str, ...]:
        """The channels an alert goes to: its target's own routes when it has them, else the global ones."""
        routes = self.target_routes.get(alert.target, self.routes)
        return routes.get(alert.severity, ())

    def _firing_routed_to(self, name: str) -> list[Alert]:
        return [a for a in self.active_alerts() if name in self.routes_of(a)]

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
            await self.backlog.add(name, key, alert)

    def pending(self, name: str) -> int:
        """Deliveries of channel ``name`` waiting: in the spool (as last counted) and in memory."""
        return self.backlog.pending(name)

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
        return {name: worker.report() for name, worker in self.workers.items()}

    def degraded(self) -> dict[str, str]:
        """Channel -> reason, for the channels currently degraded or failing, and ``spool`` -> reason while the
        spool cannot be written."""
        found: dict[str, str] = {}
        for name, worker in self.workers.items():
            reason = worker.degraded_reason()
            if reason is not None:
                found[name] = reason
        spool_problem = self.backlog.problem()
        if spool_problem is not None:
            found["spool"] = spool_problem
        return found
