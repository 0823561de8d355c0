"""Building the pipeline's parts from Settings: samplers, thresholds, the alert dispatcher, the action targets,
the pod reporter. Wiring, like ``memmon.app`` (which assembles the monitor from these), so it may import every
stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from memmon.actions.kubernetes import KubeConfig, KubernetesClient, PodReporter, why_not_in_cluster
from memmon.actions.memory_high import MemoryHighGuard
from memmon.actions.targets import TargetProcesses
from memmon.alerting.dispatcher import AlertDispatcher, Backoff
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.routing import build_channels, build_routing
from memmon.alerting.spool import AlertSpool
from memmon.config import Settings
from memmon.evaluation.rules import ThresholdSet
from memmon.model import Alert, TargetKind
from memmon.sampling.base import SourceUnavailable
from memmon.sampling.cgroup import CgroupSampler, cgroup_at, cgroup_of_unit, locate_cgroup_of
from memmon.sampling.host import HostSampler
from memmon.sampling.pressure import PressureSampler
from memmon.sampling.process import ProcessSampler
from memmon.sampling.snapshot import SnapshotSampler
from memmon.sampling.usage_watch import UsageWatcher
from memmon.telemetry import Telemetry

log = logging.getLogger("memmon.monitor")


def build_sampler(settings: Settings) -> tuple[SnapshotSampler, ProcessSampler]:
    """The samplers the settings ask for: target processes, their (or the given) cgroup, host and pressure."""
    target = settings.target
    server = target.server is not None
    cgroup: CgroupSampler  # created below; ``tops`` reads it at sampling time
    tops = members = None
    if server and not (target.pids or target.match):
        # The masters are the cgroup's main processes (members whose parent is outside it), read each check.
        tops = lambda: _members(cgroup)  # noqa: E731
    elif target.kind == "cgroup" and not (target.pids or target.match):
        # The processes of a cgroup target are its members (not memmon itself, the default process target).
        members = lambda: _members_if_there(cgroup)  # noqa: E731
    process = ProcessSampler(
        target.pids,
        target.match,
        gc_objects_every=settings.monitoring.gc_objects_every,
        server=server,
        tops=tops,
        members=members,
    )
    cgroup_locate: Callable[[], Any]
    if target.cgroup:
        path = target.cgroup
        cgroup_locate = lambda: cgroup_at(path)  # noqa: E731 - a retried locator, re-resolved until it exists
    elif target.unit:
        unit = target.unit
        cgroup_locate = lambda: cgroup_of_unit(unit)  # noqa: E731
    else:
        # The cgroup of the first target process: in a container, its limit is the one that kills. A target that
        # does not exist yet is waited for: memmon's own cgroup (the host's limit) would stand in for it for good.
        def cgroup_locate() -> Any:
            if process.is_own_process:
                return locate_cgroup_of("self")
            if not process.pids:
                raise SourceUnavailable(f"waiting for {process.label} to locate its cgroup")
            return locate_cgroup_of(process.pids[0])

    cgroup = CgroupSampler(locate=cgroup_locate)
    try:
        location = cgroup_locate()
    except Exception:  # resolved again at every check until it appears
        location = None
    kind = TargetKind.CGROUP if target.kind == "cgroup" else TargetKind.PROCESS
    label = f"cgroup:{target.cgroup or target.unit}" if kind is TargetKind.CGROUP else process.label
    if server and kind is TargetKind.PROCESS:
        label = f"{target.server}:{label}"
    snapshot = SnapshotSampler(
        process=process,
        cgroup=cgroup,
        host=HostSampler(),
        pressure=PressureSampler.for_cgroup(location),
        target_kind=kind,
        target_label=label,
        configured_limit_bytes=target.memory_limit_bytes,
    )
    return snapshot, process


def _members(cgroup: CgroupSampler) -> tuple[int, ...]:
    """The pids in the located cgroup (``cgroup.procs``), empty until it is located or when unreadable."""
    location = cgroup.location
    if location is None:
        return ()
    try:
        return tuple(int(pid) for pid in (location.directory / "cgroup.procs").read_text().split())
    except (OSError, ValueError):
        return ()


def _members_if_there(cgroup: CgroupSampler) -> tuple[int, ...] | None:
    """The pids in the located cgroup; None when it is not located or its directory is gone (not "empty")."""
    location = cgroup.location
    if location is None or not location.directory.is_dir():
        return None
    return _members(cgroup)


def build_thresholds(settings: Settings) -> ThresholdSet:
    """The four threshold families of the config, levels that are unset left out."""
    thresholds = settings.thresholds
    return ThresholdSet(
        memory_mb=thresholds.mb_thresholds(),
        memory_percent=thresholds.percent_thresholds(),
        system_percent=thresholds.system_thresholds(),
        swap_percent=thresholds.swap_thresholds(),
    )


def build_dispatcher(
    settings: Settings,
    telemetry: Telemetry,
    *,
    active_alerts: Callable[[], Iterable[Alert]],
    clock: Callable[[], float] = time.time,
) -> tuple[AlertDispatcher, tuple[str, ...]]:
    """The alert dispatcher over the configured channels, and the routing warnings to log at start."""
    alerting = settings.alerting
    delivery = alerting.delivery
    routing = build_routing(settings, build_channels(settings))
    dispatcher = AlertDispatcher(
        routing.channels,
        routing.routes,
        AlertSpool(
            Path(settings.storage.state_dir) / "spool.db",
            max_entries_per_channel=delivery.spool_max_entries,
            clock=clock,
        ),
        telemetry,
        limiter=NotificationLimiter(
            alerting.rate_limit_seconds,
            immediate_emergency=settings.auto_response.emergency_actions.send_immediate_alert,
            clock=clock,
        ),
        send_resolved=routing.send_resolved,
        backoff=Backoff(delivery.backoff_initial_seconds, delivery.backoff_max_seconds),
        degraded_after=delivery.degraded_after_failures,
        attempt_timeout=delivery.timeout_seconds + 5,
        active_alerts=active_alerts,
        clock=clock,
    )
    return dispatcher, routing.warnings


def build_targets(settings: Settings, sampler: SnapshotSampler) -> TargetProcesses:
    """Who agent-mode actions may touch: the pid/match processes, else the target cgroup's members; memmon's own
    process only in library mode (no target given: it watches itself)."""
    target = settings.target
    process = sampler.process
    cgroup = sampler.cgroup
    if target.server is not None and process is not None:
        # A whole-server restart signals the masters only: the master drains its workers itself.
        return TargetProcesses(pids=lambda: process.masters)
    members_of_cgroup = target.kind == "cgroup" and not (target.pids or target.match)
    return TargetProcesses(
        pids=lambda: process.pids if process is not None else (),
        cgroup_dir=(lambda: cgroup.location.directory if cgroup and cgroup.location else None)
        if members_of_cgroup
        else None,
        own_target=process is not None and process.is_own_process and target.kind == "process",
    )


def build_usage_watcher(settings: Settings, on_crossing: Callable[[str], None]) -> UsageWatcher | None:
    """The usage watcher between checks, when enabled."""
    watch = settings.monitoring.usage_watch
    if not watch.enabled:
        return None
    return UsageWatcher(
        on_crossing,
        worst_case_bytes_per_second=watch.worst_case_mb_per_second * 2**20,
        min_interval=watch.min_interval_seconds,
        max_interval=watch.max_interval_seconds,
    )


def build_memory_high_guard(settings: Settings) -> MemoryHighGuard | None:
    """The cgroup v2 ``memory.high`` guard: ``on``, or ``auto`` with a graceful restart that will really run."""
    response = settings.auto_response
    guard = response.memory_high_guard
    restarting = (
        response.enabled
        and not response.dry_run
        and response.emergency_actions.prepare_restart
        and response.emergency_actions.graceful_restart.strategy != "none"
    )
    if guard.enabled == "off" or (guard.enabled == "auto" and not restarting):
        return None
    return MemoryHighGuard(guard.margin_percent, explicit=guard.enabled == "on")


def build_pod_reporter(settings: Settings) -> PodReporter | None:
    """Pod annotations and Events when running in a Kubernetes pod (one log line when not)."""
    if not settings.auto_response.kubernetes_events:
        return None
    config = KubeConfig.in_cluster()
    if config is None:
        log.info("pod annotations and events are off: %s", why_not_in_cluster())
        return None
    return PodReporter(KubernetesClient(config))
