"""Node mode on a real cgroup v2 kernel with systemd as PID 1: the cgroup tree of a Kubernetes node built the way
the kubelet's systemd cgroup driver and containerd build it (transient slices and scopes through systemd's D-Bus
API: kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope, and
Guaranteed pods directly in kubepods.slice), 20 pods, the strict API stand-in listing them, memmon in node mode over
/sys/fs/cgroup. A leak in one container alerts for that pod alone and restarts it (an eviction at the stand-in, or
SIGTERM to the container's process); no other pod is touched. The same scenario as tests/test_node_mode.py (cgroup
v1 on the host), here on the kernel and the cgroup layout Kubernetes 1.35 nodes run.

memmon runs as a transient systemd service with a dynamic (unprivileged) user and a read-only /sys/fs/cgroup, as the
chart's DaemonSet mounts the host's: in evict mode it needs nothing more than reading cgroup and /proc files; in
signal mode it gets CAP_KILL (the pods' processes are root's), the capability the README names for that mode.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kernel_tests.conftest import FACTS, Install, Run, fields
from kernel_tests.vm import REPO, VM

PODS = 20
LEAKER = 7
LEAKER_NAME = f"web-{LEAKER}"
GUARANTEED = frozenset({18, 19})
"""Pods whose slice sits directly in kubepods.slice (the kubelet's Guaranteed QoS class); the others are burstable."""
NODE = "node-1"
CONTAINER_LIMIT = "256M"
POD_LIMIT = 512 * 2**20
LEAK_MIB = 200
"""78 % of the container's 256 MiB (emergency at 70 %), 39 % of the pod's 512 MiB."""
THRESHOLDS: dict[str, Any] = {
    "memory_warning_mb": None,
    "memory_critical_mb": None,
    "memory_emergency_mb": None,
    "memory_percent_warning": 30,
    "memory_percent_critical": 50,
    "memory_percent_emergency": 70,
    "swap_percent_warning": None,
    "swap_percent_critical": None,
    "swap_percent_emergency": None,
    "system_percent_warning": 99,
    "system_percent_critical": 99.5,
    "system_percent_emergency": 99.9,
}
# systemd properties of memmon-node.service: a dynamic unprivileged user (no capabilities) and a read-only
# /sys/fs/cgroup (ProtectControlGroups=yes, as the chart's read-only mount of the host's).
UNPRIVILEGED = "-p DynamicUser=yes -p ProtectControlGroups=yes -p CapabilityBoundingSet="
# Signal mode: the same, plus CAP_KILL (kill(2) of another user's process; the pods' processes run as root here).
WITH_CAP_KILL = (
    "-p DynamicUser=yes -p ProtectControlGroups=yes -p CapabilityBoundingSet=CAP_KILL"
    " -p AmbientCapabilities=CAP_KILL"
)


@dataclass(frozen=True)
class Pod:
    """One pod of the node: its API name and UID, QoS level, sandbox (pause) and ``app`` container ids."""

    index: int
    uid: str
    container_id: str
    sandbox_id: str

    @property
    def name(self) -> str:
        return f"web-{self.index}"

    @property
    def qos(self) -> str:
        return "guaranteed" if self.index in GUARANTEED else "burstable"

    @property
    def slice(self) -> str:
        """The pod slice's unit name, as the kubelet's systemd driver names it (UID dashes as underscores)."""
        uid = self.uid.replace("-", "_")
        return (
            f"kubepods-pod{uid}.slice" if self.qos == "guaranteed" else f"kubepods-{self.qos}-pod{uid}.slice"
        )


def _container_id() -> str:
    """64 lowercase hex digits, as containerd's ids."""
    return uuid.uuid4().hex + uuid.uuid4().hex


@dataclass(frozen=True)
class Node:
    """The node's pods (the leaker's container started by each test)."""

    pods: tuple[Pod, ...]

    @property
    def leaker(self) -> Pod:
        return self.pods[LEAKER]

    @property
    def others(self) -> tuple[Pod, ...]:
        return tuple(pod for pod in self.pods if pod.index != LEAKER)


def _standin_files(vm: VM, node: Node) -> None:
    """The stand-in module (with its packages' __init__ files) next to kube_standin_serve.py in the share, and the
    pods it serves (the sandboxes are not listed, as in the real API)."""
    guest = vm.share / "kt" / "guest"
    for relative in ("tests/__init__.py", "tests/actions/__init__.py", "tests/actions/kube_standin.py"):
        (guest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, guest / relative)
    pods = [
        {"name": pod.name, "uid": pod.uid, "container_id": pod.container_id, "limit": "256Mi"}
        for pod in node.pods
    ]
    (vm.share / "kt" / "node.json").write_text(json.dumps({"node": NODE, "pods": pods}))


def _config(vm: VM, restart: str) -> str:
    """memmon's node-mode configuration for ``restart`` in the share; its path in the guest."""
    config = {
        "monitoring": {"check_interval": 1.0},
        "thresholds": THRESHOLDS,
        "auto_response": {
            # The stand-in's eviction kills nothing, so the leak goes on: after the cool-down memmon evicts again
            # (rightly). The cool-down outlasts the test, so "one restart" is what every read sees; with 30 s, a
            # slow VM once read /health's actions before the second eviction and /metrics after it.
            "emergency_actions": {"graceful_restart": {"grace_seconds": 5, "cooldown_seconds": 600}}
        },
        "node": {"enabled": True, "name": NODE, "cgroup_root": "/sys/fs/cgroup", "restart": restart},
    }
    (vm.share / "kt" / f"node-{restart}.json").write_text(json.dumps(config))
    return f"/mnt/share/kt/node-{restart}.json"


def _tree_script(node: Node) -> str:
    """Build the node's cgroup tree through systemd; print its shape as key=value lines."""
    lines = ["source $KT/guest/node.sh", "set -e"]
    for pod in node.pods:
        lines.append(f"node_pod {pod.qos} {pod.uid} {POD_LIMIT}")
        lines.append(f"node_container {pod.slice} {pod.sandbox_id} 64M sleep infinity")
        if pod.index != LEAKER:
            lines.append(f"node_container {pod.slice} {pod.container_id} {CONTAINER_LIMIT} sleep infinity")
    ids = [pod.sandbox_id for pod in node.pods] + [pod.container_id for pod in node.others]
    first, guaranteed = node.pods[0], node.pods[max(GUARANTEED)]
    lines += [
        f"for id in {' '.join(ids)}; do",
        '    wait_until 60 test -n "$(node_procs $id)" || { echo "missing=$id"; exit 1; }',
        "done",
        "echo scopes=$(find /sys/fs/cgroup/kubepods.slice -name 'cri-containerd-*.scope' | wc -l)",
        f"echo leaker_slice=$(prop {node.leaker.slice} ControlGroup)",
        f"echo leaker_pod_max=$(cat /sys/fs/cgroup$(prop {node.leaker.slice} ControlGroup)/memory.max)",
        f"echo guaranteed_slice=$(prop {guaranteed.slice} ControlGroup)",
        f"echo container_cgroup=$(node_cgroup {first.container_id})",
        f"echo container_max=$(cat $(node_cgroup {first.container_id})/memory.max)",
    ]
    return "\n".join(lines) + "\n"


def _check_tree(found: dict[str, str], node: Node, output: str) -> None:
    """The layout the kubelet's systemd driver gives, made by systemd itself from the unit names."""

    def underscored(pod: Pod) -> str:
        return pod.uid.replace("-", "_")

    first = node.pods[0]
    assert found["leaker_slice"] == (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored(node.leaker)}.slice"
    ), output
    guaranteed = node.pods[max(GUARANTEED)]
    assert found["guaranteed_slice"] == f"/kubepods.slice/kubepods-pod{underscored(guaranteed)}.slice", output
    assert found["container_cgroup"] == (
        "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{underscored(first)}.slice/cri-containerd-{first.container_id}.scope"
    ), output
    assert found["scopes"] == str(2 * PODS - 1), output
    assert found["leaker_pod_max"] == str(POD_LIMIT), output
    assert found["container_max"] == str(256 * 2**20), output


