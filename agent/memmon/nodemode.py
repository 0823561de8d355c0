"""Node mode's moving parts: the pod watch, the roster of the node's pods and containers, one Kubernetes client
per pod (annotations, Events, eviction), the node's restart gate, and the loop that keeps the agent's targets in
step with the node.

The agent (``memmon.app``) owns the targets; this module tells it which to add and which to drop:
``await node.refresh()`` computes the roster's view (off the event loop: a directory walk) and calls back
``add(target)`` for a new or changed target and ``drop(name)`` for one that left. A target whose pod cgroup is
gone is not dropped at once: its watch reports it missing (alerts resolved with ``target_missing``) and it is
dropped after ``monitoring.forget_missing_targets_seconds``, as a pattern's match is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from memmon.actions.eviction import EvictRestart
from memmon.actions.pod_gate import GatedRestart, NodeRestartGate
from memmon.actions.pod_reporter import PodReporter
from memmon.actions.restarting import RestartStrategy
from memmon.actions.restarts import build_restart
from memmon.actions.targets import TargetProcesses
from memmon.config import Settings
from memmon.kits.kubeconfig import KubeConfig, why_not_in_cluster
from memmon.kits.kubernetes_client import KubernetesClient
from memmon.kits.pod_info import PodInfo
from memmon.kits.pod_watch import PodWatch
from memmon.noderoster import NodeRoster, NodeView, PodTarget
from memmon.sampling.kubepods import PodCgroup, discover_pods, kubepods_root, main_pids
from memmon.telemetry import Telemetry

log = logging.getLogger("memmon.node")

REFRESH_SECONDS = 5.0
"""The longest a new pod waits to be watched (a watch event about the node's pods refreshes sooner)."""
REFRESH_GAP_SECONDS = 1.0
"""The shortest time between two refreshes (a burst of watch events is one refresh)."""
SYNC_WAIT_SECONDS = 3.0
"""How long the first refresh waits for the pod list (pods unnamed until then would start as ``pod-<uid>``)."""
BAD_ANNOTATION_REASON = "MemmonBadAnnotation"


class NodeMode:
    """The node's pods as targets. ``start()`` begins the pod watch; ``run()`` refreshes until ``close()``."""

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        *,
        add: Callable[[PodTarget], None],
        drop: Callable[[str], Awaitable[None]],
        missing_for: Callable[[str], float | None],
        discover: Callable[[Path], tuple[PodCgroup, ...]] = discover_pods,
        kube: KubeConfig | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``missing_for(name)`` is how long a target's watch has seen it missing (None while present)."""
        self.settings = settings
        self.node = settings.node
        self.telemetry = telemetry
        self.add = add
        self.drop = drop
        self.missing_for = missing_for
        self.clock = clock
        self.kube = kube if kube is not None else KubeConfig.in_cluster(own_pod=False)
        node_name = self.node.node_name()
        assert node_name is not None, "validated by the settings"
        self.node_name = node_name
        self._changed = asyncio.Event()
        self.watch: PodWatch | None = None
        if self.kube is None:
            log.warning(
                "node mode without the Kubernetes API (%s): pods are watched by uid (pod-<uid>), never evicted",
                why_not_in_cluster(own_pod=False),
            )
        else:
            self.watch = PodWatch(self.kube, node_name, on_change=self._changed.set)
        self.roster = NodeRoster(settings, discover=discover)
        graceful = settings.auto_response.emergency_actions.graceful_restart
        self.gate = NodeRestartGate(
            max_per_hour=self.node.max_restarts_per_hour,
            pod_cooldown_seconds=graceful.cooldown_seconds,
            monotonic=monotonic,
        )
        self.current: dict[str, PodTarget] = {}
        self._clients: dict[str, KubernetesClient] = {}
        self._told: set[tuple[str, str, str]] = set()
        """(pod uid, annotation, value) already reported by an Event: each wrong value is told once."""
        self._task: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[Any]] = set()
        self._running = False

    async def start(self) -> None:
        """Start the pod watch and wait briefly for its first list (the pods' names)."""
        self._running = True
        root = Path(self.node.cgroup_root)
        if kubepods_root(root) is None:
            log.warning(
                "no kubepods cgroup under %s (yet): is node.cgroup_root the node's cgroup tree? (in a container, "
                "mount the host's /sys/fs/cgroup read-only and point node.cgroup_root at it)",
                root,
            )
        if self.watch is None:
            return
        self._task = asyncio.get_running_loop().create_task(self.watch.run(), name="memmon-pod-watch")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SYNC_WAIT_SECONDS
        while not self.watch.synced and (left := deadline - loop.time()) > 0:
            # An empty node's first list changes nothing (no event): polled, briefly.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))
        if not self.watch.synced:
            log.warning(
                "the pod list of node %s is not in yet (%s); unnamed pods start as pod-<uid>",
                self.node_name,
                self.watch.last_error or "no answer",
            )

    async def run(self) -> None:
        """Refresh every ``REFRESH_SECONDS``, or sooner after a change of the node's pods."""
        while self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REFRESH_SECONDS)
            self._changed.clear()
            try:
                await self.refresh()
            except Exception:  # a failed refresh must not end node mode: the next one tries again
                log.exception("refreshing the node's pods failed")
            await asyncio.sleep(REFRESH_GAP_SECONDS)

    async def refresh(self) -> NodeView:
        """Bring the agent's targets in step with the node now."""
        # The pods are copied here, on the loop: the watch changes its map on the loop, the walk runs in a thread.
        pods = self.watch.pods() if self.watch is not None else {}
        view = await asyncio.to_thread(self.roster.view, pods)
        self._count(view)
        for name, target in view.targets.items():
            running = self.current.get(name)
            if running is target:
                continue
            if running is not None:
                await self.drop(name)
            self.current[name] = target
            self.add(target)
        forget_after = self.settings.monitoring.forget_missing_targets_seconds
        for name in [name for name in self.current if name not in view.targets]:
            target = self.current[name]
            missing = self.missing_for(name)
            # Deselected (an annotation, a namespace): dropped now. Gone from the tree: reported missing first.
            if (target.directory.exists() and missing is None) or (
                missing is not None and missing >= forget_after
            ):
                del self.current[name]
                await self.drop(name)
        live = {target.pod_uid for target in self.current.values()}
        for uid in [uid for uid in self._clients if uid not in live]:
            self.gate.forget(uid)
            client = self._clients.pop(uid)
            await client.close()
        self._told = {
            told for told in self._told if told[0] in view.problems
        }  # fixed ones are told again if broken
        for uid, (pod, problems) in view.problems.items():
            for problem in problems:
                told = (uid, problem.key, problem.value)
                if told not in self._told:
                    self._told.add(told)
                    log.warning("pod %s/%s: annotation %s", pod.namespace, pod.name, problem.text())
                    self._tell(pod, BAD_ANNOTATION_REASON, f"annotation {problem.text()}")
        return view

    def _count(self, view: NodeView) -> None:
        watched = sum(1 for target in view.targets.values() if target.container is None)
        self.telemetry.node_pods = {"watched": watched, "excluded": view.excluded, "unknown": view.unknown}
        if self.watch is not None:
            watch = self.watch
            self.telemetry.kube_watch = {
                "lists": watch.lists,
                "watches": watch.watches,
                "events": watch.events,
                "bookmarks": watch.bookmarks,
                "relists": watch.relists,
                "failures": watch.failures,
                "bytes": watch.bytes_received,
            }

    # -- what each target acts with ------------------------------------------------------------------------------

    def client(self, pod: PodInfo, uid: str) -> KubernetesClient | None:
        """The pod's API client (one per pod, shared by its targets); None without the API."""
        if self.kube is None:
            return None
        client = self._clients.get(uid)
        if client is None:
            config = replace(self.kube, namespace=pod.namespace, pod=pod.name, pod_uid=pod.uid)
            client = self._clients[uid] = KubernetesClient(config)
        return client

    def reporter(self, target: PodTarget) -> PodReporter | None:
        """Annotations (the pod's own target) and Events (every target) on the target's pod."""
        if not self.node.annotate_pods or target.pod is None:
            return None
        client = self.client(target.pod, target.pod_uid)
        if client is None:
            return None
        subject = f"container {target.container}" if target.container else None
        return PodReporter(client, annotate=target.container is None, subject=subject)

    def restart(self, target: PodTarget) -> tuple[RestartStrategy | None, RestartStrategy | None]:
        """The target's graceful restart behind the node's gate: eviction of its pod, or SIGTERM to its container's
        main process; (None, None) for ``none``."""
        inner: RestartStrategy | None = None
        graceful = target.settings.auto_response.emergency_actions.graceful_restart
        if target.restart == "evict" and target.pod is not None:
            client = self.client(target.pod, target.pod_uid)
            if client is not None:
                inner = EvictRestart(client, attempts=graceful.evict_attempts)
        elif target.restart == "signal":
            directory = target.directory
            processes = TargetProcesses(pids=lambda: main_pids(directory))
            inner, _, _ = build_restart(graceful, processes)
        if inner is None:
            return None, None
        return GatedRestart(inner, self.gate, target.pod_uid, clock=self.clock), None

    def _tell(self, pod: PodInfo, reason: str, message: str) -> None:
        client = self.client(pod, pod.cgroup_uid)
        if client is None:
            return
        task = asyncio.get_running_loop().create_task(PodReporter(client).warning_event(reason, message))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def close(self) -> None:
        """Stop the watch and the refreshes; close the pods' clients."""
        self._running = False
        self._changed.set()
        if self.watch is not None:
            await self.watch.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
