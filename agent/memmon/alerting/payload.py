"""The guide's alert payload: the JSON every receiver (webhook, API, custom handler) sees for an alert."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from memmon.model import Alert


def iso_utc(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` suffix, whole seconds as the guide shows ("2024-01-15T10:30:00Z"),
    milliseconds kept when present."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The guide's fields (timestamp, severity, component, memory_usage, threshold, message, metadata) plus the
    identity and state fields memmon adds (id, fingerprint, target, state, started_at, resolved_at)."""
    return {
        "timestamp": iso_utc(alert.timestamp),
        "severity": alert.severity.label,
        "component": alert.component,
        "memory_usage": alert.memory_usage,
        "threshold": alert.threshold,
        "message": alert.message,
        "metadata": dict(alert.metadata),
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "target": alert.target,
        "state": alert.state,
        "started_at": iso_utc(alert.started_at),
        "resolved_at": iso_utc(alert.resolved_at),
    }
