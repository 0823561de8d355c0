"""The guide's automated response: which actions run when a level is entered, with the safety rules.

- In-process actions (library mode only, where memmon's own process is the target): gc cycles, clearing the
  registered caches, shrinking ``monitor.throttle``, stopping non-essential workers. They run at once on the
  check that entered the level, and their results go into that alert's metadata.
- Agent-mode actions (any mode): a per-level ``signal`` or ``http_hook``, and at emergency the graceful restart.
  They run in background tasks: the check loop never waits for them.
- The graceful restart and a pre-fork server's worker recycling, with their safety rules, are
  ``memmon.actions.restarting``: every check's evaluation goes there, and the per-level cool-down never delays
  them. Every result goes through ``_record`` (``recent_actions``, ``memmon_actions_total``, ``on_result``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from memmon.actions.caches import CacheRegistry
from memmon.actions.http_hook import HttpHookAction
from memmon.actions.inprocess import NonessentialWorkers, run_gc_cycles
from memmon.actions.restarting import Recheck, Restarts, RestartStrategy, worst_reason
from memmon.actions.signals import SignalAction
from memmon.actions.throttle import Throttle
from memmon.config.actions import AutoResponseSettings
from memmon.model import ActionResult, Alert, Evaluation, Level, frozen_mapping
from memmon.telemetry import Telemetry

log = logging.getLogger("memmon.actions")

CLEANUP_ACTIONS = frozenset({"gc_cycles", "clear_caches"})


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
        self.own_rss = own_rss
        self.on_result = on_result
        self.clock = clock
        self.recent: collections.deque[ActionResult] = collections.deque(maxlen=50)
        self._last_run: dict[Level, float] = {}
        self.restarts = Restarts(
            settings,
            record=self._record,
            dry=self._dry,
            strategy=restart,
            fallback=fallback,
            recheck=recheck,
            on_restart=on_restart,
            worker_budget=worker_budget,
            clock=clock,
        )
        """The graceful restart and worker recycling (``memmon.actions.restarting``)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- entry point from the check loop -----------------------------------------------------------------------

    def on_evaluation(self, evaluation: Evaluation) -> tuple[Alert, ...]:
        """Act on a level change; returns the check's transitions with the in-process results in the metadata
        of the alert that fired."""
        level, previous = evaluation.level, evaluation.previous_level
        transitions = evaluation.transitions
        if not self.settings.enabled:
            return transitions
        self.restarts.on_evaluation(evaluation)
        if level == previous:
            return transitions
        if level < previous:
            self._recovered(level)
        if level == Level.OK:
            return transitions
        last = self._last_run.get(level)
        if last is not None and self.clock() - last < self.settings.cooldown_seconds:
            log.debug("%s actions skipped: ran %.0fs ago (cool-down)", level.label, self.clock() - last)
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
        self.restarts.recovered(level)

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

    async def _run_sync(self, level: Level, name: str, action: Callable[[], ActionResult]) -> None:
        self._record(self._dry(name, level) if self.settings.dry_run else action())

    async def _run_async(
        self, level: Level, name: str, action: Callable[[], Awaitable[ActionResult]]
    ) -> None:
        self._record(self._dry(name, level) if self.settings.dry_run else await action())

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
        await self.restarts.close(wait_seconds)
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


def _notice(evaluation: Evaluation) -> dict[str, Any]:
    sample = evaluation.sample
    return {
        "level": evaluation.level.label,
        "previous_level": evaluation.previous_level.label,
        "target": sample.target,
        "memory_usage_mb": None if sample.target_bytes is None else round(sample.target_bytes / 2**20, 1),
        "percent": None if sample.percent_of_limit is None else round(sample.percent_of_limit, 2),
        "reason": worst_reason(evaluation),
        "timestamp": sample.timestamp,
    }
