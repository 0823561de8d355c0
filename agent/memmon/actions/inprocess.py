"""What memmon does inside the service it runs in (library mode), through the app-facing API.

In the order of the design's preference: clear the caches the app registered (:class:`CacheRegistry`), throttle
new work (:class:`Throttle`), stop the workers the app marked non-essential (:class:`NonessentialWorkers`), and,
rate-limited by the caller, full garbage collections (:func:`run_gc_cycles`), which pause the whole process and
free only cyclic garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable

from memmon.actions.caches import CacheRegistry, describe
from memmon.actions.throttle import Throttle
from memmon.model import ActionResult, frozen_mapping

__all__ = ["CacheRegistry", "NonessentialWorkers", "Throttle", "run_gc_cycles", "self_rss_bytes"]

StopFunction = Callable[[], object | Awaitable[object]]


class NonessentialWorkers:
    """Workers the app lets memmon stop at emergency.

    Python cannot kill threads: stopping is cooperative. memmon calls the registered stop function (typically
    one that sets a ``threading.Event`` or cancels a task), and the worker must notice and return from its loop
    for its memory to be freed. A stop function should only signal, not wait for the worker to finish.

    ``async def`` stop functions (and awaitables a stop function returns) run on memmon's event loop, so they
    may touch that loop's asyncio objects (``task.cancel()``). Plain functions run in a helper thread, so that
    one that blocks cannot freeze the loop; they must be thread-safe. Each stop has its own timeout: one that
    does not return in time is reported failed and the others are still stopped. A worker whose stop returned
    is removed from the registry (it will not be stopped twice); a failed one stays, to be retried.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: dict[str, StopFunction] = {}
        self._pending: set[str] = set()
        """Names whose stop call timed out and has not returned yet (not called again meanwhile)."""
        self._abandoned: set[asyncio.Future[object]] = set()

    def register(self, name: str, stop: StopFunction) -> None:
        """Register the stop function of the worker ``name``; ``ValueError`` when the name is taken."""
        if not name:
            raise ValueError("a worker needs a non-empty name")
        if not callable(stop):
            raise TypeError(f"worker {name!r}: stop must be callable, got {type(stop).__name__}")
        with self._lock:
            if name in self._workers:
                raise ValueError(f"a worker named {name!r} is already registered")
            self._workers[name] = stop

    def unregister(self, name: str) -> None:
        """Forget the worker ``name``; an unknown name (say, one memmon already stopped) is ignored."""
        with self._lock:
            self._workers.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered (not yet stopped) workers, in registration order."""
        with self._lock:
            return tuple(self._workers)

    async def stop_all(self, timeout: float = 5.0) -> ActionResult:  # noqa: ASYNC109 - a limit per worker, not overall
        """Call every stop function at once, each given ``timeout`` seconds (action ``stop_nonessential``)."""
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        started_at = time.time()
        start = time.monotonic()
        with self._lock:
            workers = dict(self._workers)
        outcomes = await asyncio.gather(
            *(self._stop_one(name, stop, timeout) for name, stop in workers.items())
        )
        stopped = [name for name, outcome in zip(workers, outcomes, strict=True) if outcome is None]
        failed = {
            name: outcome for name, outcome in zip(workers, outcomes, strict=True) if outcome is not None
        }
        with self._lock:
            for name in stopped:
                if self._workers.get(name) is workers[name]:
                    del self._workers[name]
        error = None
        if failed:
            error = f"{len(failed)} of {len(workers)} workers failed to stop: {', '.join(failed)}"
        return ActionResult(
            action="stop_nonessential",
            success=not failed,
            started_at=started_at,
            duration_seconds=time.monotonic() - start,
            detail=frozen_mapping({"stopped": stopped, "failed": failed}),
            error=error,
        )

    async def _stop_one(self, name: str, stop: StopFunction, seconds: float) -> str | None:
        """None when ``stop`` returned in time, else the failure as ``ExcType: message``."""
        with self._lock:
            if name in self._pending:
                return "RuntimeError: the previous stop call has not returned yet"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        late = f"TimeoutError: stop did not return within {seconds:g}s"
        try:
            if inspect.iscoroutinefunction(stop):
                result: object = stop()
            else:
                call = self._call_in_thread(name, stop, loop)
                if not await self._wait(name, call, deadline - loop.time()):
                    return late
                result = call.result()
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                try:
                    finished = await self._wait(name, task, deadline - loop.time())
                finally:
                    if not task.done():  # timed out, or stop_all itself was cancelled
                        task.cancel()
                if not finished:
                    return late
                task.result()
        except Exception as exc:
            return describe(exc)
        return None

    async def _wait(self, name: str, future: asyncio.Future[object], seconds: float) -> bool:
        """Whether ``future`` finished within ``seconds``; if not, it is kept (and ``name`` marked pending)
        until it does, without being awaited."""
        done, _ = await asyncio.wait({future}, timeout=max(0.0, seconds))
        if done:
            return True
        with self._lock:
            self._pending.add(name)
        self._abandoned.add(future)
        future.add_done_callback(lambda done_future: self._settled(name, done_future))
        return False

    def _settled(self, name: str, future: asyncio.Future[object]) -> None:
        self._abandoned.discard(future)
        with self._lock:
            self._pending.discard(name)
        if not future.cancelled():
            result = future.exception() or future.result()
            if inspect.iscoroutine(result):  # returned too late to be awaited
                result.close()

    @staticmethod
    def _call_in_thread(
        name: str, stop: StopFunction, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[object]:
        """Run ``stop`` in a daemon thread (abandoned if it never returns); its outcome lands in the future."""
        future: asyncio.Future[object] = loop.create_future()

        def settle(value: object, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)

        def run() -> None:
            value: object = None
            error: BaseException | None = None
            try:
                value = stop()
            except Exception as exc:
                error = exc
            except BaseException as exc:  # SystemExit and the like must not escape into the loop
                error = RuntimeError(f"stop raised {describe(exc)}")
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=run, name=f"memmon-stop-{name}", daemon=True).start()
        return future


def self_rss_bytes() -> int | None:
    """This process's resident set size from ``/proc/self/statm`` (no psutil); None where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def run_gc_cycles(cycles: int, *, measure: Callable[[], int | None] | None = None) -> ActionResult:
    """Run up to ``cycles`` full collections, stopping early when one collects nothing (action ``gc_cycles``).

    Each one pauses the whole process, so the caller rate-limits this. ``measure`` gives the process RSS in
    bytes (e.g. :func:`self_rss_bytes`); with both readings the detail also holds ``freed_bytes``.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"cycles must be an integer >= 1, got {cycles!r}")
    started_at = time.time()
    start = time.monotonic()
    rss_before = _measure(measure)
    cycles_run = 0
    collected = 0
    for _ in range(cycles):
        found = gc.collect()
        cycles_run += 1
        collected += found
        if found == 0:
            break
    rss_after = _measure(measure)
    detail: dict[str, object] = {
        "cycles_run": cycles_run,
        "collected": collected,
        "rss_before": rss_before,
        "rss_after": rss_after,
    }
    if rss_before is not None and rss_after is not None:
        detail["freed_bytes"] = max(0, rss_before - rss_after)
    return ActionResult(
        action="gc_cycles",
        success=True,
        started_at=started_at,
        duration_seconds=time.monotonic() - start,
        detail=frozen_mapping(detail),
    )


def _measure(measure: Callable[[], int | None] | None) -> int | None:
    """A reading of ``measure``; a failing reader counts as unknown (it must not fail the collection)."""
    if measure is None:
        return None
    try:
        return measure()
    except Exception:
        return None
