"""Recycling one worker of a pre-fork server: the fattest, gracefully, and only once its replacement is up.

The kernel's OOM killer takes the fattest process and costs the request it was serving; restarting the whole
server costs every in-flight request and a stall while all workers boot. A worker told to finish its request and
exit costs nothing: the master forks a fresh one while the others keep serving. The graceful-exit signal is the
server's own (the presets in ``memmon.config.actions.SERVER_PRESETS`` cite where each is defined).

``WorkerRecycle.restart()`` (the ``recycle`` graceful-restart strategy) picks the worker with the largest unique
set size (what its exit frees), signals it, waits up to ``grace_seconds`` for it to exit (SIGKILL after that only
with ``kill_after_grace``) and then up to ``respawn_seconds`` for the master to have a new child, so that the
next recycle never leaves the server with one worker fewer than it had. At emergency it awaits only the exit
(``restart()``): the alternative to a worker fewer for a moment is an OOM kill.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from memmon.actions.signals import alive, send_signal
from memmon.model import MB, ActionResult, ProcessMemory, frozen_mapping
from memmon.sampling.prefork import age_seconds, children_of, resident_bytes, unique_bytes

Workers = Callable[[], Sequence[tuple[int, int]]]
"""(worker pid, its master pid) pairs, read at the moment of acting."""


@dataclass(frozen=True)
class WorkerLife:
    """A recycled worker: how long it lived, its USS when recycled, and its replacement's USS when up."""

    seconds: float
    unique_bytes: int
    fresh_bytes: int

    @property
    def growth_bytes_per_second(self) -> float:
        """What it left behind per second of its life."""
        return max(0, self.unique_bytes - self.fresh_bytes) / self.seconds if self.seconds > 0 else 0.0


def advice(server: str, lives: Iterable[WorkerLife], budget_bytes: int | None) -> dict[str, object] | None:
    """From the recycled workers' lives: each worker's growth, the time it takes to reach ``budget_bytes``, and
    the server's own setting that would keep workers under it without memmon; None before a recycle."""
    known = [life for life in lives if life.seconds > 0]
    if not known:
        return None
    growth = statistics.median(life.growth_bytes_per_second for life in known)
    fresh = statistics.median(life.fresh_bytes for life in known)
    result: dict[str, object] = {
        "recycled_workers": len(known),
        "median_lifetime_seconds": round(statistics.median(life.seconds for life in known), 1),
        "worker_growth_mib_per_second": round(growth / MB, 3),
        "fresh_worker_mib": round(fresh / MB, 1),
    }
    if budget_bytes is None or growth <= 0:
        return result
    seconds = max(0.0, budget_bytes - fresh) / growth
    result["seconds_to_budget"] = round(seconds, 1)
    budget_mib = budget_bytes / MB
    if server == "uwsgi":
        setting = f"--reload-on-rss {budget_mib:.0f} (checked after each request), or --max-requests"
    elif server == "celery":
        setting = f"--max-memory-per-child {budget_bytes // 1024} (KiB, checked after each task)"
    else:
        setting = (
            f"--max-requests about {seconds:.0f} x the requests per second one worker serves, with jitter"
        )
    result["advice"] = (
        f"a worker leaves {growth / MB:.2f} MiB/s behind and reaches its {budget_mib:.0f} MiB budget in about "
        f"{seconds:.0f} s; without memmon: {setting}"
    )
    return result


