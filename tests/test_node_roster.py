"""Node mode's roster and restart gate: which pods and containers become targets (selection, annotations, unnamed
pods, sandboxes, static pods), with what settings, and the node's one-restart-per-pod and hourly cap rules."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from memmon.actions.pod_gate import GatedRestart, NodeRestartGate
from memmon.config import load_settings
from memmon.config.pod_annotations import pod_overrides
from memmon.kits.pod_info import PodInfo, pod_info
from memmon.model import ActionResult
from memmon.noderoster import NodeRoster, NodeView
from tests.actions.kube_standin import make_pod

NODE = "node-1"


class Tree:
    """A kubepods tree (cgroupfs driver names) of plain directories: the roster only lists directories."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pods: dict[str, PodInfo] = {}

    def pod(
        self,
        namespace: str,
        name: str,
        containers: tuple[str, ...] = ("app",),
        annotations: dict[str, str] | None = None,
        *,
        listed: bool = True,
    ) -> tuple[str, dict[str, str]]:
        """A pod cgroup with a sandbox and ``containers``; listed at the API unless ``listed`` is False.
        Returns its uid and container name -> id."""
        uid = str(uuid.uuid4())
        pod_dir = self.root / "kubepods" / "burstable" / f"pod{uid}"
        ids = {container: uuid.uuid4().hex * 2 for container in containers}
        for directory in (pod_dir / (uuid.uuid4().hex * 2), *(pod_dir / cid for cid in ids.values())):
            directory.mkdir(parents=True)
        if listed:
            spec: list[tuple[str, str | None, str | None]] = [
                (container, f"containerd://{cid}", "128Mi") for container, cid in ids.items()
            ]
            self.pods[uid] = pod_info(make_pod(namespace, name, uid, NODE, spec, annotations=annotations))
        return uid, ids

    def listed(self) -> Mapping[str, PodInfo]:
        """The API's pods, by cgroup uid."""
        return dict(self.pods)


def roster(tree: Tree, **node: Any) -> NodeRoster:
    """A roster over ``tree`` with the node settings ``node``."""
    settings = load_settings(
        None, overrides={"node": {"enabled": True, "name": NODE, "cgroup_root": str(tree.root), **node}}
    )
    return NodeRoster(settings)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """An empty kubepods tree."""
    return Tree(tmp_path)


def test_each_pod_and_container_is_a_target_with_its_labels_and_the_sandbox_is_not(tree: Tree) -> None:
    """A pod with two containers: the pod, each container (labels namespace/pod/container); the sandbox left out."""
    tree.pod("shop", "web-1", ("app", "proxy"))
    view = roster(tree).view(tree.listed())
    assert set(view.targets) == {"shop/web-1", "shop/web-1/app", "shop/web-1/proxy"}
    assert view.targets["shop/web-1"].labels == {"namespace": "shop", "pod": "web-1"}
    assert view.targets["shop/web-1/proxy"].labels == {
        "namespace": "shop",
        "pod": "web-1",
        "container": "proxy",
    }
    assert view.targets["shop/web-1/app"].settings.target.cgroup == str(
        view.targets["shop/web-1/app"].directory
    )


def test_selection_all_annotated_namespaces_and_exclusions(tree: Tree) -> None:
    """select: all (minus exclude_namespaces and memmon.io/watch "false"), annotated, namespaces."""
    tree.pod("shop", "a")
    tree.pod("shop", "b", annotations={"memmon.io/watch": "true"})
    tree.pod("shop", "c", annotations={"memmon.io/watch": "false"})
    tree.pod("kube-system", "d")

    def pods(view: NodeView) -> set[str]:
        """The pod targets of a view."""
        return {name for name, target in view.targets.items() if target.container is None}

    view = roster(tree, exclude_namespaces=["kube-system"]).view(tree.listed())
    assert pods(view) == {"shop/a", "shop/b"} and view.excluded == 2
    assert pods(roster(tree, select="annotated").view(tree.listed())) == {"shop/b"}
    assert pods(roster(tree, select="namespaces", namespaces=["kube-system"]).view(tree.listed())) == {
        "kube-system/d"
    }


