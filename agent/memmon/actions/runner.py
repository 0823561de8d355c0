"""The guide's automated response: which actions run when a level is entered, with the safety rules.

- In-process actions (library mode only, where memmon's own process is the target): gc cycles, clearing the
  registered caches, shrinking ``monitor.throttle``, stopping non-essential workers. They run at once on the
  check that entered the level, and their results go into that alert's metadata.
- Agent-mode actions (any mode): a per-level ``signal`` or ``http_hook``, and at emergency the graceful restart.
  They run in background tasks: the check loop never waits for them.
- Safety, learned from earlyoom / systemd-oomd complaints about wrong or repeated victims: act only on the
  configured target (``TargetProcesses``); re-read memory right before restarting (a check under 100 ms old
  counts as that read) and stand down when the emergency is over; confirm afterwards how much memory was freed
  and whether the kernel's OOM killer struck first; one restart at a time, a cool-down after each whole-target
  restart, and at most ``max_restarts_per_hour`` restarts that failed or freed nothing (then: "cannot keep up").
  ``dry_run`` decides and logs, does nothing.
- Pre-fork servers (a ``repeatable`` strategy, ``WorkerRecycle``): while the emergency lasts, the next fattest
  worker is recycled as soon as the previous one's replacement is up; and at any level a worker over its budget
  (``worker_budget``) is recycled early, one at a time. The per-level cool-down never delays a restart.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from memmon.actions.caches import CacheRegistry
from memmon.actions.http_hook import HttpHookAction
from memmon.actions.inprocess import NonessentialWorkers, run_gc_cycles
from memmon.actions.signals import SignalAction
from memmon.actions.throttle import Throttle
from memmon.config_actions import AutoResponseSettings
from memmon.model import MB, ActionResult, Alert, Evaluation, Level, ProcessMemory, frozen_mapping
from memmon.telemetry import Telemetry

log = logging.getLogger("memmon.actions")

CLEANUP_ACTIONS = frozenset({"gc_cycles", "clear_caches"})
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
class WorkerRecycler(Protocol):
    """A strategy that recycles one worker of many: repeated while the emergency lasts, and used for budgets."""

    name: str

    def worker_count(self) -> int: ...

    def over_budget(self, processes: Sequence[ProcessMemory], budget_bytes: int) -> int | None: ...

    async def restart(self, reason: str) -> ActionResult: ...

    async def recycle(self, reason: str, pid: int | None = None) -> ActionResult: ...


class ActionRunner:
    """Runs the configured actions on level changes; keeps the recent results for /health."""

    def __init__(
        self,
        settings: AutoResponseSettings,
        telemetry: Telemetry,
        *,
        in_process: bool,
        caches: CacheRegistry,
        throttle: Throttle,
        nonessential: NonessentialWorkers,
        signals: Callable[[str], SignalAction],
        restart: RestartStrategy | None = None,
        fallback: RestartStrategy | None = None,
        recheck: Callable[[], Awaitable[Recheck]] | None = None,
        own_rss: Callable[[], int | None] = lambda: None,
        on_restart: Callable[[ActionResult], Awaitable[object]] | None = None,
        on_result: Callable[[ActionResult], object] | None = None,
        worker_budget: Callable[[Evaluation], int | None] = lambda _evaluation: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.in_process = in_process
        self.caches = caches
        self.throttle = throttle
        self.nonessential = nonessential
        self.signals = signals
        self.restart_strategy = restart
        self.fallback = fallback
        self.recheck = recheck
        self.own_rss = own_rss
        self.on_restart = on_restart
        self.on_result = on_result
        self.worker_budget = worker_budget
        self.clock = clock
        self.recent: collections.deque[ActionResult] = collections.deque(maxlen=50)
        self._last_run: dict[Level, float] = {}
        self._last_restart: float | None = None
        self._failures: collections.deque[float] = collections.deque()
        """When restarts failed or freed nothing, for ``max_restarts_per_hour``."""
        self._dry_budget: set[int] = set()
        self._cap_reported = False
        self._restart_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- entry point from the check loop -----------------------------------------------------------------------

    def on_evaluation(self, evaluation: Evaluation) -> tuple[Alert, ...]:
        """Act on a level change; returns the check's transitions with the in-process results in the metadata
        of the alert that fired."""
        level, previous = evaluation.level, evaluation.previous_level
        transitions = evaluation.transitions
        if not self.settings.enabled:
            return transitions
        if level == previous:
            if level == Level.EMERGENCY:
                self._start_restart(evaluation)  # e.g. a cool-down or a running recycle has ended since
            self._check_budget(evaluation)
            return transitions
        if level < previous:
            self._recovered(level)
        if level == Level.OK:
            self._check_budget(evaluation)
            return transitions
        if level == Level.EMERGENCY:
            self._start_restart(evaluation)  # never delayed by the per-level cool-down below
        else:
            self._check_budget(evaluation)
        last = self._last_run.get(level)
        if last is not None and self.clock() - last < self.settings.cooldown_seconds:
            log.info("%s actions skipped: ran %.0fs ago (cool-down)", level.label, self.clock() - last)
            return transitions
        self._last_run[level] = self.clock()
        results = self._in_process(level) if self.in_process else []
        self._background(level, evaluation)
        if not results:
            return transitions
        summary = [{"action": r.action, "success": r.success, **_freed(r)} for r in results]
        return tuple(
            replace(a, metadata=frozen_mapping({**a.metadata, "actions": summary}))
            if a.state == "firing" and a.severity == level
            else a
            for a in transitions
        )

    def _recovered(self, level: Level) -> None:
        if self.in_process and self.throttle.limit != self.throttle.capacity:
            self._record(self.throttle.set_level(level))
        if level < Level.EMERGENCY:
            for strategy in (self.restart_strategy, self.fallback):
                clear = getattr(strategy, "clear", None)  # the liveness strategy stops failing the probe
                if callable(clear):
                    clear()

    # -- in-process ----------------------------------------------------------------------------------------------

    def _in_process(self, level: Level) -> list[ActionResult]:
        actions: list[tuple[str, Callable[[], ActionResult]]] = []
        if level == Level.WARNING:
            w = self.settings.warning_actions
            if w.force_gc:
                actions.append(("gc_cycles", lambda: run_gc_cycles(1, measure=self.own_rss)))
        elif level == Level.CRITICAL:
            c = self.settings.critical_actions
            if c.force_gc and c.multiple_gc_cycles:
                actions.append(
                    ("gc_cycles", lambda: run_gc_cycles(c.multiple_gc_cycles, measure=self.own_rss))
                )
            if c.clear_caches and self.caches.names():
                actions.append(("clear_caches", self._clear_caches))
            if c.throttle_operations:
                actions.append(("throttle", lambda: self.throttle.set_level(Level.CRITICAL)))
        else:
            e = self.settings.emergency_actions
            if e.force_gc and e.multiple_gc_cycles:
                actions.append(
                    ("gc_cycles", lambda: run_gc_cycles(e.multiple_gc_cycles, measure=self.own_rss))
                )
            if e.clear_all_caches and self.caches.names():
                actions.append(("clear_caches", self._clear_caches))
            if e.emergency_throttle:
                actions.append(("throttle", lambda: self.throttle.set_level(Level.EMERGENCY)))
        results = []
        for name, action in actions:
            if self.settings.dry_run:
                results.append(self._dry(name, level))
                continue
            results.append(self._record(action()))
        return results

    def _clear_caches(self) -> ActionResult:
        before = self.own_rss()
        result = self.caches.clear()
        after = self.own_rss()
        if before is None or after is None:
            return result
        extra = {"rss_before": before, "rss_after": after, "freed_bytes": max(0, before - after)}
        return replace(result, detail=frozen_mapping({**result.detail, **extra}))

    # -- background ----------------------------------------------------------------------------------------------

    def _background(self, level: Level, evaluation: Evaluation) -> None:
        per_level = {
            Level.WARNING: self.settings.warning_actions,
            Level.CRITICAL: self.settings.critical_actions,
            Level.EMERGENCY: self.settings.emergency_actions,
        }[level]
        if per_level.signal:
            self._spawn(
                self._run_sync(level, f"signal:{per_level.signal}", self.signals(per_level.signal).run)
            )
        if per_level.http_hook is not None:
            hook = HttpHookAction(per_level.http_hook.get_secret_value())
            self._spawn(self._run_async(level, "http_hook", lambda: hook.run(_notice(evaluation))))
        if level != Level.EMERGENCY:
            return
        emergency = self.settings.emergency_actions
        if self.in_process and emergency.stop_nonessential_workers and self.nonessential.names():
            self._spawn(self._run_async(level, "stop_nonessential", self.nonessential.stop_all))

    @property
    def _idle(self) -> bool:
        return self._restart_task is None or self._restart_task.done()

    def _start_restart(self, evaluation: Evaluation) -> None:
        """Start the graceful restart at emergency unless one is running or its cool-down has not passed (a
        later check in the same emergency tries again)."""
        emergency = self.settings.emergency_actions
        strategy = self.restart_strategy
        if not emergency.prepare_restart or strategy is None or not self._idle:
            return
        if evaluation.level == evaluation.previous_level:
            blocked = self._blocked(strategy)
            capped = blocked is not None and blocked.startswith("restarts cannot")
            if capped and not self._cap_reported:
                self._record(_skipped(strategy.name, blocked or "", cannot_keep_up=True))
            self._cap_reported = capped
            if blocked is not None:
                return  # a cool-down: a later check of this emergency tries again
        sample = evaluation.sample
        oom_kills = sample.cgroup.oom_kill_count if sample.cgroup is not None else None
        entered = Recheck(evaluation.level, sample.target_bytes, oom_kills)
        self._restart_task = self._spawn(self._restart(_reason(evaluation), entered, sample.timestamp))

    def _check_budget(self, evaluation: Evaluation) -> None:
        """Recycle a worker over its budget (one at a time, never while a restart runs)."""
        strategy = self.restart_strategy
        process = evaluation.sample.process
        if not isinstance(strategy, WorkerRecycler) or process is None or not self._idle:
            return
        budget = self.worker_budget(evaluation)
        if budget is None or self._blocked(strategy) is not None:
            return
        pid = strategy.over_budget(process.processes, budget)
        if pid is None:
            return
        reason = f"worker {pid} over its budget of {budget / MB:.0f} MiB"
        if self.settings.dry_run:
            if pid not in self._dry_budget:
                self._dry_budget.add(pid)
                self._record(self._dry(strategy.name, evaluation.level))
            return
        self._restart_task = self._spawn(self._budget_recycle(strategy, pid, reason))

    async def _budget_recycle(self, strategy: WorkerRecycler, pid: int, reason: str) -> None:
        log.info("recycling worker %d: %s", pid, reason)
        self._count(self._record(await strategy.recycle(reason, pid)))

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
        """A restart that failed or freed nothing counts against ``max_restarts_per_hour``."""
        if not result.success or result.detail.get("freed_bytes") == 0:
            self._failures.append(self.clock())

    async def _run_sync(self, level: Level, name: str, action: Callable[[], ActionResult]) -> None:
        self._record(self._dry(name, level) if self.settings.dry_run else action())

    async def _run_async(
        self, level: Level, name: str, action: Callable[[], Awaitable[ActionResult]]
    ) -> None:
        self._record(self._dry(name, level) if self.settings.dry_run else await action())

    async def _restart(self, reason: str, entered: Recheck, entered_at: float) -> None:
        """The graceful restart under the safety rules; ``entered`` is what the check that entered emergency read
        at ``entered_at``. A worker recycler goes on with the next worker while the emergency lasts."""
        restart = self.settings.emergency_actions.graceful_restart
        strategy = self.restart_strategy
        assert strategy is not None
        blocked = self._blocked(strategy)
        if blocked is not None:
            self._cap_reported = blocked.startswith("restarts cannot")
            self._record(_skipped(strategy.name, blocked, cannot_keep_up=self._cap_reported))
            return
        if strategy.name == "restart:kubernetes-liveness" and restart.grace_seconds:
            await asyncio.sleep(restart.grace_seconds)  # the emergency must persist this long
        before: Recheck | None = entered
        if self.recheck is not None and self.clock() - entered_at > FRESH_SECONDS:
            before = await self.recheck()
            if before.level < Level.EMERGENCY:
                self._record(
                    _skipped(strategy.name, f"memory re-read before acting: now {before.level.label}")
                )
                return
            # The counter as the emergency began: a kill between that check and this re-read is the kernel's too.
            if before.oom_kills is not None and entered.oom_kills is not None:
                before = replace(before, oom_kills=min(before.oom_kills, entered.oom_kills))
        if self.settings.dry_run:
            self._record(self._dry(strategy.name, Level.EMERGENCY))
            return
        rounds = 0
        while True:
            rounds += 1
            self._last_restart = self.clock()
            log.warning("graceful restart (%s): %s", strategy.name, reason)
            result = await strategy.restart(reason)
            if not result.success and self.fallback is not None:
                self._record(result)
                log.error(
                    "%s failed (%s); falling back to %s", strategy.name, result.error, self.fallback.name
                )
                result = await self.fallback.restart(reason)
            result, after = await self._confirm(result, before)
            self._count(self._record(result))
            if self.on_restart is not None:
                await self.on_restart(result)
            if not isinstance(strategy, WorkerRecycler) or after is None or after.level < Level.EMERGENCY:
                return
            if not result.success or (blocked := self._blocked(strategy)) is not None:
                return
            if rounds == max(1, strategy.worker_count()):
                self._record(
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

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dry(self, name: str, level: Level) -> ActionResult:
        log.warning("dry run: would run %s at %s", name, level.label)
        return ActionResult(
            name, True, self.clock(), 0.0, frozen_mapping({"dry_run": True, "level": level.label})
        )

    def _record(self, result: ActionResult) -> ActionResult:
        outcome = action_outcome(result)
        self.telemetry.actions.inc(result.action, outcome)
        if outcome == "success" and result.action in CLEANUP_ACTIONS:
            self.telemetry.cleanup_operations.inc()
        self.recent.append(result)
        if self.on_result is not None:
            self.on_result(result)
        logger_level = logging.INFO if result.success else logging.ERROR
        log.log(
            logger_level,
            "action %s: %s%s",
            result.action,
            outcome,
            f" ({result.error})" if result.error else "",
        )
        return result

    def recent_results(self) -> list[ActionResult]:
        """The latest results, newest last."""
        return list(self.recent)

    async def close(self, wait_seconds: float = 1.0) -> None:
        """Wait briefly for running actions, then cancel them."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=wait_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def action_outcome(result: ActionResult) -> str:
    """``dry_run``, ``skipped``, ``oom_killed`` (the kernel struck before the restart), ``success``, ``failure``:
    the ``outcome`` label of ``memmon_actions_total`` and of ``recent_actions``."""
    for flag in ("dry_run", "skipped", "oom_killed"):
        if result.detail.get(flag):
            return flag
    return "success" if result.success else "failure"


