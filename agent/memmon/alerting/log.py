"""The ``log`` channel: one structured line per alert transition on the ``memmon.alerts`` logger.

The line's message is the alert's own message; the identity of the alert travels in ``extra=`` fields
(``alert_id``, ``fingerprint``, ``severity``, ``component``, ``target``, ``state``, ``idempotency_key``, ``test``),
which the JSON log format (memmon.kits.logsetup) writes as top-level keys. Levels: WARNING for a warning, ERROR for a
critical, CRITICAL for an emergency alert, INFO for any resolution. The channel cannot fail once logging is
configured (``write`` is the same, synchronous), so it always returns ``Receipt(None, "logged")``.
"""

from __future__ import annotations

import logging

from memmon.alerting.channel import Delivery, Receipt
from memmon.model import Level

LOGGER_NAME = "memmon.alerts"

_FIRING_LEVELS = {
    Level.OK: logging.INFO,
    Level.WARNING: logging.WARNING,
    Level.CRITICAL: logging.ERROR,
    Level.EMERGENCY: logging.CRITICAL,
}


class LogChannel:
    """Writes each delivery to a logger (``memmon.alerts`` unless another is given)."""

    def __init__(self, name: str = "log", *, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    async def send(self, delivery: Delivery) -> Receipt:
        """Log the alert once at its level; always accepted."""
        return self.write(delivery)

    def write(self, delivery: Delivery) -> Receipt:
        """:meth:`send` without the coroutine, for callers outside the event loop or that must not await."""
        alert = delivery.alert
        level = _FIRING_LEVELS[alert.severity] if alert.state == "firing" else logging.INFO
        self.logger.log(
            level,
            "%s%s",
            "[TEST] " if delivery.test else "",
            alert.message,
            extra={
                "alert_id": alert.id,
                "fingerprint": alert.fingerprint,
                "severity": alert.severity.label,
                "component": alert.component,
                "target": alert.target,
                "state": alert.state,
                "idempotency_key": delivery.idempotency_key,
                "test": delivery.test,
            },
        )
        return Receipt(None, "logged")

    async def close(self) -> None:
        """Nothing to release."""
