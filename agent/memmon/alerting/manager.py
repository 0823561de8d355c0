"""Alert hand-off: count every transition, pass it to the custom handlers and to the delivery dispatcher.

This is the guide's ``monitor.alert_manager``. Custom handlers (``add_handler(fn)``) see every transition, not
rate-limited (they are code: they decide themselves); the dispatcher notifies the channels (log, Slack, webhook,
email, Alertmanager) with rate limiting and a durable spool. Handlers run in background tasks with a timeout,
so a slow or failing one never delays the check loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from memmon.alerting.dispatcher import AlertDispatcher
from memmon.model import Alert
from memmon.telemetry import Telemetry

AlertHandler = Callable[[Alert], Awaitable[Any] | Any]


def handler_name(handler: AlertHandler) -> str:
    """A readable name for logs and the ``handler`` metric label."""
    return getattr(handler, "__qualname__", None) or type(handler).__name__


class AlertManager:
    """Fans alert transitions out to the log and to custom handlers (async or plain callables)."""

    def __init__(
        self,
        telemetry: Telemetry,
        *,
        dispatcher: AlertDispatcher | None = None,
        handler_timeout: float = 10.0,
        queue_size: int = 1000,
        logger: logging.Logger | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.dispatcher = dispatcher
        self.handler_timeout = handler_timeout
        self.queue_size = queue_size
        self.logger = logger or logging.getLogger("memmon.alerts")
        self._handlers: list[AlertHandler] = []
        self._queues: dict[int, asyncio.Queue[Alert]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add_handler(self, handler: AlertHandler) -> None:
        """Register ``handler(alert)``; it sees every firing and resolved alert, in order per handler."""
        if not callable(handler):
            raise TypeError(f"alert handler must be callable, got {type(handler).__name__}")
        self._handlers.append(handler)

    def remove_handler(self, handler: AlertHandler) -> None:
        """Unregister a handler added before (ValueError if it was not); alerts queued for it still run."""
        self._handlers.remove(handler)

    @property
    def handlers(self) -> tuple[AlertHandler, ...]:
        """The registered handlers, in registration order."""
        return tuple(self._handlers)

    def publish(self, alerts: Iterable[Alert]) -> None:
        """Count each transition, queue it for the handlers and the channels; returns at once."""
        batch = tuple(alerts)
        if not batch:
            return
        if self.dispatcher is not None:
            self.dispatcher.submit(batch)
        telemetry = self.telemetry
        for alert in batch:
            firing = alert.state == "firing"
            (telemetry.alerts_fired if firing else telemetry.alerts_resolved).inc(
                alert.severity.label, alert.component
            )
            per_target = telemetry.target_alerts_fired if firing else telemetry.target_alerts_resolved
            per_target.inc(alert.target, alert.severity.label, alert.component)
        for handler in self._handlers:
            queue = self._queue_for(handler)
            for alert in batch:
                try:
                    queue.put_nowait(alert)
                except asyncio.QueueFull:
                    self.telemetry.handler_errors.inc(handler_name(handler))
                    self.logger.error(
                        "alert handler %s is too slow: dropped alert %s", handler_name(handler), alert.id
                    )

    async def drain(self, wait_seconds: float = 3.0) -> int:
        """Give handlers up to ``wait_seconds`` to finish queued alerts (at shutdown); returns how many were cut off."""
        queues = list(self._queues.values())
        try:
            async with asyncio.timeout(wait_seconds):
                for queue in queues:
                    await queue.join()
        except TimeoutError:
            pass
        cut_off = sum(queue.qsize() for queue in queues)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._queues.clear()
        return cut_off

    def _queue_for(self, handler: AlertHandler) -> asyncio.Queue[Alert]:
        """One queue and one worker per handler keeps each handler's alerts in order."""
        queue = self._queues.get(id(handler))
        if queue is None:
            queue = self._queues[id(handler)] = asyncio.Queue(maxsize=self.queue_size)
            task = asyncio.get_running_loop().create_task(
                self._work(handler, queue), name=handler_name(handler)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return queue

    async def _work(self, handler: AlertHandler, queue: asyncio.Queue[Alert]) -> None:
        name = handler_name(handler)
        while True:
            alert = await queue.get()
            try:
                async with asyncio.timeout(self.handler_timeout):
                    result = handler(alert)
                    if inspect.isawaitable(result):
                        await result
            except Exception as exc:  # a handler's failure must never reach the check loop
                self.telemetry.handler_errors.inc(name)
                reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                self.logger.error("alert handler %s failed for alert %s: %s", name, alert.id, reason)
            finally:
                queue.task_done()