@pytest.fixture(scope="module")
def node(installed: Install, vm: VM, run: Run) -> Iterator[Node]:
    """The node's tree: 20 pod slices (512 MiB each, two Guaranteed), each with a sandbox scope and an ``app``
    container scope (256 MiB) holding a ``sleep``, except the leaker's ``app`` (each test starts its grower)."""
    assert installed.rc == 0, installed.output
    made = Node(
        tuple(Pod(index, str(uuid.uuid4()), _container_id(), _container_id()) for index in range(PODS))
    )
    _standin_files(vm, made)
    try:
        rc, output = run(_tree_script(made), 600, name="node-tree")
        assert rc == 0, output
        found = fields(output)
        _check_tree(found, made, output)
        FACTS["node tree"] = f"{PODS} pod slices, {found['scopes']} scopes, e.g. {found['container_cgroup']}"
        yield made
    finally:
        run("source $KT/guest/node.sh\nnode_stop\nsystemctl stop kubepods.slice", 120, name="node-teardown")


def _leak_script(node: Node, config: str, properties: str, wait_for: str) -> str:
    """Start the leaker's container, the stand-in and memmon; once every pod is ok, make the leaker take
    LEAK_MIB; wait for ``wait_for`` (a bash condition); print what happened as key=value lines; tear down."""
    leaker = node.leaker
    # index:id pairs of the containers whose processes must stay: every other app, and every sandbox (s<index>).
    others = " ".join(
        [f"{pod.index}:{pod.container_id}" for pod in node.others]
        + [f"s{pod.index}:{pod.sandbox_id}" for pod in node.pods]
    )
    return f"""
source $KT/guest/node.sh
node_stop
rm -f $KT_NODE/go
mkdir -p -m 0755 $KT_NODE
node_container {leaker.slice} {leaker.container_id} {CONTAINER_LIMIT} python3 -u $KT/guest/grower.py $KT_NODE/go
leaker_pid=$!
leaker_stop() {{ kill $leaker_pid 2>/dev/null; systemctl stop cri-containerd-{leaker.container_id}.scope; }}
trap 'node_stop; leaker_stop 2>/dev/null' EXIT
wait_until 60 node_holds {leaker.container_id} $leaker_pid || {{ echo "leaker_not_started=1"; exit 1; }}
echo "leaker_pid=$leaker_pid"
node_standin_start $KT/node.json || exit 1
for pair in {others}; do echo "procs_before_${{pair%%:*}}=$(node_procs ${{pair#*:}})"; done
since="$(date +%s)"
node_memmon_start {config} {properties} || exit 1
echo "memmon_uid=$(node_status Uid)"
echo "memmon_cap_eff=$(node_status CapEff)"
start=$SECONDS
wait_until 300 node_all_ok {PODS} || echo "not_all_ok=1"
echo "all_ok_seconds=$((SECONDS - start))"
echo "targets_before=$(node_get /health/targets | tr -d '\\n')"
oom0="$(vm_oom_kills)"
echo {LEAK_MIB} >$KT_NODE/go.tmp && mv $KT_NODE/go.tmp $KT_NODE/go
start=$SECONDS
leaker_gone() {{ [ -z "$(node_procs {leaker.container_id})" ]; }}
wait_until 180 {wait_for} || echo "wait_timeout=1"
echo "reaction_seconds=$((SECONDS - start))"
if leaker_gone; then wait $leaker_pid; echo "leaker_status=$?"; else echo "leaker_status=running"; fi
sleep 5  # a second restart (the pod's own target, a later check) would show by now
echo "evictions=$(node_state evictions)"
echo "events=$(node_state events)"
echo "alerts=$(node_get '/health/alerts?hours=1' | tr -d '\\n')"
echo "actions=$(node_actions)"
echo "metrics_level=$(node_series memmon_memory_level 'pod="{leaker.name}"')"
echo "metrics_actions=$(node_series memmon_target_actions_total)"
echo "metrics_node_pods=$(node_series memmon_node_pods)"
for pair in {others}; do echo "procs_after_${{pair%%:*}}=$(node_procs ${{pair#*:}})"; done
echo "oom_kills=$(($(vm_oom_kills) - oom0))"
echo "memmon_active=$(systemctl is-active memmon-node.service)"
echo "--- memmon's journal since it started"
journalctl -u memmon-node --since "@$since" --no-pager -o cat | tail -n 40
"""


