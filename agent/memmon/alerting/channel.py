"""The contract of a delivery channel (Slack, webhook, email, Alertmanager, log).

A channel sends one alert transition and either returns a :class:`Receipt` (the receiver accepted it) or raises
:class:`DeliveryFailed` saying whether a retry can help and, for HTTP 429, when to retry. Retries, backoff, rate
limiting, the durable spool and routing are the dispatcher's business, never the channel's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from memmon.model import Alert


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert transition to deliver through one channel."""

    alert: Alert
    idempotency_key: str
    """The same for every attempt of this transition, across restarts: receivers can dedupe on it."""
    attempt: int = 1
    """1 for the first attempt."""
    test: bool = False
    """A test alert from ``memmon test-alert`` (channels may say so in the message)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """The receiver's answer when it accepted a delivery."""

    status: int | None
    """HTTP status, or the SMTP reply code; None when the channel has none (log)."""
    detail: str
    """A short excerpt of the receiver's answer (at most 200 characters, never a secret)."""


class DeliveryFailed(Exception):
    """The receiver did not accept the delivery.

    ``retryable`` is False for answers a retry cannot change (HTTP 4xx other than 408/429, a rejected recipient);
    ``retry_after`` carries a receiver's ``Retry-After`` in seconds.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class Channel(Protocol):
    """A delivery channel."""

    name: str
    """The routing name: ``log``, ``slack``, ``webhook``, ``email`` or ``alertmanager``."""

    async def send(self, delivery: Delivery) -> Receipt:
        """Deliver once (no retries); raise :class:`DeliveryFailed` when not accepted."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


@runtime_checkable
class StatefulChannel(Channel, Protocol):
    """A channel whose receiver keeps alert state (Alertmanager): it is sent the resolutions that are no message
    for people too (see :mod:`memmon.alerting.kinds`), and the firing alerts again every ``repush_seconds``, or
    the receiver resolves them by itself."""

    repush_seconds: float

    async def repush(self, alerts: Sequence[Alert]) -> Receipt:
        """Re-send ``alerts`` in one request, each rendered by its own state."""
        ...
