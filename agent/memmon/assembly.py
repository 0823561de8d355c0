"""Building the pipeline's parts from Settings: samplers, thresholds, the alert dispatcher, the action targets,
the pod reporter. Wiring, like ``memmon.app`` (which assembles the monitor from these), so it may import every
stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memmon.actions.caches import CacheRegistry
from memmon.actions.inprocess import NonessentialWorkers, self_rss_bytes
from memmon.actions.liveness import LivenessRestart
from memmon.actions.memory_high import MemoryHighGuard
from memmon.actions.restarting import Recheck, RestartStrategy
from memmon.actions.restarts import build_restart
from memmon.actions.runner import ActionRunner
from memmon.actions.signals import SignalAction
from memmon.actions.targets import TargetProcesses
from memmon.actions.throttle import Throttle
from memmon.alerting.channelworker import Backoff
from memmon.alerting.dispatcher import AlertDispatcher
from memmon.alerting.manager import AlertManager
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.routing import build_channels, build_routing
from memmon.alerting.spool import AlertSpool
from memmon.config import Settings
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import ActionResult, Alert, Evaluation, TargetKind
from memmon.sampling.base import SourceUnavailable
from memmon.sampling.cgroup import CgroupSampler, cgroup_at, cgroup_of_unit, locate_cgroup_of
from memmon.sampling.host import HostSampler
from memmon.sampling.pressure import PressureSampler
from memmon.sampling.process import ProcessSampler
from memmon.sampling.snapshot import SnapshotSampler
from memmon.sampling.usage_watch import UsageWatcher
from memmon.storage.lock import StateDirLock
from memmon.storage.recorder import StoreRecorder
from memmon.storage.store import MemoryStore
from memmon.telemetry import Telemetry

if TYPE_CHECKING:
    from memmon.actions.pod_reporter import PodReporter

log = logging.getLogger("memmon.monitor")


@dataclass(frozen=True)
class AgentParts:
    """What every target of one agent shares: the agent-wide settings, counters, store and alert path, the
    sampling threads, memmon's in-process actions (library mode), the pod reporter and the clocks."""

    telemetry: Telemetry
    recorder: StoreRecorder
    alert_manager: AlertManager
    run_in_pool: Callable[[Callable[[], Any]], Awaitable[Any]]
    caches: CacheRegistry
    throttle: Throttle
    nonessential: NonessentialWorkers
    pod_reporter: Any
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


def build_sampler(
    settings: Settings, *, name: str | None = None, host: HostSampler | None = None
) -> tuple[SnapshotSampler, ProcessSampler]:
    """The samplers the settings ask for: target processes, their (or the given) cgroup, host and pressure;
    ``name`` labels the samples (default: ``cgroup:<path or unit>``, ``pid:...``, ``match:...`` or ``self``)."""
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
        host=host or HostSampler(),
        pressure=PressureSampler.for_cgroup(location),
        target_kind=kind,
        target_label=name or label,
        configured_limit_bytes=target.memory_limit_bytes,
    )
    return snapshot, process


def build_host_sampler(host: HostSampler, name: str = "host") -> SnapshotSampler:
    """The host alone, judged once for every target of a multi-target agent (system and swap thresholds)."""
    return SnapshotSampler(
        process=None,
        cgroup=None,
        host=host,
        pressure=PressureSampler.for_cgroup(None),
        target_kind=TargetKind.HOST,
        target_label=name,
    )


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


def build_thresholds(settings: Settings, *, target: bool = True, host: bool = True) -> ThresholdSet:
    """The threshold families of the config, levels that are unset left out: the target's (memory MiB and
    percent) and the host's (system and swap percent); a multi-target agent judges the host once, apart."""
    thresholds = settings.thresholds
    return ThresholdSet(
        memory_mb=thresholds.mb_thresholds() if target else {},
        memory_percent=thresholds.percent_thresholds() if target else {},
        system_percent=thresholds.system_thresholds() if host else {},
        swap_percent=thresholds.swap_thresholds() if host else {},
        judges_target=target,
        judges_host=host,
    )


