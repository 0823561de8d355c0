"""The targets one agent watches: one :class:`~memmon.targetwatch.TargetWatch` each, added as the configuration,
the patterns' matches and node mode's pods appear, forgotten when gone.

A single target is built from its sampler and judges the host too, as it always has. Several are each judged on
their own memory, and the host once, as target ``host`` (system and swap thresholds, when configured), last. The
agent's ``monitoring.history_size`` is split among their rings (:data:`RING_MIN_POINTS` at least). A target
added while the agent runs (a new match, a new pod) starts at once; one whose match is missing for
``monitoring.forget_missing_targets_seconds`` is stopped and forgotten (its series leave ``/metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from memmon.assembly import AgentParts, build_host_sampler, build_sampler
from memmon.config import Settings
from memmon.model import Alert, Evaluation, HistoryPoint
from memmon.roster import Roster
from memmon.sampling.host import HostSampler
from memmon.sampling.snapshot import SnapshotSampler
from memmon.targetwatch import TargetWatch

__all__ = ["RING_MIN_POINTS", "TargetSet"]

log = logging.getLogger("memmon.monitor")

RING_MIN_POINTS = 60
"""The smallest in-memory ring of one target of a multi-target agent (longer windows are read from SQLite)."""


class TargetSet:
    """``watches`` (config order; ``host`` last with several targets) and how they come and go.

    Lifecycle, driven by the agent: :meth:`resolve` (the patterns' first matches), :meth:`size_rings`,
    :meth:`restore`, :meth:`start`; then :meth:`follow_roster` as a task; :meth:`stop` at the end.
    """

    def __init__(
        self,
        settings: Settings,
        parts: AgentParts,
        host: HostSampler,
        *,
        sampler: SnapshotSampler | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """The configuration's fixed targets (``sampler``: the single target's, when given by a library user)."""
        self.settings = settings
        self.parts = parts
        self.host = host
        self.monotonic = monotonic
        self.roster = Roster(settings)
        self.watches: dict[str, TargetWatch] = {}
        self.listeners: list[Callable[[Evaluation], object]] = []
        """Called after every check of every target, on the event loop (the same list is every watch's)."""
        self.ring_points = settings.monitoring.history_size
        """Points of history in memory per target (the whole ``history_size`` for a single target)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        if settings.multi_target:
            for name, own in self.roster.fixed():
                self.add(name, own)
            if settings.thresholds.system_thresholds() or settings.thresholds.swap_thresholds():
                self.add("host", self.roster.host_settings(), host_only=True)
        else:
            if sampler is None:
                sampler, _ = build_sampler(settings, host=host)
            self.add(sampler.target_label, settings, sampler=sampler)

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return self._loop is not None

    def add(
        self,
        name: str,
        settings: Settings,
        *,
        sampler: SnapshotSampler | None = None,
        host_only: bool = False,
        **pod: Any,
    ) -> TargetWatch:
        """A new target's watch, started at once while the agent runs; ``pod`` holds node mode's labels, pod
        reporter and restart."""
        multi = self.settings.multi_target
        if host_only:
            sampler = build_host_sampler(self.host, name)
        elif sampler is None:
            sampler, _ = build_sampler(settings, name=name, host=self.host)
        watch = TargetWatch(
            name,
            settings,
            self.parts,
            sampler=sampler,
            judge_target=not host_only,
            judge_host=host_only or not multi,
            named_logs=multi,
            **pod,
        )
        self.watches[name] = watch
        if self._loop is not None:
            watch.size_history(self.ring_points)
            watch.start(self._loop, self.listeners)
        return watch

    async def drop(self, name: str) -> None:
        """Stop and forget a target's watch (its series leave /metrics)."""
        watch = self.watches.pop(name, None)
        if watch is None:
            return
        log.info("target %s dropped", name)
        await _stopped(watch)

    def missing_for(self, name: str) -> float | None:
        """Seconds a target's watch has seen it missing; None while present (or unknown)."""
        watch = self.watches.get(name)
        if watch is None or watch.missing_since is None:
            return None
        return self.monotonic() - watch.missing_since

    def resolve(self) -> None:
        """Watch the patterns' current matches (before :meth:`start`)."""
        for name, own in self.roster.refresh(set(self.watches)).added:
            self.add(name, own)

    def size_rings(self) -> None:
        """Several targets: ``monitoring.history_size`` is the agent's, split among them (a ring holds ~0.4 KiB
        per point)."""
        if self.settings.multi_target:
            size = self.settings.monitoring.history_size
            self.ring_points = max(RING_MIN_POINTS, size // len(self.watches))
            for watch in self.watches.values():
                watch.size_history(self.ring_points)

    def restore(self, active: Sequence[Alert], recent: Sequence[HistoryPoint], now: float) -> list[Alert]:
        """Each target takes back its firing alerts and recent points; the first also takes the alerts of targets
        no longer watched, and resolves them (as a single target always has). Returns the alerts resolved."""
        names = set(self.watches)
        first = next(iter(self.watches.values()))
        stale: list[Alert] = []
        for watch in self.watches.values():
            owned = [
                a for a in active if a.target == watch.name or (watch is first and a.target not in names)
            ]
            stale += watch.restore(owned, recent, now)
        return stale

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start every watch, spread over one check interval so that their checks do not all fall together."""
        self._loop = loop
        count = len(self.watches)
        interval = self.settings.monitoring.check_interval
        for index, watch in enumerate(self.watches.values()):
            watch.start(loop, self.listeners, delay=interval * index / count if count > 1 else 0.0)

    def stop(self) -> list[TargetWatch]:
        """Stop every watch's loop (no new target starts after this); returns them, to be awaited and closed."""
        self._loop = None
        watches = list(self.watches.values())
        for watch in watches:
            watch.stop()
        return watches

    async def follow_roster(self) -> None:
        """Re-resolve the patterns until :meth:`stop`: a watch per new match, matches missing too long forgotten."""
        forget_after = self.settings.monitoring.forget_missing_targets_seconds
        while self.running:
            await asyncio.sleep(self.roster.interval)
            try:
                change = await asyncio.to_thread(self.roster.refresh, set(self.watches))
            except Exception:  # a broken pattern resolution must not end the agent
                log.exception("re-resolving the target patterns failed")
                continue
            for name, own in change.added:
                log.info("target %s appeared; watching it", name)
                self.add(name, own)
            now = self.monotonic()
            for name in self.roster.matched(set(self.watches)):
                watch = self.watches[name]
                if watch.missing_since is not None and now - watch.missing_since >= forget_after:
                    log.info("target %s missing for %.0fs; forgotten", name, now - watch.missing_since)
                    del self.watches[name]
                    await _stopped(watch)


async def _stopped(watch: TargetWatch) -> None:
    """Stop a watch and wait (briefly) for its loop and its parts to end."""
    watch.stop()
    await watch.wait_stopped(1.0)
    await watch.close(1.0)