def test_annotations_set_thresholds_restart_and_routing_and_wrong_ones_are_problems(tree: Tree) -> None:
    """memmon.io/ thresholds, restart and channels reach the pod's targets; a wrong value is a problem naming the
    key and what it expects, and the rest of the pod's annotations still apply."""
    annotations = {
        "memmon.io/memory-percent-warning": "60",
        "memmon.io/restart": "signal",
        "memmon.io/alert-channels": "log",
        "memmon.io/grace-seconds": "soon",
    }
    uid, _ = tree.pod("shop", "web", annotations=annotations)
    view = roster(tree).view(tree.listed())
    container = view.targets["shop/web/app"]
    assert container.settings.thresholds.memory_percent_warning == 60
    assert container.restart == "signal"
    assert container.settings.auto_response.emergency_actions.graceful_restart.strategy == "signal"
    assert container.settings.alerting.alert_levels["emergency"].channels == ["log"]
    assert view.targets["shop/web"].restart == "none"  # a pod's own target is not signalled (its sandbox)
    _pod, problems = view.problems[uid]
    assert [p.key for p in problems] == ["memmon.io/grace-seconds"]
    assert "soon" in problems[0].text() and "expected" in problems[0].text()


def test_wrong_annotations_name_the_key_and_the_expected_value() -> None:
    """Unknown keys, a bad restart, a bad boolean, an unknown channel and thresholds out of order are all reported;
    memmon's own level annotations are not settings and are ignored."""
    settings = load_settings(None)
    annotations = {
        "memmon.io/wtch": "true",
        "memmon.io/restart": "reboot",
        "memmon.io/watch": "maybe",
        "memmon.io/alert-channels": "pager",
        "memmon.io/memory-percent-warning": "99",
        "memmon.io/level": "warning",
        "other.io/x": "y",
    }
    overrides = pod_overrides(annotations, settings.thresholds, settings.auto_response)
    keys = {problem.key for problem in overrides.problems}
    assert keys == {
        "memmon.io/wtch",
        "memmon.io/restart",
        "memmon.io/watch",
        "memmon.io/alert-channels",
        "memmon.io/memory-percent-warning",
    }
    assert overrides.thresholds == {} and overrides.restart is None and overrides.watch is None


def test_a_pod_the_api_has_not_named_is_watched_by_uid_and_never_evicted(tree: Tree) -> None:
    """An unlisted pod cgroup: target pod-<uid> (no containers), restart none under evict; with unknown_pods off or
    another selection, not watched."""
    uid, _ = tree.pod("shop", "ghost", listed=False)
    view = roster(tree).view(tree.listed())
    assert set(view.targets) == {f"pod-{uid}"} and view.unknown == 1
    assert view.targets[f"pod-{uid}"].restart == "none"
    assert not roster(tree, unknown_pods=False).view(tree.listed()).targets
    assert not roster(tree, select="annotated").view(tree.listed()).targets


def test_a_static_pod_joins_by_its_mirror_annotation(tree: Tree) -> None:
    """A static pod's cgroup carries the manifest hash; its mirror pod's kubernetes.io/config.mirror names it."""
    uid, ids = tree.pod("kube-system", "etcd-node-1", ("etcd",), listed=False)
    mirror = make_pod(
        "kube-system",
        "etcd-node-1",
        str(uuid.uuid4()),
        NODE,
        [("etcd", f"containerd://{ids['etcd']}", None)],
        annotations={"kubernetes.io/config.mirror": uid},
    )
    info = pod_info(mirror)
    tree.pods[info.cgroup_uid] = info
    assert set(roster(tree).view(tree.listed()).targets) == {
        "kube-system/etcd-node-1",
        "kube-system/etcd-node-1/etcd",
    }