def _assert_only_the_leaker(found: dict[str, str], node: Node, output: str) -> None:
    """Alerts for the leaking pod's targets only (its container's emergency among them), every other container's
    process and every sandbox's (the leaker's pod's too) the same as before, no OOM kill in the VM, every pod
    watched."""
    leaker = f"shop/{node.leaker.name}"
    fired = {(alert["target"], alert["severity"]) for alert in json.loads(found["alerts"])["alerts"]}
    assert (f"{leaker}/app", "emergency") in fired, (fired, output)
    assert {target for target, _ in fired} <= {leaker, f"{leaker}/app"}, fired
    kept = [str(pod.index) for pod in node.others] + [f"s{pod.index}" for pod in node.pods]  # apps, sandboxes
    for key in kept:
        before, after = found[f"procs_before_{key}"], found[f"procs_after_{key}"]
        assert before and before == after, (key, before, after, output)
    # One emergency, one restart: the pod's targets are not rebuilt when memmon annotates the pod (a rebuilt target
    # starts over at ok and fires and restarts again).
    reasons = [reason for name, reason, _ in json.loads(found["events"]) if name == node.leaker.name]
    assert (reasons.count("MemoryEmergency"), reasons.count("GracefulRestart")) == (1, 1), reasons
    assert found["oom_kills"] == "0", output
    assert found["memmon_active"] == "active", output
    assert 'memmon_node_pods{state="watched"} 20.0' in found["metrics_node_pods"].split(";"), found


