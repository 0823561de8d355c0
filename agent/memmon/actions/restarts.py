"""Choosing the graceful-restart strategy (and its fallback) from ``auto_response.emergency_actions``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from memmon.actions.liveness import LivenessRestart
from memmon.actions.recycle import WorkerRecycle, Workers
from memmon.actions.restarting import RestartStrategy
from memmon.actions.signals import SignalRestart
from memmon.actions.systemd import SystemdRestart
from memmon.actions.targets import TargetProcesses
from memmon.config.actions import GracefulRestartSettings

log = logging.getLogger("memmon.actions")


def build_restart(
    restart: GracefulRestartSettings,
    targets: TargetProcesses,
    *,
    unit: str | None = None,
    workers: Workers | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[RestartStrategy | None, RestartStrategy | None, LivenessRestart | None]:
    """(strategy, fallback, the liveness strategy when one of them is it, for /health/live); ``workers`` are a
    server's current (worker, master) pairs, for the ``recycle`` strategy; ``unit`` the target's unit (the
    ``systemd`` strategy's when ``restart.unit`` is not set)."""
    liveness: LivenessRestart | None = None

    def make(name: str) -> RestartStrategy | None:
        nonlocal liveness
        if name == "signal":
            return SignalRestart(
                targets,
                signal_name=restart.signal,
                grace_seconds=restart.grace_seconds,
                kill_after_grace=restart.kill_after_grace,
            )
        if name == "recycle":
            assert workers is not None and restart.worker_signal is not None, "validated by the settings"
            return WorkerRecycle(
                workers,
                signal_name=restart.worker_signal,
                grace_seconds=restart.grace_seconds,
                kill_after_grace=restart.kill_after_grace,
            )
        if name == "systemd":
            systemd_unit = restart.unit or unit
            assert systemd_unit is not None, "validated by the settings"
            return SystemdRestart(systemd_unit)
        if name == "kubernetes-evict":
            # Imported only when chosen: a configuration without it does not load the Kubernetes client.
            from memmon.actions.eviction import EvictRestart
            from memmon.kits.kubeconfig import KubeConfig, why_not_in_cluster
            from memmon.kits.kubernetes_client import KubernetesClient

            config = KubeConfig.in_cluster()
            if config is None:
                log.warning("kubernetes-evict restart unavailable: %s", why_not_in_cluster())
                return None
            return EvictRestart(KubernetesClient(config), attempts=restart.evict_attempts)
        if name == "kubernetes-liveness":
            liveness = liveness or LivenessRestart(clock=clock)
            return liveness
        return None

    primary = make(restart.strategy)
    fallback = make(restart.fallback)
    if primary is None and fallback is not None:
        primary, fallback = fallback, None
    return primary, fallback, liveness
