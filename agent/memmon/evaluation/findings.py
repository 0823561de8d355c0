"""Alerts for findings that are not thresholds: a suspected leak, a predicted crossing of the limit.

Each finding is one component (``memory_leak``, ``memory_prediction``) with a simple state machine: it fires when
the finding starts to hold and resolves when it stops holding, like a threshold alert, with the same fingerprint
rules so that rate limiting, the spool and Alertmanager treat it alike.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from dataclasses import replace

from memmon.evaluation.evaluator import fingerprint
from memmon.model import Alert, Level, frozen_mapping


class FindingAlerts:
    """The firing alert (if any) of one finding component; not thread-safe (the check loop owns it)."""

    def __init__(
        self, component: str, *, severity: Level = Level.WARNING, hostname: str | None = None
    ) -> None:
        self.component = component
        self.severity = severity
        self.hostname = hostname or socket.gethostname()
        self.alert: Alert | None = None

    def update(
        self,
        holds: bool,
        *,
        now: float,
        target: str,
        usage_mb: float,
        threshold_mb: float,
        message: str,
        metadata: Mapping[str, object],
    ) -> list[Alert]:
        """The transitions caused by the finding holding (``holds``) or not at ``now``."""
        if holds and self.alert is None:
            self.alert = Alert(
                id=uuid.uuid4().hex,
                fingerprint=fingerprint(self.component, target, self.severity),
                severity=self.severity,
                component=self.component,
                target=target,
                state="firing",
                started_at=now,
                resolved_at=None,
                memory_usage=round(usage_mb, 1),
                threshold=round(threshold_mb, 1),
                message=message,
                metadata=frozen_mapping({**metadata, "host": self.hostname}),
            )
            return [self.alert]
        if not holds and self.alert is not None:
            resolved = replace(
                self.alert,
                state="resolved",
                resolved_at=now,
                memory_usage=round(usage_mb, 1),
                message=f"RESOLVED: {self.component} cleared ({message})",
            )
            self.alert = None
            return [resolved]
        return []

    def restore(self, alert: Alert) -> None:
        """Resume a firing alert of this component after a restart."""
        if alert.component == self.component and alert.state == "firing":
            self.alert = alert
