"""Which alert transitions become notifications: ``rate_limit_seconds`` per fingerprint, coalescing the rest.

Memory that hovers at a threshold fires and resolves the same alert (same fingerprint) again and again. The
limiter notifies the first transition, then holds back further transitions of that fingerprint until the
interval has passed; at its end the latest held transition is sent if it differs from what receivers were last
told, so they always end up with the true state, after at most one notification per interval and state.

Never held back: an escalation (a firing alert above the level it replaced), an emergency when
``send_immediate_alert`` is on, the resolution of an alert whose firing was notified (receivers must not be
left believing a cleared alert is still firing), and the firing alert that takes over from such an alert in the
same component and target (a de-escalation emergency -> critical: the replaced alert's resolution is no message of
its own, see :mod:`memmon.alerting.kinds`, so the new level's firing is what tells people).

Notices (:func:`memmon.alerting.kinds.is_notice`) pass untouched and untracked: their producer coalesces them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from memmon.alerting.kinds import is_notice, replaced_by
from memmon.model import Alert, Level


@dataclass(slots=True)
class _Notified:
    sent_at: float
    state: str
    held: Alert | None = None


def is_escalation(alert: Alert) -> bool:
    """A firing alert that replaced a lower alert level (warning -> critical), not a first firing from ok."""
    if alert.state != "firing":
        return False
    try:
        previous = Level.parse(str(alert.metadata.get("previous_level")))
    except ValueError:
        return False
    return Level.OK < previous < alert.severity


class NotificationLimiter:
    """Per-fingerprint rate limit with coalescing; not thread-safe (the event loop owns it)."""

    def __init__(
        self,
        interval: float,
        *,
        immediate_emergency: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.immediate_emergency = immediate_emergency
        self.clock = clock
        self._by_fingerprint: dict[str, _Notified] = {}
        self._handed_over: set[tuple[str, str]] = set()
        """(component, target) whose notified alert was just replaced: the next firing there is let through."""

    def offer(self, alert: Alert) -> bool:
        """True when ``alert`` is to be notified now; False when it is held (and may be sent by :meth:`due`)."""
        if is_notice(alert):
            return True
        now = self.clock()
        notified = self._by_fingerprint.get(alert.fingerprint)
        handover = alert.state == "firing" and (alert.component, alert.target) in self._handed_over
        if alert.state == "firing":
            self._handed_over.discard((alert.component, alert.target))
        if (
            notified is None
            or now - notified.sent_at >= self.interval
            or handover
            or self._bypasses(alert, notified)
        ):
            if replaced_by(alert) is not None and (notified is None or notified.state == "firing"):
                self._handed_over.add((alert.component, alert.target))
            self._by_fingerprint[alert.fingerprint] = _Notified(now, alert.state)
            return True
        notified.held = alert
        return False

    def _bypasses(self, alert: Alert, notified: _Notified) -> bool:
        if alert.state == "resolved":
            return notified.state == "firing"
        if self.immediate_emergency and alert.severity is Level.EMERGENCY:
            return True
        return is_escalation(alert)

    def due(self) -> list[Alert]:
        """Held transitions whose interval has ended and that change what receivers were last told."""
        now = self.clock()
        ready: list[Alert] = []
        for notified in self._by_fingerprint.values():
            held = notified.held
            if held is None or now - notified.sent_at < self.interval:
                continue
            notified.held = None
            if held.state != notified.state:
                notified.sent_at, notified.state = now, held.state
                ready.append(held)
        return ready

    def next_due_at(self) -> float | None:
        """When the earliest held transition may be sent (epoch seconds), None when nothing is held."""
        times = [n.sent_at + self.interval for n in self._by_fingerprint.values() if n.held is not None]
        return min(times, default=None)
