"""The ``kubernetes-evict`` graceful restart: ask the API server to evict the own pod, as ``kubectl drain`` does.

The Eviction API respects PodDisruptionBudgets: while one allows no disruption the API server answers 429
(retry later), and 500 when several budgets select the pod
(https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/). The pod's controller then starts a
replacement and the kubelet stops this pod gracefully (SIGTERM, ``terminationGracePeriodSeconds``, SIGKILL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from memmon.kits.kubernetes_client import KubeError, KubernetesClient
from memmon.model import ActionResult, frozen_mapping

log = logging.getLogger("memmon.kubernetes")

MAX_RETRY_AFTER = 60.0
"""A server's Retry-After is honoured up to this many seconds."""

Sleep = Callable[[float], Awaitable[None]]


class EvictRestart:
    """The `kubernetes-evict` graceful-restart strategy: ask the API server to evict the own pod (respects PDBs).

    429 (a PodDisruptionBudget allows no disruption now) and 5xx are retried with exponential backoff
    (``backoff``, doubling, at least the server's Retry-After) up to ``attempts`` in all. When they run out the
    result has ``success=False`` and says why, so the caller can fall back to another strategy.
    """

    name = "restart:kubernetes-evict"

    def __init__(
        self,
        client: KubernetesClient,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client = client
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self.monotonic = monotonic

    async def restart(self, reason: str) -> ActionResult:
        """Evict the own pod; the result's detail carries ``attempts`` and the last HTTP ``status``."""
        started_at, start = self.clock(), self.monotonic()
        config = self.client.config
        detail: dict[str, object] = {"pod": config.pod, "namespace": config.namespace, "reason": reason}
        delay = self.backoff
        failure: KubeError | None = None
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                await self.client.evict_pod()
            except KubeError as exc:
                failure = exc
                if not exc.retryable or attempt == self.attempts:
                    break
                wait = max(delay, min(exc.retry_after or 0.0, MAX_RETRY_AFTER))
                log.info(
                    "eviction attempt %d/%d refused (%s); retrying in %.1fs",
                    attempt,
                    self.attempts,
                    exc,
                    wait,
                )
                await self.sleep(wait)
                delay *= 2
            else:
                detail.update(attempts=attempt, status=self.client.last_status)
                log.warning("eviction of pod %s/%s accepted: %s", config.namespace, config.pod, reason)
                return ActionResult(
                    action=self.name,
                    success=True,
                    started_at=started_at,
                    duration_seconds=self.monotonic() - start,
                    detail=frozen_mapping(detail),
                )
        assert failure is not None  # the loop ran at least once and did not return
        detail.update(attempts=attempt, status=failure.status, last_error=str(failure))
        plural = "attempt" if attempt == 1 else "attempts"
        if failure.status == 429:
            error = f"eviction blocked by a PodDisruptionBudget (429) after {attempt} {plural}"
        else:
            error = f"eviction failed after {attempt} {plural}: {failure}"
        log.warning("%s", error)
        return ActionResult(
            action=self.name,
            success=False,
            started_at=started_at,
            duration_seconds=self.monotonic() - start,
            detail=frozen_mapping(detail),
            error=error,
        )
