"""Delivering one channel's backlog: the per-channel worker and its retry :class:`Backoff`.

A :class:`ChannelWorker` takes its channel's due entries from the
:class:`~memmon.alerting.backlog.DeliveryBacklog` (highest severity first, then oldest), sends each through the
channel within ``attempt_timeout``, and removes an entry only once the receiver accepted it.

A failed attempt pauses the whole channel (a down receiver is down for every alert): exponential backoff with
"equal jitter" (half the delay fixed, half random), or exactly the receiver's ``Retry-After``. A channel with
``degraded_after`` consecutive failures is reported degraded until a delivery succeeds. An answer a retry cannot
change (HTTP 4xx, a refused recipient) drops the entry, counted and logged as ``rejected``, and shows the
channel ``failing`` until a delivery succeeds (a rejection usually means the channel's configuration is wrong).
The worker alone updates its :class:`~memmon.alerting.channelhealth.ChannelState`.

Every reason and receipt detail passes :func:`~memmon.alerting.redaction.send_redacted` first: what /health
and the log show is scrubbed of credentials. A :class:`~memmon.alerting.channel.StatefulChannel` is also sent
its firing alerts again every ``repush_seconds`` (:meth:`ChannelWorker.keep_repushing`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memmon.alerting.backlog import DeliveryBacklog
from memmon.alerting.channel import Channel, Delivery, DeliveryFailed, StatefulChannel
from memmon.alerting.channelhealth import ChannelReport, ChannelState
from memmon.alerting.redaction import redactor_for, send_redacted
from memmon.alerting.spool import SpoolEntry
from memmon.kits.redaction import redacted_traceback
from memmon.model import Alert
from memmon.telemetry import Telemetry

log = logging.getLogger("memmon.delivery")


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


class ChannelWorker:
    """Delivers channel ``name``'s pending entries one at a time; runs as one task (:meth:`run`)."""

    def __init__(
        self,
        name: str,
        channel: Channel,
        backlog: DeliveryBacklog,
        telemetry: Telemetry,
        *,
        backoff: Backoff,
        degraded_after: int,
        attempt_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.channel = channel
        self.backlog = backlog
        self.telemetry = telemetry
        self.backoff = backoff
        self.degraded_after = degraded_after
        self.attempt_timeout = attempt_timeout
        self.clock = clock
        self.state = ChannelState()
        self.redact = redactor_for(channel)

    # -- health ----------------------------------------------------------------------------------------------

    def due_now(self) -> bool:
        """Entries are waiting and the channel is not paused after a failure."""
        return self.backlog.pending(self.name) > 0 and self.state.paused_until <= self.clock()

    def report(self) -> ChannelReport:
        """The channel's health and pending count."""
        return self.state.report(self.name, self.backlog.pending(self.name), self.backlog.held(self.name))

    def degraded_reason(self) -> str | None:
        """Why the channel is degraded or failing; None when it is neither."""
        return self.state.degraded_reason(self.backlog.held(self.name))

    # -- delivery --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver what is due, pause after a failure, sleep until the next entry is due or one arrives."""
        state = self.state
        while True:
            wait = state.paused_until - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self.backlog.lock(self.name):
                entries = await self.backlog.due(self.name)
                for entry in entries:
                    if not await self._attempt(entry):
                        break
            if entries:
                continue
            next_at = await self.backlog.next_due_at(self.name)
            timeout = None if next_at is None else max(0.0, next_at - self.clock())
            await self.backlog.wait(self.name, timeout)

    async def _attempt(self, entry: SpoolEntry) -> bool:
        """One attempt; True to go on with the next entry, False when the channel must pause."""
        name, state = self.name, self.state
        delivery = Delivery(entry.alert, entry.idempotency_key, attempt=entry.attempts + 1)
        try:
            async with asyncio.timeout(self.attempt_timeout):
                await send_redacted(self.channel, delivery, self.redact)
        except (DeliveryFailed, TimeoutError) as exc:
            failure = exc if isinstance(exc, DeliveryFailed) else DeliveryFailed("no answer in time")
            if (
                failure.__cause__ is not None
            ):  # a channel bug: retried like a transient failure, traceback logged
                log.error("channel %s raised while delivering alert %s:\n%s", name, entry.alert.id,
                          redacted_traceback(failure.__cause__, self.redact))  # fmt: skip
            return await self._failed(entry, failure)
        await self.backlog.forget(name, entry)
        self.telemetry.deliveries.inc(name, "delivered")
        if state.degraded or state.rejected:
            log.info("alert channel %s delivers again (after %d failures)", name, state.consecutive_failures)
        state.consecutive_failures, state.degraded, state.last_error, state.rejected = 0, False, None, False
        state.last_success_at = self.clock()
        return True

    async def _failed(self, entry: SpoolEntry, failure: DeliveryFailed) -> bool:
        name, state, alert = self.name, self.state, entry.alert
        if not failure.retryable:
            await self.backlog.forget(name, entry)
            self.telemetry.deliveries.inc(name, "rejected")
            state.rejected, state.last_error = True, failure.reason
            log.error("%s rejected alert %s for good: %s", name, alert.id, failure.reason)
            return True
        delay = (
            failure.retry_after if failure.retry_after is not None else self.backoff.delay(entry.attempts + 1)
        )
        next_at = self.clock() + delay
        await self.backlog.postpone(entry, next_at, failure.reason)
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

    # -- state-keeping receivers -----------------------------------------------------------------------------

    async def keep_repushing(self, channel: StatefulChannel, firing: Callable[[], Sequence[Alert]]) -> None:
        """Alertmanager resolves alerts it stops hearing about: re-push the ``firing()`` ones routed there.

        ``channel`` is this worker's channel, seen as the :class:`StatefulChannel` it is."""
        while True:
            await asyncio.sleep(channel.repush_seconds)
            alerts = firing()
            if not alerts:
                continue
            try:
                await channel.repush(alerts)
                self.telemetry.deliveries.inc(self.name, "repushed")
            except DeliveryFailed as exc:
                self.telemetry.deliveries.inc(self.name, "repush_failed")
                reason = self.redact(exc.reason)
                log.warning("%s re-push of %d alert(s) failed: %s", self.name, len(alerts), reason)
