"""The graceful restart at emergency and a pre-fork server's worker recycling, under the safety rules.

Learned from earlyoom / systemd-oomd complaints about wrong or repeated victims: re-read memory right before
restarting (a check under ``FRESH_SECONDS`` old counts as that read) and stand down when the emergency is over;
confirm afterwards how much memory was freed and whether the kernel's OOM killer struck first; one restart at a
time, a cool-down after each whole-target restart, and at most ``max_restarts_per_hour`` restarts that failed or
freed nothing (reaching it is reported once as "restarts cannot keep up"). ``dry_run`` decides and logs.

Pre-fork servers (a ``WorkerRecycler`` strategy, ``memmon.actions.recycle.WorkerRecycle``): at any level a worker
over its budget (``worker_budget``) is recycled early, one at a time, each once the previous one's replacement is
up; at emergency the fattest worker is recycled, then the next as soon as the previous one exited, while the
emergency lasts, never held up by a budget recycle that waits for a slow master's replacement.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from memmon.config.actions import AutoResponseSettings
from memmon.model import MB, ActionResult, Evaluation, Level, ProcessMemory, frozen_mapping

log = logging.getLogger("memmon.actions")

FRESH_SECONDS = 0.1
"""A check this young is the re-read before a restart: at 1000 MB/s another full read costs a millisecond (a
MiB) the service does not have (measured with bench/oom_race.py)."""


@dataclass(frozen=True)
class Recheck:
    """A fresh reading right before or after a restart: the level by thresholds alone, the target's memory,
    and the cgroup's OOM-kill counter (None without a cgroup or counter)."""

    level: Level
    target_bytes: int | None
    oom_kills: int | None = None


class RestartStrategy(Protocol):
    """A graceful-restart strategy (signal, recycle, systemd, kubernetes-evict, kubernetes-liveness)."""

    name: str

    async def restart(self, reason: str) -> ActionResult: ...


@runtime_checkable
class ProbeRestart(Protocol):
    """A strategy that restarts nothing itself but raises a request another party acts on (``kubernetes-liveness``:
    the kubelet restarts the container whose liveness probe fails). Such a request has no grace of its own (a
    signal's ``grace_seconds`` is its SIGTERM -> SIGKILL wait), so it is raised only once the emergency has lasted
    ``grace_seconds``; and it is withdrawn (:meth:`clear`) when memory recovers."""

    name: str

    async def restart(self, reason: str) -> ActionResult: ...

    def clear(self) -> None: ...


@runtime_checkable
class WorkerRecycler(Protocol):
    """A strategy that recycles one worker of many: repeated while the emergency lasts, and used for budgets."""

    name: str

    def worker_count(self) -> int: ...

    def over_budget(self, processes: Sequence[ProcessMemory], budget_bytes: int) -> int | None: ...

    def over_budget_now(self, budget_bytes: int) -> int | None: ...

    async def restart(self, reason: str) -> ActionResult: ...

    async def recycle(
        self, reason: str, pid: int | None = None, *, await_replacement: bool = True
    ) -> ActionResult: ...