class WorkerRecycle:
    """The ``recycle`` strategy: one worker at a time; see the module docstring."""

    name = "recycle:worker"
    repeatable = True
    """The runner may recycle the next worker while the emergency lasts (each recycle frees one worker's share)."""

    def __init__(
        self,
        workers: Workers,
        *,
        signal_name: str = "SIGTERM",
        grace_seconds: float = 30.0,
        respawn_seconds: float = 10.0,
        kill_after_grace: bool = False,
        unique: Callable[[int], int | None] = unique_bytes,
        children: Callable[[int], Sequence[int]] = children_of,
        is_alive: Callable[[int], bool] = alive,
        age: Callable[[int], float | None] = age_seconds,
        poll: float = 0.01,
    ) -> None:
        self.workers = workers
        self.signum = signal.Signals[signal_name]
        self.grace_seconds = grace_seconds
        self.respawn_seconds = respawn_seconds
        self.kill_after_grace = kill_after_grace
        self.unique = unique
        self.children = children
        self.is_alive = is_alive
        self.age = age
        self.poll = poll
        self._exiting: set[int] = set()
        self.lives: collections.deque[WorkerLife] = collections.deque(maxlen=50)
        """The latest recycled workers' lives, for :func:`advice`."""

    def worker_count(self) -> int:
        """How many workers the masters have now."""
        return len(self.workers())

    def fattest(self) -> tuple[int, int, int | None] | None:
        """(worker, master, its USS) of the worker whose exit frees most, None without workers. Reads
        ``smaps_rollup`` of each worker (about 0.1 ms each), so only at the moment of acting."""
        best: tuple[int, int, int | None] | None = None
        for worker, master in self.workers():
            if worker in self._exiting:
                continue  # already told to go (a budget recycle waiting for its replacement)
            size = self.unique(worker)
            if best is None or (size or 0) > (best[2] or 0):
                best = (worker, master, size)
        return best

    def over_budget(self, processes: Sequence[ProcessMemory], budget_bytes: int) -> int | None:
        """The worker to recycle for its budget, None when all are within it: the RSS of the latest sample
        rules out most workers for free (USS <= RSS); the USS of the rest is read now."""
        candidates = sorted(
            (
                p
                for p in processes
                if p.role == "worker" and p.rss_bytes > budget_bytes and p.pid not in self._exiting
            ),
            key=lambda p: p.rss_bytes,
            reverse=True,
        )
        for process in candidates:
            size = self.unique(process.pid)
            if size is not None and size > budget_bytes:
                return process.pid
        return None

    def over_budget_now(self, budget_bytes: int) -> int | None:
        """:meth:`over_budget` over the current workers, their RSS read now (``statm``): the next worker to
        recycle right after one was, without waiting for a check."""
        processes = []
        for pid, _master in self.workers():
            rss = resident_bytes(pid)
            if rss is not None:
                processes.append(ProcessMemory(pid, "", rss, 0, role="worker"))
        return self.over_budget(processes, budget_bytes)

    async def restart(self, reason: str) -> ActionResult:
        """At emergency: recycle the fattest worker without awaiting its replacement (the runner recycles the next
        at once if the emergency lasts: waiting for a slow master, uWSGI's respawns up to a second apart and a
        2 s pause after a burst, would leave the other workers to the OOM killer)."""
        return await self.recycle(reason, await_replacement=False)

    async def recycle(
        self, reason: str, pid: int | None = None, *, await_replacement: bool = True
    ) -> ActionResult:
        """Recycle ``pid`` (a current worker) or the fattest; success when it exited in time and, with
        ``await_replacement``, a replacement is up (where the master forks one)."""
        started = time.time()
        current = dict(self.workers())
        if pid is not None and pid in current:
            choice: tuple[int, int, int | None] | None = (pid, current[pid], self.unique(pid))
        else:
            choice = self.fattest()
        if choice is None:
            return self._result(
                started, reason, {"workers": 0}, "no worker to recycle (the master has no children)"
            )
        worker, master, size = choice
        self._exiting.add(worker)
        try:
            return await self._recycle(worker, master, size, reason, started, await_replacement)
        finally:
            self._exiting.discard(worker)

    async def _recycle(
        self, worker: int, master: int, size: int | None, reason: str, started: float, await_replacement: bool
    ) -> ActionResult:
        lifetime = self.age(worker)
        before = set(self.children(master))
        sent, failed = send_signal((worker,), self.signum)
        detail: dict[str, object] = {
            "signal": self.signum.name,
            "pid": worker,
            "master": master,
            "unique_bytes": size,
            "unique_mib": None if size is None else round(size / MB, 1),
            "reason": reason,
        }
        if not sent:
            return self._result(
                started, reason, detail, f"could not signal worker {worker}: {failed[worker]}"
            )
        exited = await self._wait(lambda: not self.is_alive(worker), self.grace_seconds)
        detail["exit_seconds"] = round(time.time() - started, 3)
        if not exited:
            killed = False
            if self.kill_after_grace:
                killed = bool(send_signal((worker,), signal.SIGKILL)[0])
            error = f"worker {worker} still running after {self.grace_seconds:g}s" + (
                "; sent SIGKILL" if killed else ""
            )
            return self._result(started, reason, detail, error)
        if lifetime is not None:
            detail["lifetime_seconds"] = round(lifetime, 3)
        if not await_replacement:
            detail["replaced_by"] = None
            return self._result(started, reason, detail, None)
        replaced_at = time.monotonic()
        replaced = await self._wait(
            lambda: bool(set(self.children(master)) - before) or not self.is_alive(master),
            self.respawn_seconds,
        )
        new = sorted(set(self.children(master)) - before)
        detail["replaced_by"] = new[0] if new else None
        detail["replace_seconds"] = round(time.monotonic() - replaced_at, 3)
        if new and lifetime and size is not None:
            fresh = self.unique(new[0])
            if fresh is not None:
                self.lives.append(WorkerLife(lifetime, size, fresh))
        if not replaced or not new:
            why = (
                "the master exited"
                if not self.is_alive(master)
                else f"no new worker within {self.respawn_seconds:g}s"
            )
            return self._result(started, reason, detail, f"worker {worker} exited but {why}")
        return self._result(started, reason, detail, None)

    async def _wait(self, done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll)
        return True

    def _result(
        self, started: float, reason: str, detail: dict[str, object], error: str | None
    ) -> ActionResult:
        return ActionResult(
            action=self.name,
            success=error is None,
            started_at=started,
            duration_seconds=time.time() - started,
            detail=frozen_mapping({"reason": reason, **detail}),
            error=error,
        )
