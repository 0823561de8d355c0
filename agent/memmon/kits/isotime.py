"""Timestamps as memmon writes them everywhere (API, payloads, JSON logs): ISO 8601 in UTC with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(timestamp: float | None) -> str | None:
    """``2024-01-15T10:30:00Z`` as the guide shows; milliseconds kept when present; None stays None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")
