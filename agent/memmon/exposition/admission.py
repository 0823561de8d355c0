"""Admission for expensive requests: a few run, a few wait briefly, the rest are told to come back later.

A history query over a day of samples costs a SQLite scan and a JSON body of megabytes; ten at once must cost no
more memory than ``running`` of them and must never slow the check loop. Requests past ``running + waiting``, or
that waited ``wait_seconds``, get ``503 busy`` with ``Retry-After`` (RFC 9110 §10.2.3: a 503 may say when to
retry). A request whose client has gone away stops, waiting or running (:func:`while_connected`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiohttp import web

from memmon.exposition.requests import json_error

T = TypeVar("T")
log = logging.getLogger("memmon.server")

DISCONNECT_POLL_SECONDS = 0.2
"""How often a long request looks whether its client is still connected (aiohttp cancels handlers on disconnect
only with ``handler_cancellation=True``, which would also cancel the actions' handlers half-way)."""


class ClientGone(Exception):
    """The client closed the connection before the answer was ready; the work was cancelled."""


class AdmissionGate:
    """At most ``running`` admitted at once, at most ``waiting`` more queued for up to ``wait_seconds``."""

    def __init__(self, what: str, *, running: int = 2, waiting: int = 8, wait_seconds: float = 10.0) -> None:
        if running < 1 or waiting < 0:
            raise ValueError(f"running must be >= 1 and waiting >= 0, got {running} and {waiting}")
        self.what = what
        self.running = running
        self.waiting = waiting
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(running)
        self._queued = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def _busy(self, why: str) -> web.HTTPException:
        error = json_error(503, "busy", f"{self.what}: {why}; retry later", retry_after_seconds=2)
        error.headers["Retry-After"] = "2"
        return error

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a slot for the block; ``503 busy`` (JSON, ``Retry-After``) when none can be had in time."""
        if self._closed:
            raise self._busy("the agent is stopping")
        if self._slots.locked() and self._queued >= self.waiting:
            raise self._busy(f"{self.running} running and {self.waiting} waiting already")
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            self._queued += 1
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._busy(f"no slot free within {self.wait_seconds:g} s") from None
            finally:
                self._queued -= 1
            try:
                yield
            finally:
                self._slots.release()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self, _app: object = None) -> None:
        """Refuse new requests and cancel those waiting or running (an ``on_shutdown`` hook: the agent stops
        without waiting for their answers)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()


async def while_connected(request: web.Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; cancel it and raise :class:`ClientGone` when the client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                if task.cancelled():  # the gate was closed under it: the agent is stopping
                    raise json_error(503, "stopping", "the agent is stopping")
                return task.result()
            transport = request.transport
            if transport is None or transport.is_closing():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                log.debug("%s %s: client went away, work cancelled", request.method, request.path_qs)
                raise ClientGone(request.path_qs)
    finally:
        if not task.done():  # our own cancellation (shutdown): take the work down with us
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
