"""The ``kubernetes-liveness`` graceful-restart strategy: fail the liveness probe the app container points at
memmon, once the emergency has lasted ``grace_seconds``; the kubelet then restarts that container (gracefully:
SIGTERM, its ``terminationGracePeriodSeconds``, and only then SIGKILL).

memmon's own container should probe ``/health/live?scope=agent``, which ignores this request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from memmon.model import ActionResult, frozen_mapping


class LivenessRestart:
    """Holds the "restart me" request that /health/live reports (a
    :class:`~memmon.actions.restarting.ProbeRestart`)."""

    name = "restart:kubernetes-liveness"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.requested_at: float | None = None
        self.reason: str | None = None

    @property
    def failing(self) -> bool:
        """Whether /health/live (app scope) must answer 503."""
        return self.requested_at is not None

    async def restart(self, reason: str) -> ActionResult:
        """Start failing the app's liveness probe."""
        started = self.clock()
        self.requested_at, self.reason = started, reason
        return ActionResult(
            action=self.name,
            success=True,
            started_at=started,
            duration_seconds=0.0,
            detail=frozen_mapping(
                {"reason": reason, "probe": "/health/live answers 503 until memory recovers"}
            ),
        )

    def clear(self) -> None:
        """Memory recovered (or the container restarted): the probe passes again."""
        self.requested_at = self.reason = None