def _action_series(found: dict[str, str], action: str) -> str:
    """The leaker container's memmon_target_actions_total series for ``action`` with outcome success, as served."""
    labels = f'action="{action}",container="app",namespace="shop",outcome="success"'
    series = f'memmon_target_actions_total{{{labels},pod="{LEAKER_NAME}",target="shop/{LEAKER_NAME}/app"}}'
    found_series = [line for line in found["metrics_actions"].split(";") if line.startswith(series)]
    assert found_series, (series, found["metrics_actions"])
    return found_series[0]


def _assert_started_unprivileged(found: dict[str, str], output: str, cap_eff: str) -> None:
    """memmon-node ran as a dynamic user (not root) with exactly the capabilities given, and saw every pod ok."""
    assert "not_all_ok" not in found, f"not every pod was watched and ok:\n{output}"
    assert found["memmon_uid"] != "0", output
    assert found["memmon_cap_eff"] == cap_eff, output
    before = {target["name"]: target for target in json.loads(found["targets_before"])["targets"]}
    assert set(before) == {"host"} | {f"shop/web-{i}{app}" for i in range(PODS) for app in ("", "/app")}, (
        before
    )
    # Each container judged against its own 256 MiB (its scope's memory.max), each pod against its slice's 512.
    for i in range(PODS):
        assert (before[f"shop/web-{i}"]["limit_mb"], before[f"shop/web-{i}/app"]["limit_mb"]) == (512, 256), i


def test_a_leaking_container_gets_its_pod_evicted_and_no_other_pod_is_touched(
    node: Node, vm: VM, run: Run
) -> None:
    """cgroup v2, systemd driver layout, memmon unprivileged (dynamic user, no capabilities, read-only cgroupfs),
    restart evict: the leak in web-7's container alerts for web-7 alone (namespace/pod/container labels on
    /metrics), web-7 is evicted once at the stand-in, Events land on web-7 only, every other container's process
    runs on and the kernel OOM killer never acts."""
    script = _leak_script(node, _config(vm, "evict"), UNPRIVILEGED, "node_evicted")
    rc, output = run(script, 900, name="node-evict")
    assert rc == 0, output
    found = fields(output)
    _assert_started_unprivileged(found, output, "0000000000000000")
    assert "wait_timeout" not in found, f"no eviction:\n{output}"
    FACTS["node mode (evict)"] = (
        f"all 40 targets ok after {found['all_ok_seconds']} s, eviction {found['reaction_seconds']} s after the leak"
    )
    assert json.loads(found["evictions"]) == [["shop", LEAKER_NAME]], output
    assert {name for name, _, _ in json.loads(found["events"])} == {LEAKER_NAME}, output
    assert found["leaker_status"] == "running", (
        "an eviction only asks the API server; nothing killed the process"
    )
    _assert_only_the_leaker(found, node, output)
    actions = [a for a in json.loads(found["actions"]) if a["action"].startswith("restart:")]
    assert [(a["action"], a["target"], a["success"]) for a in actions] == [
        ("restart:kubernetes-evict", f"shop/{LEAKER_NAME}/app", True)
    ], actions
    assert _action_series(found, "restart:kubernetes-evict").endswith(" 1.0"), found["metrics_actions"]
    # The emergency stays (the process still holds its memory: only the kubelet would end it), labelled per pod.
    labels = f'container="app",namespace="shop",pod="{LEAKER_NAME}",target="shop/{LEAKER_NAME}/app"'
    assert f"memmon_memory_level{{{labels}}} 3.0" in found["metrics_level"].split(";"), found["metrics_level"]


def test_signal_restart_ends_the_leaking_container_process_alone(node: Node, vm: VM, run: Run) -> None:
    """``node.restart: signal`` with memmon as a dynamic user holding CAP_KILL only: SIGTERM reaches the leaking
    container's main process (found in its scope's cgroup.procs), nothing is evicted, and every other container's
    process runs on."""
    script = _leak_script(node, _config(vm, "signal"), WITH_CAP_KILL, "leaker_gone")
    rc, output = run(script, 900, name="node-signal")
    assert rc == 0, output
    found = fields(output)
    _assert_started_unprivileged(found, output, f"{1 << 5:016x}")  # CAP_KILL is capability 5
    assert "wait_timeout" not in found, f"the leaker was not ended:\n{output}"
    FACTS["node mode (signal)"] = f"SIGTERM {found['reaction_seconds']} s after the leak"
    assert found["leaker_status"] == "143", output  # 128 + SIGTERM
    assert json.loads(found["evictions"]) == [], output
    _assert_only_the_leaker(found, node, output)
    actions = [a for a in json.loads(found["actions"]) if a["action"].startswith("restart:")]
    assert [(a["action"], a["target"], a["success"]) for a in actions] == [
        ("restart:signal", f"shop/{LEAKER_NAME}/app", True)
    ], actions
    assert _action_series(found, "restart:signal").endswith(" 1.0"), found["metrics_actions"]
