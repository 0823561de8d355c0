"""Between two checks: the usage watcher, the kernel notifications and the ``memory.high`` guard, kept on the
watched cgroup (or processes) as every check finds it, and re-armed when the cgroup was recreated (a unit or
container restart, memmon's own graceful restart included).

Wiring like ``memmon.app``: it joins sampling (``UsageWatcher``, ``MemoryEvents``) with an action
(``MemoryHighGuard``), fed by the evaluation rules' byte thresholds. Each layer and why it exists is in the
README, "Beating the OOM killer where it runs".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from memmon.actions.memory_high import MemoryHighGuard
from memmon.assembly import build_memory_high_guard, build_usage_watcher
from memmon.config import Settings
from memmon.evaluation.rules import ThresholdRule
from memmon.model import Degradation, Evaluation, Level, MemorySample, TargetKind
from memmon.sampling.cgroup_location import CgroupLocation
from memmon.sampling.events import MemoryEvents
from memmon.sampling.usage_gauge import CgroupUsage, GaugeSpec, ProcessRss
from memmon.sampling.usage_watch import UsageWatcher, WatchPlan

log = logging.getLogger("memmon.monitor")
_TOLD: set[str] = set()
"""The memory-event problems this process has logged at warning level (their cgroup path left out)."""


class KernelWatch:
    """Keeps the layers that run a check between two polls; ``on_event(reason)`` runs one (on the loop)."""

    def __init__(self, settings: Settings, rule: ThresholdRule, on_event: Callable[[str], None]) -> None:
        self.rule = rule
        self.on_event = on_event
        self.kernel_events = settings.monitoring.kernel_events
        self.usage_watcher: UsageWatcher | None = build_usage_watcher(settings, self._usage_crossed)
        self.memory_high_guard: MemoryHighGuard | None = build_memory_high_guard(settings)
        self.memory_events: MemoryEvents | None = None
        self._events_cgroup: tuple[Path, int] | None = None  # (directory, inode) the events are armed on
        self._watched_cgroup: CgroupUsage | None = None  # read by the usage watcher, kept while it is gone
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the usage watcher; notifications go to ``loop``."""
        self._loop = loop
        self._stopped = False
        if self.usage_watcher is not None:
            self.usage_watcher.start()

    def stop(self) -> None:
        """Stop the watcher, close the notifications, put ``memory.high`` back; a check still running then
        changes nothing (it would set the guard again after it was put back). Idempotent."""
        self._stopped = True
        if self.usage_watcher is not None:
            self.usage_watcher.stop()
        self._close_memory_events()
        if self.memory_high_guard is not None:
            self.memory_high_guard.release()

    def follow(self, evaluation: Evaluation, location: CgroupLocation | None, pids: tuple[int, ...]) -> None:
        """After every check (on the loop): every layer on the cgroup at ``location`` (or the target ``pids``)
        with the thresholds of this check's sample. Nothing after ``stop()``."""
        if self._stopped:
            return
        sample = evaluation.sample
        levels = self.rule.watch_levels(sample)
        if self.kernel_events:
            self._arm_memory_events(sample, location)
        if self.usage_watcher is not None:
            self.usage_watcher.follow(self._watch_plan(sample, levels, location, pids))
        if self.memory_high_guard is not None:
            limited = sample.cgroup is not None and sample.limit_source == "cgroup"
            self.memory_high_guard.follow(
                location.directory if location is not None and limited else None,
                location.version if location is not None else 0,
                levels.get(Level.EMERGENCY),
                sample.cgroup.limit_bytes if sample.cgroup is not None else None,
            )

    def degraded(self) -> tuple[Degradation, ...]:
        """What could not be armed or read now: ``kernel_events``, ``usage_watch``, ``memory_high_guard``."""
        found: list[Degradation] = []
        if self.memory_events is not None and self.memory_events.problems:
            found.append(Degradation("kernel_events", "; ".join(self.memory_events.problems)))
        if self.usage_watcher is not None and self.usage_watcher.problem:
            found.append(Degradation("usage_watch", self.usage_watcher.problem))
        if self.memory_high_guard is not None and self.memory_high_guard.problem:
            found.append(Degradation("memory_high_guard", self.memory_high_guard.problem))
        return tuple(found)

    # -- the usage watcher ---------------------------------------------------------------------------------------

    def _watch_plan(
        self,
        sample: MemorySample,
        levels: Mapping[Level, int],
        location: CgroupLocation | None,
        pids: tuple[int, ...],
    ) -> WatchPlan | None:
        """The cgroup's usage where the cgroup is the target or its limit applies, else the target processes'
        resident size; None when there is nothing to read."""
        emergency = levels.get(Level.EMERGENCY)
        limited = sample.cgroup is not None and sample.cgroup.limit_bytes is not None
        spec: GaugeSpec
        seen: int | None = None
        if location is not None and (sample.target_kind is TargetKind.CGROUP or limited):
            spec = self._watched_cgroup = CgroupUsage(location.directory, location.version)
        elif sample.target_kind is TargetKind.CGROUP and self._watched_cgroup is not None:
            # Gone (a unit or container restart): the watcher retries its path and runs a check when it is back.
            spec = self._watched_cgroup
        elif sample.target_kind is TargetKind.PROCESS and pids:
            spec = ProcessRss(tuple(sorted(pids)))
            seen = sample.process.rss_bytes if sample.process is not None else None
        else:
            return None
        if isinstance(spec, CgroupUsage) and sample.cgroup is not None:
            usage = sample.cgroup.usage_bytes
            seen = usage if emergency is None or usage < emergency else sample.cgroup.working_set_bytes
        thresholds = tuple(sorted(set(levels.values())))
        events = self.memory_events
        kernel_notifies = (
            isinstance(spec, CgroupUsage)
            and spec.version == 1
            and events is not None
            and not events.ended
            and not events.problems
            and events.location.directory == spec.directory
            and set(thresholds) <= set(events.armed)
        )
        return WatchPlan(spec, thresholds, emergency, sample.effective_limit_bytes, seen, kernel_notifies)

    def _usage_crossed(self, reason: str) -> None:
        """From the watcher's thread: hand the reason to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self.on_event, f"watch {reason}")

    # -- kernel notifications ------------------------------------------------------------------------------------

    def _arm_memory_events(self, sample: MemorySample, location: CgroupLocation | None) -> None:
        """Notifications armed at the cgroup usages where a level changes (re-armed when the limit changes, and
        on the successor of a removed or recreated cgroup: a new inode)."""
        if location is None:
            self._close_memory_events()
            return
        try:
            identity = (location.directory, os.stat(location.directory).st_ino)
        except OSError:  # gone: armed again on its successor
            self._close_memory_events()
            return
        events = self.memory_events
        if events is not None and (events.ended or self._events_cgroup != identity):
            log.info("memory events: re-arming on %s", location.directory)
            self._close_memory_events()
            events = None
        wanted = self.rule.cgroup_thresholds(sample)
        if events is None:
            events = self.memory_events = MemoryEvents(location, self.on_event)
            self._events_cgroup = identity
            events.attach(asyncio.get_running_loop())
            events.arm(wanted)
            for problem in events.problems:
                # Said once per kind of problem per agent: a node-mode agent on a read-only tree has hundreds of
                # targets failing the same way (the others at debug).
                kind = problem.replace(str(location.directory), "<cgroup>")
                level = logging.DEBUG if kind in _TOLD else logging.WARNING
                _TOLD.add(kind)
                log.log(level, "memory events: %s; relying on polling and the usage watcher", problem)
        elif tuple(wanted) != events.armed:
            events.arm(wanted)

    def _close_memory_events(self) -> None:
        if self.memory_events is not None:
            self.memory_events.close()
            self.memory_events = None
            self._events_cgroup = None
