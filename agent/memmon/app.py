"""The agent: one :class:`~memmon.targetwatch.TargetWatch` per watched target (kept by
:class:`~memmon.targetset.TargetSet`), sharing the store, the alert dispatcher, the sampling threads and memmon's
own counters. With ``memmon.assembly`` (which builds the parts), ``memmon.targetset`` (the targets as they come and
go) and ``memmon.targetwatch`` (one target's pipeline), the wiring. ``ProductionMemoryMonitor`` is the guide's
library entry point: its lifecycle, and what the health API, the metrics and the library read, over every target.

Threads: sampling and evaluation run in worker threads (file reads never block the event loop: one thread for one
target, up to four shared by many); SQLite runs in another (one connection, so every store call is serialised in
submission order). Everything else runs on the event loop.

One target (the guide's ``target`` section, or one ``--pid``/``--match``/``--cgroup``/``--unit``) behaves as it
always has, host thresholds included. Several (``targets``, or a flag given twice, or a glob) are each judged on
their own memory, and the host once, as target ``host`` (system and swap thresholds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from memmon.actions.caches import CacheRegistry
from memmon.actions.gc import GcAction
from memmon.actions.inprocess import NonessentialWorkers
from memmon.actions.throttle import Throttle
from memmon.alerting.channel import Receipt
from memmon.alerting.dispatcher import ChannelReport
from memmon.alerting.manager import AlertManager
from memmon.alerting.testalert import make_test_alert
from memmon.assembly import (
    AgentParts,
    build_dispatcher,
    build_pod_reporter,
    build_store,
)
from memmon.config import Settings, load_settings
from memmon.config_summary import summaries
from memmon.kits.shared_result import SharedResult
from memmon.model import (
    ActionResult,
    Alert,
    Degradation,
    Evaluation,
    HistoryPoint,
    Level,
    LimitPrediction,
    TargetState,
)
from memmon.sampling.host import HostSampler
from memmon.sampling.snapshot import SnapshotSampler
from memmon.storage.queries import HistoryQueries
from memmon.storage.reads import HistoryReader
from memmon.targetset import TargetSet
from memmon.targetwatch import TargetWatch, severity_key
from memmon.telemetry import Telemetry

if TYPE_CHECKING:
    from memmon.nodemode import NodeMode
    from memmon.noderoster import PodTarget

T = TypeVar("T")
log = logging.getLogger("memmon.monitor")

GC_COUNT_MIN_SECONDS = 5.0
"""``?gc_objects=now`` counts at most this often: ``gc.get_objects()`` is O(heap) and holds the GIL throughout
(every thread, the check's included, waits), so a burst of requests shares one count."""
SAMPLING_THREADS = 4
"""Sampling threads shared by the targets of a multi-target agent: a slow sampler holds one, not every target."""
RESTORED_POINTS_MAX = 50_000
"""At most this many of the previous run's points refill the targets' rings at start (the rest stay in SQLite)."""
HOST_MAX_AGE_SECONDS = 0.25
"""The targets of a multi-target agent (the host target too) share a ``/proc/meminfo`` reading younger than this:
hundreds of checks a second parse it a few times."""


class ProductionMemoryMonitor:
    """Samples, grades and records memory at a fixed rate; the guide's ``ProductionMemoryMonitor``.

    ``ProductionMemoryMonitor(config_path)`` validates the config at once (``ConfigError`` on a bad one);
    ``await start_monitoring()`` opens the store and starts the check loops; ``await stop_monitoring()`` stops
    them, flushes the store and closes it. Custom handlers: ``monitor.alert_manager.add_handler(fn)``.

    ``watches`` holds one :class:`TargetWatch` per target (config order; ``host`` last in a multi-target agent).
    The single-target attributes (``sampler``, ``evaluator``, ``actions``, ``leakwatch``, ``kernel``,
    ``history``, ...) are the first target's.
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
        self.dispatcher, self.routing_warnings = build_dispatcher(
            self.settings, self.telemetry, active_alerts=self.active_alerts, clock=clock
        )
        self.alert_manager = AlertManager(self.telemetry, dispatcher=self.dispatcher)
        self.caches = CacheRegistry()
        self.throttle = Throttle()
        """The app wraps work in it (``async with monitor.throttle:`` / ``with monitor.throttle:``); memmon
        shrinks its capacity at critical and emergency and restores it when the level clears."""
        self.nonessential = NonessentialWorkers()
        self.store, self.recorder = build_store(self.settings, self.telemetry, clock=clock)
        self.queries = HistoryQueries(self.recorder, self.store.path)
        """History and alert-log reads: rings first, then the store (never on the check's or the writer's thread)."""
        self.gc_action = GcAction(self.telemetry, monotonic=monotonic, clock=clock)
        self._sample_pool: ThreadPoolExecutor | None = None
        self.parts = AgentParts(
            telemetry=self.telemetry,
            recorder=self.recorder,
            alert_manager=self.alert_manager,
            run_in_pool=self._in_pool,
            caches=self.caches,
            throttle=self.throttle,
            nonessential=self.nonessential,
            # Node mode reports on each target's pod (memmon.nodemode), never on memmon's own.
            pod_reporter=None if self.settings.node.enabled else build_pod_reporter(self.settings),
            clock=clock,
            monotonic=monotonic,
        )
        self.pod_reporter = self.parts.pod_reporter
        self.host = HostSampler(max_age=HOST_MAX_AGE_SECONDS if self.settings.multi_target else 0.0)
        """One host reader for every target (``/proc/meminfo``)."""
        self.target_set = TargetSet(
            self.settings, self.parts, self.host, sampler=sampler, monotonic=monotonic
        )
        self.watches = self.target_set.watches
        """One :class:`TargetWatch` per target, by name (the target set's own dict)."""
        self.roster = self.target_set.roster
        self.node: NodeMode | None = None
        """Node mode's pods and containers (``memmon.nodemode``); None otherwise."""
        if self.settings.node.enabled:
            # Imported only in node mode: no other configuration loads the Kubernetes client (footprint).
            from memmon.nodemode import NodeMode

            self.node = NodeMode(
                self.settings,
                self.telemetry,
                add=self._add_pod_target,
                drop=self.target_set.drop,
                missing_for=self.target_set.missing_for,
                clock=clock,
                monotonic=monotonic,
            )
        self._gc_count: SharedResult[int] = SharedResult(
            GC_COUNT_MIN_SECONDS, clock=clock, monotonic=monotonic
        )
        self.started_at: float | None = None
        self._started_monotonic: float | None = None
        self._roster_task: asyncio.Task[None] | None = None
        self._running = False

    def _add_pod_target(self, target: PodTarget) -> None:
        """Node mode: watch a pod or container (started at once when the agent runs)."""
        assert self.node is not None
        log.info("watching %s", target.name)
        self.target_set.add(
            target.name,
            target.settings,
            labels=target.labels,
            pod_reporter=self.node.reporter(target),
            restart=self.node.restart(target),
        )

    # -- the first target's parts (the single-target API) ------------------------------------------------------

    @property
    def primary(self) -> TargetWatch:
        """The first target (the only one of a single-target agent)."""
        return next(iter(self.watches.values()))

    @property
    def focus(self) -> TargetWatch:
        """The worst target now (level, then fill): what ``/health`` shows; the only one of a single target."""
        if len(self.watches) == 1:
            return self.primary
        return min(list(self.watches.values()), key=severity_key)

    def ordered_watches(self) -> list[TargetWatch]:
        """Every target, worst first. Safe from the metrics thread: the list of targets is copied at once (the
        roster adds and forgets targets on the event loop)."""
        return sorted(list(self.watches.values()), key=severity_key)

    @property
    def sampler(self) -> SnapshotSampler:
        """The first target's sampler."""
        return self.primary.sampler

    @property
    def evaluator(self) -> Any:
        """The first target's evaluator."""
        return self.primary.evaluator

    @property
    def actions(self) -> Any:
        """The first target's action runner."""
        return self.primary.actions

    @property
    def leakwatch(self) -> Any:
        """The first target's leak detection and prediction."""
        return self.primary.leakwatch

    @property
    def kernel(self) -> Any:
        """The first target's kernel notifications, usage watcher and ``memory.high`` guard."""
        return self.primary.kernel

    @property
    def history(self) -> Any:
        """The first target's history ring."""
        return self.primary.history

    @property
    def liveness(self) -> Any:
        """The first target's liveness restart strategy, when it is the one chosen."""
        return self.primary.liveness

    @property
    def oom_watch(self) -> Any:
        """The first target's OOM kill watch."""
        return self.primary.oom_watch

    @property
    def notices(self) -> Any:
        """The first target's action notices."""
        return self.primary.notices

    @property
    def level_log(self) -> Any:
        """The first target's level-change log line."""
        return self.primary.level_log

    @property
    def targets(self) -> Any:
        """Who the first target's actions may touch."""
        return self.primary.targets

    @property
    def _loop(self) -> Any:
        return self.primary.loop

    @property
    def latest(self) -> Evaluation | None:
        """The latest check of the worst target (of the only one, for a single target)."""
        return self.focus.latest

    def add_check_listener(self, listener: Callable[[Evaluation], object]) -> None:
        """Call ``listener(evaluation)`` after every check of every target, on the event loop (quick work only)."""
        self.target_set.listeners.append(listener)

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
        """Open the store (raises ``StoreError``), restore the previous run's state, start the check loops."""
        if self._running:
            return
        size = self.settings.monitoring.history_size
        recent_wanted = size if len(self.watches) == 1 else min(size * len(self.watches), RESTORED_POINTS_MAX)
        active, recent = await self.recorder.open(recent_wanted)
        self.queries.reopen()
        try:
            await self.dispatcher.start()
        except BaseException:
            await self.recorder.close()  # releases the state directory's lock
            raise
        for warning in self.routing_warnings:
            log.warning("%s", warning)
        self.started_at = self.clock()
        self._started_monotonic = self.monotonic()
        self.target_set.resolve()
        if self.node is not None:
            await self.node.start()
            await self.node.refresh()
        self.target_set.size_rings()
        stale = self.target_set.restore(active, recent, self.started_at)
        self._running = True
        loop = asyncio.get_running_loop()
        self.target_set.start(loop)
        if self.roster.has_patterns:
            self._roster_task = loop.create_task(self.target_set.follow_roster(), name="memmon-roster")
        if self.node is not None:
            self._roster_task = loop.create_task(self.node.run(), name="memmon-node")
        self.recorder.start()
        if stale:
            self.recorder.add_alerts(stale)
            self.alert_manager.publish(stale)
        for line in summaries(self.settings):
            log.log(logging.WARNING if line.startswith("warning:") else logging.INFO, "%s", line)
        count = len(self.watches)
        what = self.primary.name if count == 1 else f"{count} targets ({', '.join(self.watches)})"
        log.info(
            "monitoring %s every %gs (state in %s)",
            what,
            self.settings.monitoring.check_interval,
            self.store.path,
        )

    async def stop_monitoring(self, wait_seconds: float = 4.0) -> None:
        """Stop the loops, let handlers finish briefly, flush and close the store. Idempotent."""
        if not self._running:
            return
        self._running = False
        if self._roster_task is not None:
            self._roster_task.cancel()
            self._roster_task = None
        if self.node is not None:
            await self.node.close()
        watches = self.target_set.stop()
        self.queries.close()  # reads end now, so nothing queues before the final flush
        await asyncio.gather(*(watch.wait_stopped(wait_seconds / 2) for watch in watches))
        await asyncio.gather(*(watch.close(wait_seconds / 8) for watch in watches))
        await self.alert_manager.drain(wait_seconds / 4)
        await self.dispatcher.close(wait_seconds / 4)
        await self.recorder.close()
        if self._sample_pool is not None:
            self._sample_pool.shutdown(wait=False, cancel_futures=True)
            self._sample_pool = None

    @property
    def monitoring_active(self) -> bool:
        """True while the check loops run."""
        return self._running and any(watch.running for watch in self.watches.values())

    @property
    def uptime_seconds(self) -> float:
        """Seconds since :meth:`start_monitoring` (0 before)."""
        return 0.0 if self._started_monotonic is None else self.monotonic() - self._started_monotonic

    # -- the check ---------------------------------------------------------------------------------------------

    async def check_now(self) -> Evaluation:
        """One full check of every target now; returns the worst target's evaluation (the only one's for a single
        target)."""
        if len(self.watches) == 1:
            return await self.primary.check_now()
        await asyncio.gather(*(watch.check_now() for watch in list(self.watches.values())))
        latest = self.focus.latest
        assert latest is not None
        return latest

    async def _in_pool(self, fn: Callable[[], T]) -> T:
        if self._sample_pool is None:
            threads = 1 if len(self.watches) == 1 and not self.roster.has_patterns else SAMPLING_THREADS
            self._sample_pool = ThreadPoolExecutor(threads, thread_name_prefix="memmon-sample")
        return await asyncio.get_running_loop().run_in_executor(self._sample_pool, fn)

    @staticmethod
    def actions_reason(evaluation: Evaluation) -> str:
        """The worst component's reason, or why the level is ok."""
        worst = max(evaluation.components, key=lambda c: c.level, default=None)
        return worst.reason if worst is not None and evaluation.level > Level.OK else "all components ok"

    # -- what the health API reads -----------------------------------------------------------------------------

    @property
    def level(self) -> Level:
        """The worst target's level."""
        return max((watch.level for watch in self.watches.values()), default=Level.OK)

    @property
    def degraded(self) -> tuple[Degradation, ...]:
        """Sources that failed in the latest checks (named by target when there are several), plus the store and
        the alert channels when they are failing."""
        if len(self.watches) == 1:
            sampled = self.primary.degraded
        else:
            sampled = tuple(
                Degradation(d.source, f"{watch.name}: {d.reason}")
                for watch in self.watches.values()
                for d in watch.degraded
            )
        store = (Degradation("store", self.recorder.problem),) if self.recorder.problem else ()
        channels = tuple(
            Degradation(f"alerting.{name}", why) for name, why in self.dispatcher.degraded().items()
        )
        return (*sampled, *store, *channels)

    def is_live(self, scope: str = "app") -> bool:
        """Every check loop runs and finished a check recently (within ``server.live_stale_seconds``); for the
        ``app`` scope also: no graceful restart through the liveness probe is requested."""
        if not self.monitoring_active:
            return False
        watches = list(self.watches.values())
        if scope == "app" and any(w.liveness is not None and w.liveness.failing for w in watches):
            return False
        stale_after = self.settings.live_stale_seconds
        now = self.monotonic()
        started = self._started_monotonic or 0.0
        return all(
            now - ((w.loop.last_completed if w.loop is not None else None) or started) <= stale_after
            for w in watches
        )

    def is_ready(self) -> bool:
        """A single target: a first sample judged it (present: memmon cannot vouch for what it cannot see; a
        sidecar's app is not up either then) and the level is not one configured to shed load. Several: every
        target that is present was checked and none is at such a level (a missing one does not make the agent
        unready: it is reported in ``/health/targets``)."""
        if len(self.watches) == 1:
            return self.primary.is_ready()
        fail = self.settings.server.ready_fail_level_set
        present = [
            w
            for w in self.watches.values()
            if w.latest is None or w.latest.sample.target_state is TargetState.PRESENT
        ]
        return all(w.latest is not None and w.level not in fail for w in present)

    def active_alerts(self) -> tuple[Alert, ...]:
        """Alerts firing now, target by target (thresholds, then a suspected leak or a predicted crossing, then an
        OOM kill)."""
        return tuple(alert for watch in self.watches.values() for alert in watch.active_alerts())

    def server_report(self) -> dict[str, Any] | None:
        """A pre-fork server's masters, workers, budget, fattest worker and what recycling has learnt (the
        ``server`` block of /health/memory) for the worst target; None for other targets."""
        return self.focus.server_report()

    @property
    def prediction(self) -> LimitPrediction | None:
        """The worst target's latest time-to-limit prediction (predictive alerting on), else None."""
        return self.focus.leakwatch.prediction

    def leaks(self) -> dict[str, Any]:
        """What GET /health/leaks shows (the worst target's)."""
        report: dict[str, Any] = self.focus.leakwatch.report()
        return report

    async def leak_snapshot(self, seconds: float) -> dict[str, Any]:
        """A tracemalloc window (library mode) or the target's biggest mappings (agent mode), on request."""
        leakwatch = self.focus.leakwatch
        snapshot: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
            None, leakwatch.snapshot, seconds
        )
        return snapshot

    def watch_named(self, target: str | None) -> TargetWatch:
        """The target of that name (``KeyError`` naming the known ones), or the worst for None."""
        if target is None:
            return self.focus
        try:
            return self.watches[target]
        except KeyError:
            raise KeyError(f"no target {target!r}; targets: {', '.join(self.watches)}") from None

    async def history_since(self, since: float, target: str | None = None) -> list[HistoryPoint]:
        """A target's samples since ``since`` (epoch seconds): from its ring when it covers the window, else from
        SQLite (unbounded); the worst target's when none is named."""
        watch = self.watch_named(target)
        return await self.queries.points_since(watch.history, watch.name, since)

    async def alerts_since(self, since: float, target: str | None = None) -> list[Alert]:
        """Alert records started, resolved or still firing since ``since`` (newest first), of one target or all."""
        return await self.queries.alerts_since(since, self.active_alerts(), target)

    async def history_window(
        self, since: float, max_points: int, target: str | None = None
    ) -> tuple[int, list[HistoryPoint]]:
        """A target's samples since ``since`` as ``(how many, at most max_points of them: peaks and the newest
        kept)``; the worst target's when none is named (:meth:`HistoryQueries.window`)."""
        watch = self.watch_named(target)
        return await self.queries.window(watch.history, watch.name, since, max_points)

    @property
    def reader(self) -> HistoryReader:
        """The history reader (its own threads and connections, never the check's or the writer's)."""
        return self.queries.reader

    async def count_gc_objects(self) -> tuple[int, float] | None:
        """``(gc-tracked objects, epoch seconds counted)`` now, or from the count less than
        :data:`GC_COUNT_MIN_SECONDS` ago (concurrent callers share one count); None when the target is not
        memmon's own process. Never on the check's thread."""
        process = self.primary.process
        if process is None or not process.is_own_process:
            return None
        return await self._gc_count.get(process.count_gc_objects)

    def recent_actions(self) -> list[ActionResult]:
        """The latest automatic and manual action results of every target, newest last."""
        if len(self.watches) == 1:
            return self.primary.recent_actions()
        results = [result for watch in self.watches.values() for result in watch.recent_actions()]
        return sorted(results, key=lambda result: result.started_at)

    def alert_channels(self) -> dict[str, ChannelReport]:
        """Each delivery channel's health and pending deliveries."""
        return self.dispatcher.report()

    async def send_test_alert(self, channel: str, severity: Level = Level.WARNING) -> Receipt:
        """A test alert through one channel now (``KeyError`` if not configured, ``DeliveryFailed`` if refused)."""
        return await self.dispatcher.send_test(
            channel, make_test_alert(self.primary.sampler.target_label, severity)
        )

    def run_gc(self) -> ActionResult:
        """The manual ``POST /health/actions/gc`` (rate-limited; see :class:`GcAction`)."""
        result = self.gc_action.run()
        self.primary.actions.recent.append(result)
        return result
