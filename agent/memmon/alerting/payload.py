"""The guide's alert payload: the JSON every receiver (webhook, API, custom handler) sees for an alert."""

from __future__ import annotations

from typing import Any

from memmon.kits.isotime import iso_utc
from memmon.model import Alert


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
