"""Which targets a node-mode agent watches: the pods and containers of its node's cgroup tree, named and
configured from the pods the API server binds to the node.

The cgroup tree says what runs here and what it uses (``memmon.sampling.kubepods``); the pod watch says who it is
(``memmon.kits.pod_watch``: namespace, name, containers, annotations). They are joined by the pod UID (a static
pod's mirror carries the UID of the cgroup in its ``kubernetes.io/config.mirror`` annotation) and the container
id (``status.containerStatuses[].containerID``). A container cgroup no container status names is the pod's
sandbox (the pause process) and is not a target.

Targets: ``<namespace>/<pod>`` judged against the pod's limit (the pod cgroup's), and with ``node.containers``
``<namespace>/<pod>/<container>`` against the container's own (the host's memory when it has none: the cgroup
sampler's effective limit). A pod cgroup the API has not named (not yet, or the API is unreachable) is
``pod-<uid>`` when ``node.unknown_pods`` is set: watched and alerted on, never restarted by eviction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memmon.config import Settings
from memmon.config.alerting import AlertLevelSettings
from memmon.config.pod_annotations import AnnotationProblem, PodOverrides, is_setting, pod_overrides
from memmon.config.targets import TargetEntry
from memmon.kits.pod_info import PodInfo
from memmon.model import ALERT_LEVELS
from memmon.sampling.kubepods import PodCgroup, discover_pods

NO_OVERRIDES = PodOverrides()
"""An unnamed pod's: no annotations to read."""
STRATEGIES = {"evict": "kubernetes-evict", "signal": "signal", "none": "none"}
"""``node.restart`` / ``memmon.io/restart`` -> the graceful-restart strategy a target runs."""


@dataclass(frozen=True)
class PodTarget:
    """One target of the node: a pod or one of its containers, with its settings and labels."""

    name: str
    settings: Settings
    labels: Mapping[str, str]
    """``namespace``, ``pod`` and (a container's) ``container``: on its series and Alertmanager alerts."""
    pod_uid: str
    """The pod cgroup's UID: the key of the node-wide restart rules."""
    pod: PodInfo | None
    """The pod as the API server knows it (None for an unnamed pod cgroup)."""
    container: str | None
    restart: str
    """``evict``, ``signal`` or ``none``: what this target does at emergency."""
    directory: Path


@dataclass(frozen=True)
class NodeView:
    """The targets the node has now, the pods left out (by namespace or annotation), and each pod's annotation
    problems (by pod UID)."""

    targets: Mapping[str, PodTarget]
    excluded: int = 0
    unknown: int = 0
    problems: Mapping[str, tuple[PodInfo, tuple[AnnotationProblem, ...]]] = field(default_factory=dict)


