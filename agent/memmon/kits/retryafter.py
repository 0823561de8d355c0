"""The HTTP ``Retry-After`` header, shared by every client memmon has (alert receivers, the Kubernetes API)."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).

    A date in the past gives 0; an absent, empty or unparseable value gives None.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC 9110 HTTP-dates are always GMT
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))