class Restarts:
    """Starts the graceful restart and budget recycles from each check's evaluation; one at a time."""

    def __init__(
        self,
        settings: AutoResponseSettings,
        *,
        record: Callable[[ActionResult], ActionResult],
        dry: Callable[[str, Level], ActionResult],
        strategy: RestartStrategy | None = None,
        fallback: RestartStrategy | None = None,
        recheck: Callable[[], Awaitable[Recheck]] | None = None,
        on_restart: Callable[[ActionResult], Awaitable[object]] | None = None,
        worker_budget: Callable[[Evaluation], int | None] = lambda _evaluation: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.record = record
        self.dry = dry
        self.strategy = strategy
        self.fallback = fallback
        # Decided once: isinstance against a runtime-checkable Protocol inspects its members (about 90 µs here),
        # too much for every check of every target.
        self._recycler: WorkerRecycler | None = strategy if isinstance(strategy, WorkerRecycler) else None
        self.recheck = recheck
        self.on_restart = on_restart
        self.worker_budget = worker_budget
        self.clock = clock
        self._last_restart: float | None = None
        self._failures: collections.deque[float] = collections.deque()
        """When restarts failed or freed nothing, for ``max_restarts_per_hour``."""
        self._dry_budget: set[int] = set()
        self._cap_reported = False
        self._task: asyncio.Task[None] | None = None
        """The restart (or the emergency's recycling) running now."""
        self._budget_task: asyncio.Task[None] | None = None
        """Budget recycles running now: never in the way of the emergency's (the strategy skips a worker that
        is already being recycled)."""

    def on_evaluation(self, evaluation: Evaluation) -> None:
        """Every check: at emergency the restart (never delayed by the per-level cool-down), else the budget."""
        if evaluation.level == Level.EMERGENCY:
            self._start_restart(evaluation)
        else:
            self._check_budget(evaluation)

    def recovered(self, level: Level) -> None:
        """Below emergency again: a probe strategy (the liveness probe) withdraws its request."""
        if level < Level.EMERGENCY:
            for strategy in (self.strategy, self.fallback):
                if isinstance(strategy, ProbeRestart):
                    strategy.clear()

    async def close(self, wait_seconds: float) -> None:
        """Wait briefly for a running restart or recycle, then cancel it."""
        running = {task for task in (self._task, self._budget_task) if task is not None and not task.done()}
        if not running:
            return
        _done, pending = await asyncio.wait(running, timeout=wait_seconds)
        for leftover in pending:
            leftover.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    @property
    def _idle(self) -> bool:
        return self._task is None or self._task.done()

    @property
    def _budget_idle(self) -> bool:
        return self._idle and (self._budget_task is None or self._budget_task.done())

    def _start_restart(self, evaluation: Evaluation) -> None:
        """Start the graceful restart at emergency unless one is running or its cool-down has not passed (a
        later check in the same emergency tries again)."""
        emergency = self.settings.emergency_actions
        strategy = self.strategy
        if not emergency.prepare_restart or strategy is None or not self._idle:
            return
        if evaluation.level == evaluation.previous_level:
            blocked = self._blocked(strategy)
            capped = blocked is not None and blocked.startswith("restarts cannot")
            if capped and not self._cap_reported:
                self.record(_skipped(strategy.name, blocked or "", cannot_keep_up=True))
            self._cap_reported = capped
            if blocked is not None:
                return  # a cool-down: a later check of this emergency tries again
        sample = evaluation.sample
        oom_kills = sample.cgroup.oom_kill_count if sample.cgroup is not None else None
        entered = Recheck(evaluation.level, sample.target_bytes, oom_kills)
        self._task = asyncio.ensure_future(self._restart(worst_reason(evaluation), entered, sample.timestamp))

    def _check_budget(self, evaluation: Evaluation) -> None:
        """Recycle a worker over its budget (one at a time, never while a restart runs)."""
        strategy = self._recycler
        process = evaluation.sample.process
        if strategy is None or process is None or not self._budget_idle:
            return
        budget = self.worker_budget(evaluation)
        if budget is None or self._blocked(strategy) is not None:
            return
        pid = strategy.over_budget(process.processes, budget)
        if pid is None:
            return
        if self.settings.dry_run:
            if pid not in self._dry_budget:
                self._dry_budget.add(pid)
                self.record(self.dry(strategy.name, evaluation.level))
            return
        self._budget_task = asyncio.ensure_future(self._budget_recycle(strategy, pid, budget))

    async def _budget_recycle(self, strategy: WorkerRecycler, pid: int | None, budget: int) -> None:
        """Recycle ``pid``, then the next worker over its budget (RSS read now), one at a time, each once the
        previous one's replacement is up: at a fast leak every worker crosses its budget between two checks."""
        for _ in range(max(1, strategy.worker_count())):
            if pid is None:
                return
            reason = f"worker {pid} over its budget of {budget / MB:.0f} MiB"
            log.info("recycling worker %d: %s", pid, reason)
            result = self.record(await strategy.recycle(reason, pid))
            self._count(result)
            if not result.success or self._blocked(strategy) is not None or not self._idle:
                return  # an emergency took over
            pid = strategy.over_budget_now(budget)

    def _blocked(self, strategy: RestartStrategy) -> str | None:
        """Why a restart may not run now (cool-down, too many failures in the last hour), else None."""
        restart = self.settings.emergency_actions.graceful_restart
        now = self.clock()
        while self._failures and now - self._failures[0] > 3600:
            self._failures.popleft()
        if len(self._failures) >= restart.max_restarts_per_hour:
            return (
                f"restarts cannot keep up: {len(self._failures)} failed or freed nothing in the last hour "
                f"(max_restarts_per_hour {restart.max_restarts_per_hour})"
            )
        last = self._last_restart
        if (
            not isinstance(strategy, WorkerRecycler)
            and last is not None
            and now - last < restart.cooldown_seconds
        ):
            return f"cool-down: restarted {now - last:.0f}s ago"
        return None

    def _count(self, result: ActionResult) -> None:
        """A restart that freed nothing counts against ``max_restarts_per_hour``: where what it freed is known,
        by that alone (a recycle that freed its worker's memory helped, even if the kernel killed another worker
        meanwhile); else by its success."""
        if result.detail.get("skipped"):
            return  # held back before anything ran (node mode's gate): nothing was tried, nothing failed
        freed = result.detail.get("freed_bytes")
        if (freed == 0) if freed is not None else not result.success:
            self._failures.append(self.clock())

    async def _restart(self, reason: str, entered: Recheck, entered_at: float) -> None:
        """The graceful restart under the safety rules; ``entered`` is what the check that entered emergency read
        at ``entered_at``. A worker recycler goes on with the next worker while the emergency lasts."""
        restart = self.settings.emergency_actions.graceful_restart
        strategy = self.strategy
        assert strategy is not None
        blocked = self._blocked(strategy)
        if blocked is not None:
            capped = blocked.startswith("restarts cannot")
            if not (capped and self._cap_reported):  # "cannot keep up" is said once, not at every emergency
                self.record(_skipped(strategy.name, blocked, cannot_keep_up=capped))
            self._cap_reported = capped
            return
        if isinstance(strategy, ProbeRestart) and restart.grace_seconds:
            await asyncio.sleep(restart.grace_seconds)  # the emergency must persist this long
        before: Recheck | None = entered
        if self.recheck is not None and self.clock() - entered_at > FRESH_SECONDS:
            before = await self.recheck()
            if before.level < Level.EMERGENCY:
                self.record(
                    _skipped(strategy.name, f"memory re-read before acting: now {before.level.label}")
                )
                return
            # The counter as the emergency began: a kill between that check and this re-read is the kernel's too.
            if before.oom_kills is not None and entered.oom_kills is not None:
                before = replace(before, oom_kills=min(before.oom_kills, entered.oom_kills))
        if self.settings.dry_run:
            self.record(self.dry(strategy.name, Level.EMERGENCY))
            return
        rounds = 0
        while True:
            rounds += 1
            self._last_restart = self.clock()
            log.warning("graceful restart (%s): %s", strategy.name, reason)
            result = await strategy.restart(reason)
            if not result.success and self.fallback is not None:
                self.record(result)
                log.error(
                    "%s failed (%s); falling back to %s", strategy.name, result.error, self.fallback.name
                )
                result = await self.fallback.restart(reason)
            result, after = await self._confirm(result, before)
            self._count(self.record(result))
            if self.on_restart is not None:
                await self.on_restart(result)
            if not isinstance(strategy, WorkerRecycler) or after is None or after.level < Level.EMERGENCY:
                return
            if not result.success or (blocked := self._blocked(strategy)) is not None:
                return
            if rounds == max(1, strategy.worker_count()):
                self.record(
                    _skipped(
                        strategy.name,
                        f"restarts cannot keep up: still {after.level.label} after recycling {rounds} worker(s)",
                        cannot_keep_up=True,
                        going_on=True,
                    )
                )
            if rounds >= 4 * max(1, strategy.worker_count()):
                return  # the next check starts a new round; this one has done what recycling can
            before = after

    async def _confirm(
        self, result: ActionResult, before: Recheck | None
    ) -> tuple[ActionResult, Recheck | None]:
        """Re-read memory after acting: what the restart freed goes into the result, and whether the kernel's
        OOM killer struck first (the cgroup's ``oom_kill`` counter rose since the emergency began): then the
        result is a failure with ``oom_killed`` set, whatever the strategy reported. Also returns the re-read."""
        if self.recheck is None or before is None:
            return result, None
        after = await self.recheck()
        extra: dict[str, object] = {
            "memory_before": before.target_bytes,
            "memory_after": after.target_bytes,
            "level_after": after.level.label,
        }
        if isinstance(result.detail.get("unique_bytes"), int):
            # A recycled worker frees its unique memory; the total also moves with the other workers' leak.
            extra["freed_bytes"] = result.detail["unique_bytes"] if result.success else 0
        elif after.target_bytes is not None and before.target_bytes is not None:
            extra["freed_bytes"] = max(0, before.target_bytes - after.target_bytes)
        if before.oom_kills is not None and after.oom_kills is not None:
            # A counter that went down belongs to a recreated cgroup (systemd restarted the unit): no verdict.
            kills = after.oom_kills - before.oom_kills
            extra["oom_kills"] = kills if kills >= 0 else None
            if kills > 0:
                extra["oom_killed"] = True
                error = f"the kernel OOM killer struck first ({kills} kill(s) in the cgroup)"
                detail = frozen_mapping({**result.detail, **extra})
                return replace(result, success=False, error=error, detail=detail), after
        return replace(result, detail=frozen_mapping({**result.detail, **extra})), after


def _skipped(action: str, why: str, *, cannot_keep_up: bool = False, going_on: bool = False) -> ActionResult:
    """A restart not run (``going_on``: a report while recycling goes on); ``cannot_keep_up`` marks the
    results that say restarts cannot keep up with the leak (notified as an alert)."""
    log.warning("%s %s: %s", action, "goes on" if going_on else "skipped", why)
    detail: dict[str, object] = {"skipped": not going_on}
    if cannot_keep_up:
        detail["cannot_keep_up"] = True
    return ActionResult(action, False, time.time(), 0.0, frozen_mapping(detail), error=why)


def worst_reason(evaluation: Evaluation) -> str:
    """The worst component's reason (what a restart or notice says it answers)."""
    worst = max(evaluation.components, key=lambda c: c.level, default=None)
    return worst.reason if worst is not None else f"memory level {evaluation.level.label}"
