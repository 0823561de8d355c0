"""The wiring: Settings -> samplers -> evaluator -> alert manager, actions, store and history. With
``memmon.assembly`` (which builds the parts), the only module that knows every stage.
``ProductionMemoryMonitor`` is the guide's library entry point.

Threads: sampling and evaluation run in one worker thread (file reads never block the event loop); SQLite runs in
another (one connection, so every store call is serialised in submission order). Everything else runs on the
event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from memmon.actions.caches import CacheRegistry
from memmon.actions.gc import GcAction
from memmon.actions.inprocess import NonessentialWorkers, self_rss_bytes
from memmon.actions.recycle import WorkerRecycle, advice
from memmon.actions.restarting import Recheck
from memmon.actions.restarts import build_restart
from memmon.actions.runner import ActionRunner, action_outcome
from memmon.actions.signals import SignalAction
from memmon.actions.throttle import Throttle
from memmon.alerting.action_notices import ActionNotices
from memmon.alerting.channel import Receipt
from memmon.alerting.dispatcher import ChannelReport
from memmon.alerting.manager import AlertManager
from memmon.alerting.testalert import make_test_alert
from memmon.assembly import (
    build_dispatcher,
    build_pod_reporter,
    build_sampler,
    build_targets,
    build_thresholds,
)
from memmon.config import Settings, load_settings
from memmon.config_summary import cgroup_limit, summary
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.oom_kills import OomKillWatch
from memmon.evaluation.rules import ThresholdRule
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
    HistoryPoint,
    Level,
    TargetState,
    frozen_mapping,
)
from memmon.sampling.events import adaptive_interval
from memmon.sampling.process import ProcessSampler
from memmon.sampling.snapshot import SnapshotSampler
from memmon.storage.history import HistoryRing, downsample
from memmon.storage.lock import StateDirLock
from memmon.storage.reads import HistoryReader
from memmon.storage.recorder import StoreRecorder, history_point
from memmon.storage.store import MemoryStore, StoreError
from memmon.telemetry import Telemetry

T = TypeVar("T")
log = logging.getLogger("memmon.monitor")

GC_COUNT_MIN_SECONDS = 5.0
"""``?gc_objects=now`` counts at most this often: ``gc.get_objects()`` is O(heap) and holds the GIL throughout
(every thread, the check's included, waits), so a burst of requests shares one count."""


class ProductionMemoryMonitor:
    """Samples, grades and records memory at a fixed rate; the guide's ``ProductionMemoryMonitor``.

    ``ProductionMemoryMonitor(config_path)`` validates the config at once (``ConfigError`` on a bad one);
    ``await start_monitoring()`` opens the store and starts the check loop; ``await stop_monitoring()`` stops it,
    flushes the store and closes it. Custom handlers: ``monitor.alert_manager.add_handler(fn)``.
    """

    def __init__(
        self,
        config_path: str | Path | None = None,
        *,
        settings: Settings | None = None,
        overrides: Mapping[str, Any] | None = None,
        sampler: SnapshotSampler | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or load_settings(config_path, overrides=overrides)
        self.clock = clock
        self.monotonic = monotonic
        self.telemetry = Telemetry()
        self._process: ProcessSampler | None
        if sampler is None:
            sampler, self._process = build_sampler(self.settings)
        else:
            self._process = sampler.process
        self.sampler = sampler
        self.evaluator = Evaluator(
            ThresholdRule(build_thresholds(self.settings)),
            resolve_margin_ratio=self.settings.thresholds.resolve_margin_ratio,
            min_duration_seconds=self.settings.thresholds.min_duration_seconds,
            clock=clock,
        )
        self.dispatcher, self.routing_warnings = build_dispatcher(
            self.settings, self.telemetry, active_alerts=self.active_alerts, clock=clock
        )
        self.alert_manager = AlertManager(self.telemetry, dispatcher=self.dispatcher)
        self.notices = ActionNotices(
            self._publish_notices, interval=self.settings.alerting.rate_limit_seconds, clock=clock
        )
        """Every action's result, told to people (bursts coalesced per ``alerting.rate_limit_seconds``)."""
        self.oom_watch = OomKillWatch()
        """An observed kernel OOM kill is an alert of its own (victim from /dev/kmsg when readable)."""
        self.caches = CacheRegistry()
        self.throttle = Throttle()
        """The app wraps work in it (``async with monitor.throttle:`` / ``with monitor.throttle:``); memmon
        shrinks its capacity at critical and emergency and restores it when the level clears."""
        self.nonessential = NonessentialWorkers()
        self.pod_reporter = build_pod_reporter(self.settings)
        self.targets = build_targets(self.settings, self.sampler)
        self._most_workers = 0
        self.actions = self._build_actions()
        self.leakwatch = LeakWatch(
            self.settings,
            self.telemetry,
            in_process=self.targets.own_target,
            target_pids=lambda: self.targets.resolve()[0],
            record=lambda alerts: self.recorder.add_alerts(alerts),
            clock=clock,
        )
        self._check_listeners: list[Callable[[Evaluation], object]] = []
        self.kernel = KernelWatch(self.settings, self.evaluator.rule, self._memory_event)
        """The usage watcher, kernel notifications and ``memory.high`` guard between checks."""
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._resolved_emergencies: collections.deque[Alert] = collections.deque(maxlen=8)
        self.history = HistoryRing(self.settings.monitoring.history_size)
        storage = self.settings.storage
        self.store = MemoryStore(
            Path(storage.state_dir),
            retention_seconds=storage.retention_hours * 3600,
            alert_retention_seconds=storage.alert_retention_hours * 3600,
            clock=clock,
        )
        self._sample_pool: ThreadPoolExecutor | None = None
        self.reader = HistoryReader(self.store.path)
        """History queries: their own threads and connections, never the check's or the writer's."""
        self._gc_count: tuple[int, float] | None = None
        self._gc_count_task: asyncio.Task[tuple[int, float]] | None = None
        self._gc_counted_at = -math.inf
        self._history_problem = ""
        server = self.settings.server
        self.recorder = StoreRecorder(
            self.store,
            self.telemetry,
            flush_interval=storage.flush_interval_seconds,
            lock=StateDirLock(Path(storage.state_dir), bind=f"{server.bind}:{server.health_port}"),
        )
        self.gc_action = GcAction(self.telemetry, monotonic=monotonic, clock=clock)
        self.latest: Evaluation | None = None
        self.started_at: float | None = None
        self._started_monotonic: float | None = None
        self._loop: FixedRateLoop | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._check_lock = asyncio.Lock()
        self.level_log = LevelChangeLog(log, monotonic=monotonic)
        """The ``memory level a -> b`` lines, at most one per transition pair a minute (see ``memmon.levellog``)."""

    def add_check_listener(self, listener: Callable[[Evaluation], object]) -> None:
        """Call ``listener(evaluation)`` after every check, on the event loop (quick work only)."""
        self._check_listeners.append(listener)

    def _build_actions(self) -> ActionRunner:
        targets = self.targets
        own = targets.own_target
        process = self._process
        restart, fallback, self.liveness = build_restart(
            self.settings,
            targets,
            workers=process.current_workers if process is not None and process.server else None,
            clock=self.clock,
        )
        return ActionRunner(
            self.settings.auto_response,
            self.telemetry,
            in_process=own,
            caches=self.caches,
            throttle=self.throttle,
            nonessential=self.nonessential,
            signals=lambda name: SignalAction(targets, name),
            restart=restart,
            fallback=fallback,
            recheck=self._recheck,
            own_rss=self_rss_bytes,
            on_restart=self._restart_reported,
            on_result=self._action_done,
            worker_budget=self._worker_budget,
            clock=self.clock,
        )

    def _action_done(self, result: ActionResult) -> None:
        """Every action result: the target's processes are looked up afresh at the next check; people are told."""
        if self._process is not None and not result.detail.get("skipped"):
            self._process.refresh()
        self.notices.on_result(result, self.sampler.target_label)

    def _publish_notices(self, alerts: Sequence[Alert]) -> None:
        """Action notices go to the alert log and to the channels like any alert."""
        self.recorder.add_alerts(alerts)
        self.alert_manager.publish(alerts)

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
        warning = self._level_bytes(evaluation, Level.WARNING)
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
        if self.pod_reporter is not None:
            outcome = "done" if result.success else f"failed: {result.error}"
            await self.pod_reporter.restart_event(f"{result.action} {outcome}")

    async def _recheck(self) -> Recheck:
        """A fresh sample judged by thresholds alone: the re-read right before (and after) a restart."""
        sample = await self._in_pool(self.sampler.sample)
        oom_kills = sample.cgroup.oom_kill_count if sample.cgroup is not None else None
        return Recheck(self.evaluator.raw_level(sample), sample.target_bytes, oom_kills)

    def register_cache(self, name: str, cache: Any) -> None:
        """A cache memmon clears at critical/emergency: a clear function, or anything with ``cache_clear()``
        (``functools.lru_cache``) or ``clear()`` (a dict)."""
        self.caches.register(name, cache)

    def register_nonessential(self, name: str, stop: Callable[[], Any]) -> None:
        """A worker memmon stops at emergency by calling ``stop`` (cooperative: Python cannot kill threads, so
        the worker must return from its loop when asked)."""
        self.nonessential.register(name, stop)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start_monitoring(self) -> None:
        """Open the store (raises ``StoreError``), restore the previous run's state, start the check loop."""
        if self._loop_task is not None:
            return
        active, recent = await self.recorder.open(self.settings.monitoring.history_size)
        self.reader = HistoryReader(self.store.path)
        try:
            await self.dispatcher.start()
        except BaseException:
            await self.recorder.close()  # releases the state directory's lock
            raise
        for warning in self.routing_warnings:
            log.warning("%s", warning)
        self.started_at = self.clock()
        others = self.notices.restore(self.oom_watch.restore(self.leakwatch.restore(active)))
        stale = self.evaluator.restore(others, self.sampler.target_label, self.started_at)
        if not len(self.history):  # a restart in the same process keeps its ring
            for point in recent:
                self.history.append(point)
        self._started_monotonic = self.monotonic()
        performance = self.settings.performance
        self._loop = FixedRateLoop(
            self.check_now,
            self.settings.monitoring.check_interval,
            overrun_after=performance.max_monitoring_time_seconds,
            on_overrun=lambda _duration, _skipped: self.telemetry.check_overruns.inc(),
            on_error=lambda _exc: self.telemetry.check_failures.inc(),
            next_interval=self._next_interval,
            trigger_gap=min(self.settings.monitoring.check_interval, EVENT_GAP_SECONDS),
            monotonic=self.monotonic,
        )
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._loop.run(), name="memmon-check-loop")
        self.kernel.start(loop)
        self.recorder.start()
        if stale:
            self.recorder.add_alerts(stale)
            self.alert_manager.publish(stale)
        for line in summary(self.settings, cgroup_limit(self.settings)):
            log.log(logging.WARNING if line.startswith("warning:") else logging.INFO, "%s", line)
        log.info(
            "monitoring %s every %gs (state in %s)",
            self.sampler.target_label,
            self.settings.monitoring.check_interval,
            self.store.path,
        )

    async def stop_monitoring(self, wait_seconds: float = 4.0) -> None:
        """Stop the loop, let handlers finish briefly, flush and close the store. Idempotent."""
        if self._loop is None or self._loop_task is None:
            return
        self._loop.stop()
        self.kernel.stop()
        self.reader.close()  # reads end now, so nothing queues before the final flush
        try:
            await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=wait_seconds / 2)
        except TimeoutError:
            self._loop_task.cancel()
        await self.actions.close(wait_seconds / 8)
        self.notices.close()
        self.oom_watch.close()
        await self.alert_manager.drain(wait_seconds / 4)
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=wait_seconds / 8)
        await self.dispatcher.close(wait_seconds / 4)
        await self.recorder.close()
        if self._sample_pool is not None:
            self._sample_pool.shutdown(wait=False, cancel_futures=True)
            self._sample_pool = None
        self._loop = None
        self._loop_task = None

    @property
    def monitoring_active(self) -> bool:
        """True while the check loop runs."""
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def uptime_seconds(self) -> float:
        """Seconds since :meth:`start_monitoring` (0 before)."""
        return 0.0 if self._started_monotonic is None else self.monotonic() - self._started_monotonic

    # -- the check ---------------------------------------------------------------------------------------------

    async def check_now(self) -> Evaluation:
        """One full check: sample and evaluate in the worker thread, then publish and record on the loop."""
        async with self._check_lock:
            evaluation, seconds = await self._in_pool(self._sample_and_evaluate)
            self.telemetry.checks.inc()
            self.telemetry.check_duration.observe(seconds)
            self.latest = evaluation
            point = history_point(evaluation, seconds)
            self.history.append(point)
            self.recorder.add_point(point)
            transitions = self.actions.on_evaluation(evaluation)
            critical = self._level_bytes(evaluation, Level.CRITICAL)
            transitions += tuple(self.leakwatch.on_evaluation(evaluation, critical))
            transitions += self.oom_watch.on_evaluation(evaluation)
            self._resolved_emergencies.extend(
                a for a in transitions if a.state == "resolved" and a.severity == Level.EMERGENCY
            )
            if transitions:
                self.recorder.add_alerts(transitions)
                self.alert_manager.publish(transitions)
            if evaluation.level == evaluation.previous_level:
                self.level_log.checked(evaluation.level)
            else:
                self._log_level_change(evaluation)
                if self.pod_reporter is not None:
                    reason = self.actions_reason(evaluation)
                    task = asyncio.get_running_loop().create_task(
                        self.pod_reporter.level_changed(evaluation.level, evaluation.previous_level, reason)
                    )
                    self._side_tasks.add(task)
                    task.add_done_callback(self._side_tasks.discard)
            if self._loop is not None:
                self._loop.served(self._known_lines(evaluation))
            cgroup = self.sampler.cgroup
            pids = self._process.pids if self._process is not None else ()
            self.kernel.follow(evaluation, cgroup.location if cgroup is not None else None, pids)
            for listener in self._check_listeners:
                try:
                    listener(evaluation)
                except Exception:  # a listener's bug must not stop checks
                    log.exception("check listener %r failed", listener)
            return evaluation

    def _memory_event(self, reason: str) -> None:
        """A kernel notification or the usage watcher says memory moved: count it, run a check. A crossing at or
        above where a higher level begins (its rank is its height, see ``_known_lines``) runs one at once; any other
        notification is coalesced to at most one check per ``EVENT_GAP_SECONDS`` (``memmon.kits.schedule``)."""
        self.telemetry.memory_events.inc(reason.split(" ", 1)[0])
        if self._loop is not None:
            head, _, height = reason.rpartition(" ")
            rising = head.endswith("usage crossed") and height.isdigit()  # kernel and watcher crossings
            self._loop.trigger(float(height) if rising else 0.0)

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

    @staticmethod
    def actions_reason(evaluation: Evaluation) -> str:
        """The worst component's reason, or why the level is ok."""
        worst = max(evaluation.components, key=lambda c: c.level, default=None)
        return worst.reason if worst is not None and evaluation.level > Level.OK else "all components ok"

    def _sample_and_evaluate(self) -> tuple[Evaluation, float]:
        started = time.perf_counter()
        evaluation = self.evaluator.evaluate(self.sampler.sample())
        return evaluation, time.perf_counter() - started

    async def _in_pool(self, fn: Callable[[], T]) -> T:
        if self._sample_pool is None:
            self._sample_pool = ThreadPoolExecutor(1, thread_name_prefix="memmon-sample")
        return await asyncio.get_running_loop().run_in_executor(self._sample_pool, fn)

    def _log_level_change(self, evaluation: Evaluation) -> None:
        """The ``memory level a -> b: reason`` line, rate-limited per pair; a drop because the target went
        missing says so instead of "all components ok"."""
        sample = evaluation.sample
        reason = self.actions_reason(evaluation)
        if any(a.metadata.get("resolved_reason") == "target_missing" for a in evaluation.transitions):
            reason = f"target {sample.target} is gone ({sample.target_problem}); {reason}"
        self.level_log.changed(evaluation.previous_level, evaluation.level, reason)

    # -- what the health API reads -----------------------------------------------------------------------------

    @property
    def level(self) -> Level:
        """The current overall level."""
        return self.evaluator.level

    @property
    def degraded(self) -> tuple[Degradation, ...]:
        """Sources that failed in the latest check, plus the store when it is failing."""
        sampled = self.latest.sample.degraded if self.latest is not None else ()
        store = (Degradation("store", self.recorder.problem),) if self.recorder.problem else ()
        channels = tuple(
            Degradation(f"alerting.{name}", why) for name, why in self.dispatcher.degraded().items()
        )
        return (*sampled, *store, *self.kernel.degraded(), *channels)

    def is_live(self, scope: str = "app") -> bool:
        """The check loop runs and finished a check recently (within ``server.live_stale_seconds``); for the
        ``app`` scope also: no graceful restart through the liveness probe is requested."""
        if not self.monitoring_active or self._loop is None:
            return False
        if scope == "app" and self.liveness is not None and self.liveness.failing:
            return False
        last = self._loop.last_completed or self._started_monotonic or 0.0
        return self.monotonic() - last <= self.settings.live_stale_seconds

    def is_ready(self) -> bool:
        """A first sample exists, it judged the target (not missing nor unreadable: memmon cannot vouch for what
        it cannot see; a sidecar's app is not up either then) and the level is not one configured to shed load."""
        latest = self.latest
        return (
            latest is not None
            and latest.sample.target_state is TargetState.PRESENT
            and self.level not in self.settings.server.ready_fail_level_set
        )

    def active_alerts(self) -> tuple[Alert, ...]:
        """Alerts firing now (thresholds, then a suspected leak or a predicted crossing, then an OOM kill)."""
        return (
            self.evaluator.active_alerts() + self.leakwatch.active_alerts() + self.oom_watch.active_alerts()
        )

    def server_report(self) -> dict[str, Any] | None:
        """A pre-fork server's masters, workers, budget, fattest worker and what recycling has learnt (the
        ``server`` block of /health/memory); None for other targets."""
        server = self.settings.target.server
        latest = self.latest
        if server is None or self._process is None or latest is None:
            return None
        process = latest.sample.process
        workers = [p for p in (process.processes if process else ()) if p.role == "worker"]
        fattest = max(workers, key=lambda p: p.rss_bytes, default=None)
        budget = self._worker_budget(latest)
        strategy = self.actions.restarts.strategy
        return {
            "server": server,
            "masters": list(self._process.masters),
            "workers": len(workers),
            "worker_budget_mb": None if budget is None else round(budget / MB, 1),
            "fattest_worker": None
            if fattest is None
            else {"pid": fattest.pid, "rss_mb": round(fattest.rss_bytes / MB, 1)},
            "recycling": advice(server, strategy.lives, budget)
            if isinstance(strategy, WorkerRecycle)
            else None,
        }

    def _level_bytes(self, evaluation: Evaluation, level: Level) -> float | None:
        """The target memory at which ``level`` starts (the lower of its MB and percent thresholds)."""
        thresholds = self.evaluator.rule.thresholds
        candidates = []
        if level in thresholds.memory_mb:
            candidates.append(thresholds.memory_mb[level] * MB)
        if level in thresholds.memory_percent:
            candidates.append(
                thresholds.memory_percent[level] / 100 * evaluation.sample.effective_limit_bytes
            )
        return min(candidates, default=None)

    @property
    def prediction(self) -> dict[str, Any] | None:
        """The latest time-to-limit prediction (predictive alerting on), else None."""
        return self.leakwatch.prediction

    def leaks(self) -> dict[str, Any]:
        """What GET /health/leaks shows."""
        return self.leakwatch.report()

    async def leak_snapshot(self, seconds: float) -> dict[str, Any]:
        """A tracemalloc window (library mode) or the target's biggest mappings (agent mode), on request."""
        return await asyncio.get_running_loop().run_in_executor(None, self.leakwatch.snapshot, seconds)

    async def history_since(self, since: float) -> list[HistoryPoint]:
        """Samples since ``since`` (epoch seconds): from the ring when it covers the window, else from SQLite."""
        if self.history.covers(since):
            return self.history.since(since)
        return await self.recorder.history(since)

    async def alerts_since(self, since: float) -> list[Alert]:
        """Alert records started, resolved or still firing since ``since`` (newest first)."""
        return await self.recorder.alerts(since, self.active_alerts())

    async def history_window(self, since: float, max_points: int) -> tuple[int, list[HistoryPoint]]:
        """Samples since ``since`` as ``(how many, at most max_points of them: peaks and the newest kept)``.

        From the ring when it covers the window; else downsampled inside SQLite by :attr:`reader` (memory bounded
        by ``max_points``, off the check's and the writer's threads, interrupted when the caller is cancelled),
        plus the ring's points not yet in the store. When the store cannot be read, the ring's points alone.
        """
        if self.history.covers(since):
            points = self.history.since(since)
            return len(points), await asyncio.to_thread(downsample, points, max_points)
        try:
            total, stored = await self.reader.window(since, max_points)
        except StoreError as exc:
            if str(exc) != self._history_problem:  # once per distinct problem, not once per dashboard poll
                log.warning("history query: %s; answering from memory", exc)
            self._history_problem = str(exc)
            points = self.history.since(since)
            return len(points), await asyncio.to_thread(downsample, points, max_points)
        self._history_problem = ""
        newest = stored[-1].timestamp if stored else -math.inf
        unflushed = [point for point in self.history.since(since) if point.timestamp > newest]
        if not unflushed:
            return total, stored
        return total + len(unflushed), await asyncio.to_thread(downsample, stored + unflushed, max_points)

    async def count_gc_objects(self) -> tuple[int, float] | None:
        """``(gc-tracked objects, epoch seconds counted)`` now, or from the count less than
        :data:`GC_COUNT_MIN_SECONDS` ago (concurrent callers share one count); None when the target is not
        memmon's own process. Never on the check's thread."""
        process = self._process
        if process is None or not process.is_own_process:
            return None
        if self._gc_count_task is None:
            if self._gc_count is not None and self.monotonic() - self._gc_counted_at < GC_COUNT_MIN_SECONDS:
                return self._gc_count
            self._gc_counted_at = self.monotonic()
            self._gc_count_task = asyncio.get_running_loop().create_task(self._count_gc(process))
        return await asyncio.shield(self._gc_count_task)

    async def _count_gc(self, process: ProcessSampler) -> tuple[int, float]:
        try:
            count = await asyncio.to_thread(process.count_gc_objects)
            self._gc_count = (count, self.clock())
            return self._gc_count
        finally:
            self._gc_count_task = None

    def recent_actions(self) -> list[ActionResult]:
        """The latest automatic and manual action results, newest last."""
        return self.actions.recent_results()

    def alert_channels(self) -> dict[str, ChannelReport]:
        """Each delivery channel's health and pending deliveries."""
        return self.dispatcher.report()

    async def send_test_alert(self, channel: str, severity: Level = Level.WARNING) -> Receipt:
        """A test alert through one channel now (``KeyError`` if not configured, ``DeliveryFailed`` if refused)."""
        return await self.dispatcher.send_test(channel, make_test_alert(self.sampler.target_label, severity))

    def run_gc(self) -> ActionResult:
        """The manual ``POST /health/actions/gc`` (rate-limited; see :class:`GcAction`)."""
        result = self.gc_action.run()
        self.actions.recent.append(result)
        return result