def test_an_unchanged_pod_keeps_its_target_and_a_changed_annotation_replaces_it(tree: Tree) -> None:
    """Views of an unchanged node give the same target objects (the agent keeps their watches); a changed
    memmon.io annotation gives a new one with the new settings."""
    uid, _ = tree.pod("shop", "web")
    nodes = roster(tree)
    first = nodes.view(tree.listed()).targets
    second = nodes.view(tree.listed()).targets
    assert all(second[name] is target for name, target in first.items())
    pod = tree.pods[uid]
    tree.pods[uid] = PodInfo(**{**pod.__dict__, "annotations": {"memmon.io/memory-percent-warning": "55"}})
    third = nodes.view(tree.listed()).targets
    assert third["shop/web/app"] is not first["shop/web/app"]
    assert third["shop/web/app"].settings.thresholds.memory_percent_warning == 55


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_allows_one_restart_per_pod_a_cooldown_and_a_node_wide_hourly_cap() -> None:
    """A pod already restarting or in its cool-down is refused, another pod is not; the cap counts the node's
    restarts over a rolling hour."""
    clock = Clock()
    gate = NodeRestartGate(max_per_hour=2, pod_cooldown_seconds=60, monotonic=clock)
    assert gate.begin("a") is None
    assert "another restart" in str(gate.begin("a"))
    assert gate.begin("b") is None
    gate.end("a")
    gate.end("b")
    clock.now += 30
    assert "cool-down" in str(gate.begin("a"))
    clock.now += 31
    assert "node-wide cap" in str(gate.begin("c"))
    clock.now += 3600
    assert gate.begin("c") is None
    assert gate.refused == 3


class Restart:
    """A restart strategy that records its calls."""

    name = "restart:test"

    def __init__(self) -> None:
        self.calls = 0

    async def restart(self, reason: str) -> ActionResult:
        self.calls += 1
        return ActionResult(action=self.name, success=True, started_at=0.0, duration_seconds=0.0)


async def test_a_gated_restart_held_back_fails_saying_why_and_does_not_run() -> None:
    """Two targets of one pod: the second restart within the cool-down is a failed result naming the rule."""
    clock = Clock()
    gate = NodeRestartGate(max_per_hour=10, pod_cooldown_seconds=60, monotonic=clock)
    inner = Restart()
    first = await GatedRestart(inner, gate, "pod-a").restart("emergency")
    second = await GatedRestart(inner, gate, "pod-a").restart("emergency")
    assert first.success and not second.success
    assert inner.calls == 1 and "cool-down" in str(second.error)


def test_node_mode_leaves_memory_high_to_the_kubelet_unless_the_guard_is_explicitly_on(tree: Tree) -> None:
    """The memory.high guard's ``auto`` is off for pods (the kubelet owns memory.high on v2); ``on`` is kept."""
    tree.pod("shop", "web")
    default = roster(tree).view(tree.listed()).targets["shop/web/app"]
    assert default.settings.auto_response.memory_high_guard.enabled == "off"
    settings = load_settings(
        None,
        overrides={
            "node": {"enabled": True, "name": NODE, "cgroup_root": str(tree.root)},
            "auto_response": {"memory_high_guard": {"enabled": "on"}},
        },
    )
    explicit = NodeRoster(settings).view(tree.listed()).targets["shop/web/app"]
    assert explicit.settings.auto_response.memory_high_guard.enabled == "on"


def test_a_pod_deleted_from_the_api_keeps_its_name_while_its_cgroup_lingers(tree: Tree) -> None:
    """A terminating pod (gone from the API, its cgroup still there) keeps its targets, not renamed pod-<uid>;
    once its cgroup is gone too, it is gone from the view."""
    uid, _ = tree.pod("shop", "web")
    nodes = roster(tree)
    before = nodes.view(tree.listed()).targets
    del tree.pods[uid]
    during = nodes.view(tree.listed()).targets
    assert set(during) == {"shop/web", "shop/web/app"}
    assert during["shop/web"] is before["shop/web"]
    for directory in sorted((tree.root / "kubepods").rglob("*"), key=lambda d: len(d.parts), reverse=True):
        directory.rmdir()
    assert not nodes.view(tree.listed()).targets