def build_evaluator(
    settings: Settings,
    *,
    judge_target: bool = True,
    judge_host: bool = True,
    clock: Callable[[], float] = time.time,
) -> Evaluator:
    """The evaluator of one target: its thresholds, hysteresis and hold time."""
    return Evaluator(
        ThresholdRule(build_thresholds(settings, target=judge_target, host=judge_host)),
        resolve_margin_ratio=settings.thresholds.resolve_margin_ratio,
        min_duration_seconds=settings.thresholds.min_duration_seconds,
        clock=clock,
    )


def build_action_runner(
    settings: Settings,
    parts: AgentParts,
    targets: TargetProcesses,
    process: ProcessSampler | None,
    *,
    recheck: Callable[[], Awaitable[Recheck]],
    on_restart: Callable[[ActionResult], Awaitable[None]],
    on_result: Callable[[ActionResult], None],
    worker_budget: Callable[[Evaluation], int | None],
    restart: tuple[RestartStrategy | None, RestartStrategy | None] | None = None,
) -> tuple[ActionRunner, LivenessRestart | None]:
    """One target's action runner (its restart strategy and fallback, cool-downs and hourly cap), and the
    liveness strategy when it is the one chosen (``/health/live`` reports it). ``restart`` (strategy, fallback)
    replaces what the settings would build."""
    liveness: LivenessRestart | None = None
    if restart is None:
        strategy, fallback, liveness = build_restart(
            settings.auto_response.emergency_actions.graceful_restart,
            targets,
            unit=settings.target.unit,
            workers=process.current_workers if process is not None and process.server else None,
            clock=parts.clock,
        )
    else:
        strategy, fallback = restart
    runner = ActionRunner(
        settings.auto_response,
        parts.telemetry,
        in_process=targets.own_target,
        caches=parts.caches,
        throttle=parts.throttle,
        nonessential=parts.nonessential,
        signals=lambda name: SignalAction(targets, name),
        restart=strategy,
        fallback=fallback,
        recheck=recheck,
        own_rss=self_rss_bytes,
        on_restart=on_restart,
        on_result=on_result,
        worker_budget=worker_budget,
        clock=parts.clock,
    )
    return runner, liveness


def build_store(
    settings: Settings, telemetry: Telemetry, *, clock: Callable[[], float] = time.time
) -> tuple[MemoryStore, StoreRecorder]:
    """The SQLite store of the state directory and its recorder (batched writes, the one-agent-per-directory
    lock naming this agent's bind address)."""
    storage = settings.storage
    store = MemoryStore(
        Path(storage.state_dir),
        retention_seconds=storage.retention_hours * 3600,
        alert_retention_seconds=storage.alert_retention_hours * 3600,
        clock=clock,
    )
    server = settings.server
    recorder = StoreRecorder(
        store,
        telemetry,
        flush_interval=storage.flush_interval_seconds,
        lock=StateDirLock(Path(storage.state_dir), bind=f"{server.bind}:{server.health_port}"),
    )
    return store, recorder


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
    channels = build_channels(settings.alerting)
    routing = build_routing(settings.alerting, channels)
    target_routes = {}
    warnings = list(routing.warnings)
    for entry in settings.targets:
        if entry.alert_levels is not None and not entry.is_pattern:
            own = build_routing(settings.for_target(entry).alerting, channels)
            target_routes[entry.default_name() or ""] = own.routes
            warnings += [f"targets[{entry.default_name()}]: {warning}" for warning in own.warnings]
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
        target_routes=target_routes,
    )
    return dispatcher, tuple(warnings)


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
    # Imported here: a configuration without Kubernetes events does not load the client (footprint).
    from memmon.actions.pod_reporter import PodReporter
    from memmon.kits.kubeconfig import KubeConfig, why_not_in_cluster
    from memmon.kits.kubernetes_client import KubernetesClient

    config = KubeConfig.in_cluster()
    if config is None:
        log.info("pod annotations and events are off: %s", why_not_in_cluster())
        return None
    return PodReporter(KubernetesClient(config))
