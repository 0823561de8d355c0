"""One delivery channel's health: the :class:`ChannelState` its worker keeps, the :class:`ChannelReport` others read.

:class:`ChannelState` is mutable and owned by the channel's worker (:mod:`memmon.alerting.channelworker`), which
alone updates it on the event loop. Everything else — /health, the metrics, the dispatcher's ``degraded()`` —
reads a channel through the frozen :class:`ChannelReport` or :meth:`ChannelState.degraded_reason`.

A channel is, in this order: ``failing`` while its last answer was a final rejection (until a delivery
succeeds); ``degraded`` while it has failed ``degraded_after`` times in a row, or while it holds deliveries in
memory only (the spool cannot be written); ``ok`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChannelReport", "ChannelState"]


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

    def label(self, held: int) -> str:
        """``failing``, ``degraded`` or ``ok`` (see the module), given the ``held`` entries in memory only."""
        if self.rejected:
            return "failing"
        return "degraded" if self.degraded or held else "ok"

    def report(self, name: str, pending: int, held: int) -> ChannelReport:
        """The read model of channel ``name``, with ``pending`` entries of which ``held`` are in memory only."""
        label = self.label(held)
        return ChannelReport(
            name,
            label != "ok",
            pending,
            self.consecutive_failures,
            self.last_error,
            self.last_success_at,
            label,
            held,
        )

    def degraded_reason(self, held: int) -> str | None:
        """Why the channel is degraded or failing (None when it is neither), given ``held`` as for :meth:`label`."""
        reasons = []
        if self.rejected:
            reasons.append(f"deliveries rejected; last: {self.last_error}")
        elif self.degraded:
            reasons.append(f"{self.consecutive_failures} failed attempts; last: {self.last_error}")
        if held:
            reasons.append(f"{held} notification(s) held in memory only (the spool cannot be written)")
        return "; ".join(reasons) if reasons else None
