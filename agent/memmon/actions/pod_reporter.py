"""memmon in a Kubernetes pod: each level change annotates the own pod and emits an Event on it.

Annotations ``memmon.io/level``, ``memmon.io/since`` (RFC 3339) and ``memmon.io/reason`` (at most 200 characters)
let ``kubectl get pod -o yaml`` and admission or autoscaling tooling see the memory level; the Events
(``MemoryWarning``, ``MemoryCritical``, ``MemoryEmergency``, ``MemoryRecovered``, ``GracefulRestart``) show in
``kubectl describe pod`` and in event exporters. The API calls are :class:`memmon.kits.kubernetes_client.
KubernetesClient`'s; this module decides what to say and how hard to try, never holding the monitor up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from memmon.kits.http_client import one_line
from memmon.kits.kubernetes_client import KubeError, KubernetesClient, rfc3339
from memmon.model import Level

log = logging.getLogger("memmon.kubernetes")

ANNOTATION_LEVEL = "memmon.io/level"
ANNOTATION_SINCE = "memmon.io/since"
ANNOTATION_REASON = "memmon.io/reason"
REASON_ANNOTATION_CHARS = 200

EVENT_REASONS: Mapping[Level, str] = {
    Level.OK: "MemoryRecovered",
    Level.WARNING: "MemoryWarning",
    Level.CRITICAL: "MemoryCritical",
    Level.EMERGENCY: "MemoryEmergency",
}
RESTART_EVENT_REASON = "GracefulRestart"

Sleep = Callable[[float], Awaitable[None]]


class PodReporter:
    """On each level change: annotate the own pod (memmon.io/level, memmon.io/since (RFC 3339), memmon.io/reason
    (<= 200 chars)) and emit an Event with reason MemoryWarning / MemoryCritical / MemoryEmergency / MemoryRecovered
    (type Warning for warning and above, Normal for recovered). API failures never raise: they are retried
    (3 attempts, exponential backoff 0.5 s doubling), counted in ``self.failures`` (int) with
    ``self.last_error: str | None``, and logged once per failure streak."""

    attempts = 3
    backoff = 0.5
    max_retry_after = 5.0
    """A server's Retry-After is honoured up to this long: reporting must not hold the monitor up."""

    def __init__(
        self,
        client: KubernetesClient,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        annotate: bool = True,
        subject: str | None = None,
    ) -> None:
        """``annotate=False`` emits the Events only (node mode: a pod's containers share its annotations, which
        the pod's own target sets); ``subject`` starts each Event message (``container app: ``)."""
        self.client = client
        self.annotate = annotate
        self.prefix = f"{subject}: " if subject else ""
        self.clock = clock
        self.sleep = sleep
        self.failures = 0
        """Calls (annotation or Event) that failed after their attempts, since start."""
        self.last_error: str | None = None
        self.streak = 0
        """Failures since the last success; the first of a streak is logged as a warning, the rest at debug."""

    async def level_changed(self, level: Level, previous: Level, reason: str) -> bool:
        """Annotate the pod and emit the level's Event; True when both calls succeeded.

        ``level == previous`` (a refresh, at start say) only sets the annotations.
        """
        since = rfc3339(self.clock())
        annotations: dict[str, str | None] = {
            ANNOTATION_LEVEL: level.label,
            ANNOTATION_SINCE: since,
            ANNOTATION_REASON: one_line(reason, REASON_ANNOTATION_CHARS),
        }
        annotated = True
        if self.annotate:
            annotated = await self._call("annotate the pod", lambda: self.client.annotate_pod(annotations))
        if level == previous:
            return annotated
        if level == Level.OK:
            message = f"{self.prefix}Memory recovered: {previous.label} -> ok. {reason}"
        else:
            message = f"{self.prefix}Memory level {previous.label} -> {level.label}. {reason}"
        event_type = "Normal" if level == Level.OK else "Warning"
        name = self.client.new_event_name()
        emitted = await self._call(
            f"emit the {EVENT_REASONS[level]} event",
            lambda: self.client.create_event(EVENT_REASONS[level], message, type=event_type, name=name),
        )
        return annotated and emitted

    async def restart_event(self, message: str) -> bool:
        """A Warning Event with reason GracefulRestart on the own pod; True when it was created."""
        name = self.client.new_event_name()
        return await self._call(
            "emit the GracefulRestart event",
            lambda: self.client.create_event(
                RESTART_EVENT_REASON, self.prefix + message, type="Warning", name=name
            ),
        )

    async def warning_event(self, reason: str, message: str) -> bool:
        """A Warning Event with ``reason`` (``MemmonBadAnnotation``...) on the pod; True when it was created."""
        name = self.client.new_event_name()
        return await self._call(
            f"emit the {reason} event",
            lambda: self.client.create_event(reason, self.prefix + message, type="Warning", name=name),
        )

    async def _call(self, what: str, call: Callable[[], Awaitable[None]]) -> bool:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                await call()
            except KubeError as exc:
                error: Exception = exc
                retryable = exc.retryable
                wait = max(delay, min(exc.retry_after or 0.0, self.max_retry_after))
            except Exception as exc:  # the contract: reporting never raises into the monitor
                error, retryable, wait = exc, False, delay
            else:
                if self.streak:
                    log.info(
                        "Kubernetes API reachable again: %s succeeded after %d failed call(s)",
                        what,
                        self.streak,
                    )
                self.streak = 0
                return True
            if not retryable or attempt == self.attempts:
                break
            await self.sleep(wait)
            delay *= 2
        self.failures += 1
        self.streak += 1
        self.last_error = f"{what}: {error}"
        if self.streak == 1:
            log.warning(
                "cannot %s (%d attempt(s)): %s; further failures are logged at debug", what, attempt, error
            )
        else:
            log.debug("cannot %s (%d attempt(s)): %s", what, attempt, error)
        return False
