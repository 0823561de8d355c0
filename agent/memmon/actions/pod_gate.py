"""Restarts on a Kubernetes node: one at a time per pod, a cool-down per pod, and a cap for the whole node.

In node mode a pod is several targets (the pod against the pod's limit, each container against its own), and
each target's action runner keeps its own cool-down and hourly cap. A pod must still be restarted once, not once
per target that saw the emergency; and a node whose pods all leak at once (a bad rollout, a node-wide memory
squeeze) must not evict its whole workload in a minute: the kubelet's own eviction and the scheduler should take
over from there. :class:`NodeRestartGate` holds those node-wide rules; :class:`GatedRestart` puts one target's
strategy behind it.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from memmon.actions.restarting import RestartStrategy
from memmon.model import ActionResult, frozen_mapping

log = logging.getLogger("memmon.actions")

HOUR_SECONDS = 3600.0


class NodeRestartGate:
    """Which pod may restart now. ``begin(pod)`` returns None and marks the pod restarting, or why not;
    ``end(pod)`` ends it (its cool-down starts then). Runs on the event loop only (no lock needed)."""

    def __init__(
        self,
        *,
        max_per_hour: int,
        pod_cooldown_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_hour = max_per_hour
        self.pod_cooldown_seconds = pod_cooldown_seconds
        self.monotonic = monotonic
        self._running: set[str] = set()
        self._ended: dict[str, float] = {}
        self._started: collections.deque[float] = collections.deque()
        self.refused = 0
        """Restarts refused by these rules since start."""

    def begin(self, pod: str) -> str | None:
        """Start a restart of ``pod`` (its cgroup uid); the reason it may not start now, or None when it did."""
        now = self.monotonic()
        while self._started and now - self._started[0] >= HOUR_SECONDS:
            self._started.popleft()
        why: str | None = None
        if pod in self._running:
            why = "another restart of this pod is running"
        elif now - self._ended.get(pod, -float("inf")) < self.pod_cooldown_seconds:
            left = self.pod_cooldown_seconds - (now - self._ended[pod])
            why = f"this pod restarted less than {self.pod_cooldown_seconds:g}s ago ({left:.0f}s of cool-down left)"
        elif len(self._started) >= self.max_per_hour:
            why = f"node-wide cap reached: {self.max_per_hour} restarts in the last hour (node.max_restarts_per_hour)"
        if why is not None:
            self.refused += 1
            return why
        self._running.add(pod)
        self._started.append(now)
        return None

    def end(self, pod: str) -> None:
        """The restart of ``pod`` is over (whatever its outcome): its cool-down starts now."""
        self._running.discard(pod)
        self._ended[pod] = self.monotonic()

    def forget(self, pod: str) -> None:
        """A pod that left the node: its cool-down is no longer kept (a new pod gets a new uid anyway)."""
        if pod not in self._running:
            self._ended.pop(pod, None)


class GatedRestart:
    """``inner`` behind the node's gate for pod ``pod``: a restart held back comes back as a skipped (failed)
    result saying why."""

    def __init__(
        self,
        inner: RestartStrategy,
        gate: NodeRestartGate,
        pod: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.gate = gate
        self.pod = pod
        self.clock = clock

    async def restart(self, reason: str) -> ActionResult:
        """The inner strategy's result, or a skipped result naming the rule that held it back (a skip is told
        coalesced and does not count against the target's ``max_restarts_per_hour``)."""
        why = self.gate.begin(self.pod)
        if why is not None:
            log.info("restart of pod %s held back: %s", self.pod, why)
            return ActionResult(
                action=self.name,
                success=False,
                started_at=self.clock(),
                duration_seconds=0.0,
                detail=frozen_mapping({"pod_uid": self.pod, "held_back": why, "skipped": True}),
                error=f"held back: {why}",
            )
        try:
            return await self.inner.restart(reason)
        finally:
            self.gate.end(self.pod)
