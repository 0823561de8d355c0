"""One watched target's whole pipeline: its sampler, evaluator, actions, leak watch, kernel notifications,
history ring and check loop. An agent runs one per target (``memmon.app``); nothing of one target (a restart, a
cool-down, a slow sampler) waits for or changes another: each has its own loop, state and action runner, and they
share only what is agent-wide (the store, the alert dispatcher, the sampling threads, memmon's own counters).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from memmon.actions.recycle import WorkerRecycle, advice
from memmon.actions.restarting import Recheck, RestartStrategy
from memmon.actions.runner import action_outcome
from memmon.alerting.action_notices import ActionNotices
from memmon.assembly import AgentParts, build_action_runner, build_evaluator, build_sampler, build_targets
from memmon.config import Settings
from memmon.evaluation.oom_kills import OomKillWatch
from memmon.kernelwatch import KernelWatch
from memmon.kits.schedule import EVENT_GAP_SECONDS, FixedRateLoop
from memmon.leakwatch import LeakWatch
from memmon.levellog import LevelChangeLog
from memmon.model import (
    MB,
    ActionResult,
    Alert,
    Degradation,
    Evaluation,
    Level,
    LimitPrediction,
    MemorySample,
    TargetState,
    frozen_mapping,
)
from memmon.sampling.events import adaptive_interval
from memmon.sampling.snapshot import SnapshotSampler
from memmon.storage.history import HistoryRing
from memmon.storage.recorder import history_point

log = logging.getLogger("memmon.monitor")


class TargetWatch:
    """One target: checked at its own fixed rate, graded, acted on and recorded under its ``name``.

    ``settings`` are the target's own (``Settings.for_target``: its thresholds, actions and routing over the
    global ones). ``start(loop)`` begins its checks; ``stop()`` and ``close()`` end them.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        parts: AgentParts,
        *,
        sampler: SnapshotSampler | None = None,
        judge_target: bool = True,
        judge_host: bool = True,
        named_logs: bool = False,
        labels: Mapping[str, str] | None = None,
        pod_reporter: Any = None,
        restart: tuple[RestartStrategy | None, RestartStrategy | None] | None = None,
    ) -> None:
        """``labels`` (node mode: namespace, pod, container) go on this target's series and alerts;
        ``pod_reporter`` replaces the agent's (its own pod's) for this target; ``restart`` replaces the strategy
        and fallback the settings would build (node mode: evicting this target's pod, behind the node's gate)."""
        self.name = name
        self.labels: Mapping[str, str] = MappingProxyType(dict(labels or {}))
        self.pod_reporter = pod_reporter if pod_reporter is not None else parts.pod_reporter
        self.named = named_logs
        """Whether this is one of several targets (its log lines and action results then carry its name)."""
        self.settings = settings
        self.parts = parts
        self.clock = parts.clock
        self.monotonic = parts.monotonic
        self.telemetry = parts.telemetry
        self.recorder = parts.recorder
        self.alert_manager = parts.alert_manager
        if sampler is None:
            sampler, _ = build_sampler(settings, name=name)
        self.sampler = sampler
        self.process = sampler.process
        self.evaluator = build_evaluator(
            settings, judge_target=judge_target, judge_host=judge_host, clock=self.clock
        )
        self.notices = ActionNotices(
            self._publish_notices, interval=settings.alerting.rate_limit_seconds, clock=self.clock
        )
        """Every action's result, told to people (bursts coalesced per ``alerting.rate_limit_seconds``)."""
        self.oom_watch = OomKillWatch()
        """An observed kernel OOM kill is an alert of its own (victim from /dev/kmsg when readable)."""
        self.targets = build_targets(settings, self.sampler)
        self._most_workers = 0
        self.actions, self.liveness = build_action_runner(
            settings,
            parts,
            self.targets,
            self.process,
            recheck=self._recheck,
            on_restart=self._restart_reported,
            on_result=self._action_done,
            worker_budget=self._worker_budget,
            restart=restart,
        )
        self.leakwatch = LeakWatch(
            settings,
            self.telemetry,
            in_process=self.targets.own_target,
            target_pids=lambda: self.targets.resolve()[0],
            record=lambda alerts: self.recorder.add_alerts(alerts),
            clock=self.clock,
        )
        self.kernel = KernelWatch(settings, self.evaluator.rule, self._memory_event)
        """The usage watcher, kernel notifications and ``memory.high`` guard between checks."""
        self.history = HistoryRing(settings.monitoring.history_size)
        self.latest: Evaluation | None = None
        self.level_log = LevelChangeLog(logging.getLogger(f"memmon.monitor.{name}") if named_logs else log)
        """The ``memory level a -> b`` lines, at most one per transition pair a minute (``memmon.levellog``)."""
        self._check_listeners: list[Callable[[Evaluation], object]] = []
        self._resolved_emergencies: collections.deque[Alert] = collections.deque(maxlen=8)
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._check_lock = asyncio.Lock()
        self.loop: FixedRateLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.missing_since: float | None = None
        """Monotonic time since when the target has been missing (None while present); the roster forgets
        a pattern's match after ``targets_forget_after_seconds`` of it."""

    # -- lifecycle -------------------------------------------------------------------------------------------

    def size_history(self, points: int) -> None:
        """Keep ``points`` checks in the in-memory ring (before start: a ring holding points is kept as it is)."""
        if not len(self.history):
            self.history = HistoryRing(points)

    def restore(self, active: Sequence[Alert], recent: Sequence[Any], now: float) -> list[Alert]:
        """The previous run's firing alerts of this target become its state again; its recent points refill the
        ring. Returns firing alerts it no longer owns, resolved (to record)."""
        mine = [alert for alert in active if alert.target == self.name]
        others = self.notices.restore(self.oom_watch.restore(self.leakwatch.restore(mine)))
        stale = self.evaluator.restore(others, self.name, now)
        if not len(self.history):
            for point in recent:
                if point.target == self.name:
                    self.history.append(point)
        return stale

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        listeners: list[Callable[[Evaluation], object]],
        delay: float = 0.0,
    ) -> None:
        """Start the check loop (after ``delay`` seconds: targets of one agent are spread over the interval)."""
        self._check_listeners = listeners
        monitoring = self.settings.monitoring
        self.loop = FixedRateLoop(
            self.check_now,
            monitoring.check_interval,
            overrun_after=self.settings.performance.max_monitoring_time_seconds,
            on_overrun=lambda _duration, _skipped: self.telemetry.check_overruns.inc(),
            on_error=lambda _exc: self.telemetry.check_failures.inc(),
            next_interval=self._next_interval,
            trigger_gap=min(monitoring.check_interval, EVENT_GAP_SECONDS),
            monotonic=self.monotonic,
        )
        self._task = loop.create_task(self._run(self.loop, delay), name=f"memmon-check-{self.name}")
        self.kernel.start(loop)

    async def _run(self, fixed: FixedRateLoop, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await fixed.run()

    @property
    def running(self) -> bool:
        """True while the check loop runs."""
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        """Ask the loop and the kernel notifications to stop (``wait_stopped`` waits)."""
        if self.loop is not None:
            self.loop.stop()
        self.kernel.stop()

    async def wait_stopped(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the loop's current check, then cancel it."""
        if self._task is None:
            return
        if self.loop is not None and self.loop.stopping and not self._task.done() and seconds > 0:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=seconds)
            except TimeoutError:
                self._task.cancel()
        elif not self._task.done():
            self._task.cancel()

    async def close(self, wait_seconds: float) -> None:
        """Finish the running actions, notices and side tasks (after ``stop``)."""
        await self.actions.close(wait_seconds)
        self.notices.close()
        self.oom_watch.close()
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=wait_seconds)

    # -- the check ---------------------------------------------------------------------------------------------

    async def check_now(self) -> Evaluation:
        """One full check: sample and evaluate in a sampling thread, then publish and record on the loop."""
        async with self._check_lock:
            evaluation: Evaluation
            evaluation, seconds = await self.parts.run_in_pool(self._sample_and_evaluate)
            self.telemetry.checks.inc()
            self.telemetry.check_duration.observe(seconds)
            self.latest = evaluation
            present = evaluation.sample.target_state is TargetState.PRESENT
            self.missing_since = None if present else (self.missing_since or self.monotonic())
            point = history_point(evaluation, seconds)
            self.history.append(point)
            self.recorder.add_point(point)
            transitions = self.actions.on_evaluation(evaluation)
            critical = self.level_bytes(evaluation, Level.CRITICAL)
            transitions += tuple(self.leakwatch.on_evaluation(evaluation, critical))
            transitions += self.oom_watch.on_evaluation(evaluation)
            self._resolved_emergencies.extend(
                a for a in transitions if a.state == "resolved" and a.severity == Level.EMERGENCY
            )
            if transitions:
                transitions = self._labelled(transitions)
                self.recorder.add_alerts(transitions)
                self.alert_manager.publish(transitions)
            if evaluation.level == evaluation.previous_level:
                self.level_log.checked(evaluation.level)
            else:
                self._log_level_change(evaluation)
                reporter = self.pod_reporter
                if reporter is not None:
                    reason = actions_reason(evaluation)
                    task = asyncio.get_running_loop().create_task(
                        reporter.level_changed(evaluation.level, evaluation.previous_level, reason)
                    )
                    self._side_tasks.add(task)
                    task.add_done_callback(self._side_tasks.discard)
            if self.loop is not None:
                self.loop.served(self._known_lines(evaluation))
            cgroup = self.sampler.cgroup
            pids = self.process.pids if self.process is not None else ()
            self.kernel.follow(evaluation, cgroup.location if cgroup is not None else None, pids)
            for listener in self._check_listeners:
                try:
                    listener(evaluation)
                except Exception:  # a listener's bug must not stop checks
                    log.exception("check listener %r failed", listener)
            return evaluation

    def _sample_and_evaluate(self) -> tuple[Evaluation, float]:
        started = time.perf_counter()
        evaluation = self.evaluator.evaluate(self.sampler.sample())
        return evaluation, time.perf_counter() - started

    def _memory_event(self, reason: str) -> None:
        """A kernel notification or the usage watcher says memory moved: count it, run a check. A crossing at or
        above where a higher level begins (its rank is its height, see ``_known_lines``) runs one at once; any other
        notification is coalesced to at most one check per ``EVENT_GAP_SECONDS`` (``memmon.kits.schedule``)."""
        self.telemetry.memory_events.inc(reason.split(" ", 1)[0])
        if self.loop is not None:
            head, _, height = reason.rpartition(" ")
            rising = head.endswith("usage crossed") and height.isdigit()  # kernel and watcher crossings
            self.loop.trigger(float(height) if rising else 0.0)

    def _known_lines(self, evaluation: Evaluation) -> float:
        """Just below where a level above the one this check found begins (bytes, the lowest threshold of any
        higher level): a notification of a crossing under it cannot raise the level, one at or above it may.
        +inf when no level is above (nothing a crossing says is news)."""
        starts = self.evaluator.rule.watch_levels(evaluation.sample)
        higher = [value for level, value in starts.items() if level > evaluation.level]
        return min(higher) - 1 if higher else math.inf

    def _next_interval(self) -> float:
        """Poll faster as the limit nears (the fill rate from the last two checks)."""
        base = self.settings.monitoring.check_interval
        sample = self.latest.sample if self.latest is not None else None
        if sample is None or sample.limit_source == "host" or sample.target_bytes is None:
            return base
        headroom = sample.effective_limit_bytes - sample.target_bytes
        points = self.history.since(sample.timestamp - 10 * base)[-2:]
        rate = None
        if len(points) == 2 and points[1].timestamp > points[0].timestamp:
            first, second = points
            if first.memory_usage_mb is not None and second.memory_usage_mb is not None:
                rate = (
                    (second.memory_usage_mb - first.memory_usage_mb)
                    * MB
                    / (second.timestamp - first.timestamp)
                )
        return adaptive_interval(base, headroom, rate)

    def _log_level_change(self, evaluation: Evaluation) -> None:
        """The ``memory level a -> b: reason`` line, rate-limited per pair; a drop because the target went
        missing says so instead of "all components ok"."""
        sample = evaluation.sample
        reason = actions_reason(evaluation)
        if any(a.metadata.get("resolved_reason") == "target_missing" for a in evaluation.transitions):
            reason = f"target {sample.target} is gone ({sample.target_problem}); {reason}"
        self.level_log.changed(evaluation.previous_level, evaluation.level, reason)

    # -- actions -------------------------------------------------------------------------------------------------

    def _action_done(self, result: ActionResult) -> None:
        """Every action result: the target's processes are looked up afresh at the next check; people are told."""
        if self.process is not None and not result.detail.get("skipped"):
            self.process.refresh()
        self.telemetry.target_actions.inc(self.name, result.action, action_outcome(result))
        self.notices.on_result(result, self.sampler.target_label)

    def _publish_notices(self, alerts: Sequence[Alert]) -> None:
        """Action notices go to the alert log and to the channels like any alert."""
        alerts = self._labelled(alerts)
        self.recorder.add_alerts(alerts)
        self.alert_manager.publish(alerts)

    def _labelled(self, alerts: Sequence[Alert]) -> tuple[Alert, ...]:
        """The alerts with this target's ``labels`` in their metadata (Alertmanager labels them so)."""
        if not self.labels:
            return tuple(alerts)
        return tuple(
            alert
            if alert.metadata.get("labels") == self.labels
            else replace(alert, metadata=frozen_mapping({**alert.metadata, "labels": self.labels}))
            for alert in alerts
        )

    def _worker_budget(self, evaluation: Evaluation) -> int | None:
        """A server worker's budget in bytes: ``target.worker_budget_mb``, or the warning line's share per worker
        after the masters' memory; None without a server or workers."""
        target = self.settings.target
        process = evaluation.sample.process
        if target.server is None or process is None:
            return None
        if target.worker_budget_mb is not None:
            return int(target.worker_budget_mb * MB)
        # The most workers seen, not those alive now: a server whose workers are being replaced must not
        # hand the survivors a bigger share.
        self._most_workers = max(self._most_workers, sum(p.role == "worker" for p in process.processes))
        workers = self._most_workers
        warning = self.level_bytes(evaluation, Level.WARNING)
        if not workers or warning is None:
            return None
        masters = sum(p.rss_bytes for p in process.processes if p.role == "master")
        return max(int((warning - masters) / workers), 0) or None

    async def _restart_reported(self, result: ActionResult) -> None:
        """The restart's result goes into the metadata of the emergency alerts it answered (``restart``: action,
        outcome, error), in the alert log and in their resolution, and to the pod's Events."""
        summary = {"action": result.action, "outcome": action_outcome(result), "error": result.error}
        answered: list[Alert] = []
        for alert in self.evaluator.active_alerts():
            if alert.severity == Level.EMERGENCY and alert.started_at <= result.started_at:
                annotated = self.evaluator.annotate(alert.id, {"restart": summary})
                answered += [annotated] if annotated is not None else []
        for alert in self._resolved_emergencies:  # resolved while the restart ran
            if alert.started_at <= result.started_at <= (alert.resolved_at or 0):
                answered.append(
                    replace(alert, metadata=frozen_mapping({**alert.metadata, "restart": summary}))
                )
        if answered:
            self.recorder.add_alerts(answered)
        reporter = self.pod_reporter
        if reporter is not None:
            outcome = "done" if result.success else f"failed: {result.error}"
            await reporter.restart_event(f"{result.action} {outcome}")

    async def _recheck(self) -> Recheck:
        """A fresh sample judged by thresholds alone: the re-read right before (and after) a restart."""
        sample: MemorySample = await self.parts.run_in_pool(self.sampler.sample)
        oom_kills = sample.cgroup.oom_kill_count if sample.cgroup is not None else None
        return Recheck(self.evaluator.raw_level(sample), sample.target_bytes, oom_kills)

    # -- what the API reads ----------------------------------------------------------------------------------

    @property
    def level(self) -> Level:
        """The target's current level."""
        return self.evaluator.level

    @property
    def degraded(self) -> tuple[Degradation, ...]:
        """Sources that failed in the latest check and the kernel notifications that could not be armed."""
        sampled = self.latest.sample.degraded if self.latest is not None else ()
        return (*sampled, *self.kernel.degraded())

    @property
    def prediction(self) -> LimitPrediction | None:
        """This target's latest time-to-limit prediction (predictive alerting on), else None."""
        return self.leakwatch.prediction

    def is_ready(self) -> bool:
        """A first sample exists, it judged the target (present) and the level is not one configured to shed
        load."""
        latest = self.latest
        return (
            latest is not None
            and latest.sample.target_state is TargetState.PRESENT
            and self.level not in self.settings.server.ready_fail_level_set
        )

    def recent_actions(self) -> list[ActionResult]:
        """This target's latest action results, newest last (named by target in a multi-target agent)."""
        results = self.actions.recent_results()
        if not self.named:
            return list(results)
        return [result if result.target else replace(result, target=self.name) for result in results]

    def active_alerts(self) -> tuple[Alert, ...]:
        """Alerts firing now (thresholds, then a suspected leak or a predicted crossing, then an OOM kill)."""
        return (
            self.evaluator.active_alerts() + self.leakwatch.active_alerts() + self.oom_watch.active_alerts()
        )

    def server_report(self) -> dict[str, Any] | None:
        """A pre-fork server's masters, workers, budget, fattest worker and what recycling has learnt; None for
        other targets."""
        server = self.settings.target.server
        latest = self.latest
        if server is None or self.process is None or latest is None:
            return None
        process = latest.sample.process
        workers = [p for p in (process.processes if process else ()) if p.role == "worker"]
        fattest = max(workers, key=lambda p: p.rss_bytes, default=None)
        budget = self._worker_budget(latest)
        strategy = self.actions.restarts.strategy
        return {
            "server": server,
            "masters": list(self.process.masters),
            "workers": len(workers),
            "worker_budget_mb": None if budget is None else round(budget / MB, 1),
            "fattest_worker": None
            if fattest is None
            else {"pid": fattest.pid, "rss_mb": round(fattest.rss_bytes / MB, 1)},
            "recycling": advice(server, strategy.lives, budget)
            if isinstance(strategy, WorkerRecycle)
            else None,
        }

    def level_bytes(self, evaluation: Evaluation, level: Level) -> float | None:
        """The target memory at which ``level`` starts (the lower of its MB and percent thresholds)."""
        return self.evaluator.rule.thresholds.start_bytes(level, evaluation.sample.effective_limit_bytes)


def actions_reason(evaluation: Evaluation) -> str:
    """The worst component's reason, or why the level is ok."""
    worst = max(evaluation.components, key=lambda c: c.level, default=None)
    return worst.reason if worst is not None and evaluation.level > Level.OK else "all components ok"


def severity_key(watch: TargetWatch) -> tuple[int, float]:
    """Sort key, worst first: level, then how full (percent of the limit)."""
    latest = watch.latest
    sample = latest.sample if latest is not None else None
    percent = (
        sample.target_bytes / sample.effective_limit_bytes * 100
        if sample is not None and sample.target_bytes is not None and sample.effective_limit_bytes
        else -1.0
    )
    return (-int(watch.level), -percent)