def _freed(result: ActionResult) -> dict[str, object]:
    freed = result.detail.get("freed_bytes")
    return {} if freed is None else {"freed_bytes": freed}


def _skipped(action: str, why: str, *, cannot_keep_up: bool = False, going_on: bool = False) -> ActionResult:
    """A restart not run (``going_on``: a report while recycling goes on); ``cannot_keep_up`` marks the
    results that say restarts cannot keep up with the leak (notified as an alert)."""
    log.warning("%s %s: %s", action, "goes on" if going_on else "skipped", why)
    detail: dict[str, object] = {"skipped": not going_on}
    if cannot_keep_up:
        detail["cannot_keep_up"] = True
    return ActionResult(action, False, time.time(), 0.0, frozen_mapping(detail), error=why)


def _reason(evaluation: Evaluation) -> str:
    worst = max(evaluation.components, key=lambda c: c.level, default=None)
    return worst.reason if worst is not None else f"memory level {evaluation.level.label}"


def _notice(evaluation: Evaluation) -> dict[str, Any]:
    sample = evaluation.sample
    return {
        "level": evaluation.level.label,
        "previous_level": evaluation.previous_level.label,
        "target": sample.target,
        "memory_usage_mb": None if sample.target_bytes is None else round(sample.target_bytes / 2**20, 1),
        "percent": None if sample.percent_of_limit is None else round(sample.percent_of_limit, 2),
        "reason": _reason(evaluation),
        "timestamp": sample.timestamp,
    }