class NodeRoster:
    """Joins ``discover(root)`` (the pod cgroups) with the API's pods of the node."""

    def __init__(
        self,
        settings: Settings,
        *,
        discover: Callable[[Path], tuple[PodCgroup, ...]] = discover_pods,
    ) -> None:
        self.settings = settings
        self.node = settings.node
        self.discover = discover
        self._overrides: dict[tuple[str, str], PodOverrides] = {}
        """Parsed annotations by (pod UID, their memmon.io/ keys and values): parsed once per change."""
        self._seen: dict[str, PodInfo] = {}
        """The pods named at the latest view, by cgroup UID (kept while their cgroup lives on)."""
        self._built: dict[tuple[object, ...], PodTarget] = {}
        """Targets by what they were built from: a target's settings are validated once, and an unchanged target
        is the same object at the next view (the agent keeps its watch running)."""

    def view(self, known: Mapping[str, PodInfo]) -> NodeView:
        """The targets now, given the API's pods of the node by cgroup UID (one directory walk and a join).
        One view at a time (it keeps what it built for the next)."""
        self._used: set[tuple[object, ...]] = set()
        targets: dict[str, PodTarget] = {}
        problems: dict[str, tuple[PodInfo, tuple[AnnotationProblem, ...]]] = {}
        excluded = unknown = 0
        seen: dict[str, PodInfo] = {}
        for cgroup in self.discover(Path(self.node.cgroup_root)):
            # A pod the API no longer lists while its cgroup lingers (deleted, terminating) keeps its name.
            pod = known.get(cgroup.uid) or self._seen.get(cgroup.uid)
            if pod is not None:
                seen[cgroup.uid] = pod
            if pod is None:
                unknown += 1
                if self.node.unknown_pods and self.node.select == "all":
                    name = f"pod-{cgroup.uid}"
                    targets[name] = self._target(
                        name, cgroup.directory, cgroup.uid, None, None, PodOverrides()
                    )
                continue
            overrides = self._parsed(pod)
            if overrides.problems:
                problems[cgroup.uid] = (pod, overrides.problems)
            if not self._selected(pod, overrides):
                excluded += 1
                continue
            name = f"{pod.namespace}/{pod.name}"
            targets[name] = self._target(name, cgroup.directory, cgroup.uid, pod, None, overrides)
            if not self.node.containers:
                continue
            by_id = {c.container_id: c.name for c in pod.containers if c.container_id}
            for container in cgroup.containers:
                container_name = by_id.get(container.container_id)
                if container_name is None:
                    continue  # the sandbox (pause) or a container the API has not reported yet
                full = f"{name}/{container_name}"
                targets[full] = self._target(
                    full, container.directory, cgroup.uid, pod, container_name, overrides
                )
        self._seen = seen
        self._overrides = {key: value for key, value in self._overrides.items() if key[0] in seen}
        self._built = {key: value for key, value in self._built.items() if key in self._used}
        return NodeView(targets, excluded, unknown, problems)

    def _parsed(self, pod: PodInfo) -> PodOverrides:
        # memmon's own level annotations are left out: annotating a pod must not rebuild its targets.
        fingerprint = repr(sorted((k, v) for k, v in pod.annotations.items() if is_setting(k)))
        key = (pod.cgroup_uid, fingerprint)
        overrides = self._overrides.get(key)
        if overrides is None:
            overrides = pod_overrides(pod.annotations, self.settings.thresholds, self.settings.auto_response)
            self._overrides[key] = overrides
        return overrides

    def _selected(self, pod: PodInfo, overrides: PodOverrides) -> bool:
        node = self.node
        if overrides.watch is False or pod.namespace in node.exclude_namespaces:
            return False
        if node.select == "annotated":
            return overrides.watch is True
        if node.select == "namespaces":
            return pod.namespace in node.namespaces
        return True

    def _target(
        self,
        name: str,
        directory: Path,
        uid: str,
        pod: PodInfo | None,
        container: str | None,
        overrides: PodOverrides,
    ) -> PodTarget:
        key = (name, directory, uid, container, pod is None, id(overrides))
        built = self._built.get(key)
        if built is None or (built.pod is None) != (pod is None):
            built = self._build(name, directory, uid, pod, container, overrides)
            self._built[key] = built
        self._used.add(key)
        return built

    def _build(
        self,
        name: str,
        directory: Path,
        uid: str,
        pod: PodInfo | None,
        container: str | None,
        overrides: PodOverrides,
    ) -> PodTarget:
        restart = overrides.restart or self.node.restart
        if pod is None and restart == "evict":
            restart = "none"  # nothing to evict by: an unnamed pod is alerted on only
        if container is None and restart == "signal":
            restart = (
                "none"  # a pod's main processes include its sandbox: its containers are signalled instead
            )
        graceful: dict[str, object] = {"strategy": STRATEGIES[restart]}
        if restart == "signal":
            graceful["signal"] = "SIGTERM"
        response = {**overrides.auto_response}
        emergency = dict(response.get("emergency_actions", {}))
        emergency["graceful_restart"] = {**emergency.get("graceful_restart", {}), **graceful}
        response["emergency_actions"] = emergency
        if self.settings.auto_response.memory_high_guard.enabled != "on":
            # ``auto`` is off here: on cgroup v2 the kubelet owns memory.high (its MemoryQoS feature), and systemd
            # may rewrite a unit's; only an explicit "on" lets memmon write into the kubelet's cgroups.
            response["memory_high_guard"] = {"enabled": "off"}
        entry = TargetEntry.model_construct(
            cgroup=str(directory),
            name=name,
            thresholds=dict(overrides.thresholds),
            auto_response=response,
            alert_levels=(
                None
                if overrides.channels is None
                else {
                    level: AlertLevelSettings(channels=list(overrides.channels))
                    for level in (lv.label for lv in ALERT_LEVELS)
                }
            ),
        )
        labels = {"namespace": pod.namespace, "pod": pod.name} if pod is not None else {"pod": f"pod-{uid}"}
        if container is not None:
            labels["container"] = container
        return PodTarget(
            name=name,
            settings=self.settings.for_target(entry),
            labels=labels,
            pod_uid=uid,
            pod=pod,
            container=container,
            restart=restart,
            directory=directory,
        )
