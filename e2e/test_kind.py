"""The Helm chart's demo in a real (kind) cluster: a leaky app (container ``app``) with the memmon sidecar, driven
through warning, critical and emergency by POST /leak, and what memmon does to the pod at each level:

* warning: the pod annotation ``memmon.io/level`` (with ``/since`` and ``/reason``) and a MemoryWarning Event;
* critical: MemoryCritical, and the pod's Ready condition turns False (the app's readiness probe asks memmon's
  /health/ready) while memmon's own container stays ready;
* emergency: MemoryEmergency and GracefulRestart, then the kubelet restarts the app container because its liveness
  probe (memmon's /health/live) failed: restartCount +1, the app exited 0 after draining, not ``OOMKilled``;
* afterwards: MemoryRecovered, ``memmon.io/level`` back to ok, the pod Ready again, and no further restart.

The leak sizes come from the chart as installed (the app's memory limit, memmon's thresholds from its config
file) and from memmon's own reading of the app's memory just before each step. The requests are made from the
memmon container (``kubectl exec``; the pod shares one network namespace): a helper process in the app container
would be charged to the app's memory limit and could OOM-kill it at the emergency step.

The DaemonSet (node mode, the chart's default) in the same cluster: ``helm install`` with default values (the image
tag set to the one built, the demo's namespace excluded so the two stories stay apart); the DaemonSet is ready on
every node; memmon on a test pod's node lists that pod's container in /health/targets; a pod whose container holds
memory past memmon's emergency threshold (95 % of its limit by default) is evicted through the Eviction API while
its neighbour is left alone.

Without a container runtime and kind every test here is skipped at collection, with the reason (conftest.py).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from memmon.model import Level

if TYPE_CHECKING:  # the fixtures' types, from e2e/conftest.py (for annotations only)
    from conftest import Cluster, Demo

T = TypeVar("T")

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
LEVEL = "memmon.io/level"
SINCE = "memmon.io/since"
REASON = "memmon.io/reason"
SETTLE_SECONDS = 60
"""Slack for memmon's next check plus its API calls, and for the kubelet's next probe."""


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float, every: float = 2.0) -> T:
    """Poll ``probe`` until it gives something other than None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def pod_annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("annotations") or {})


def pod_ready(pod: Mapping[str, Any]) -> str | None:
    """The status of the pod's Ready condition ("True"/"False"), None before it has one."""
    for condition in pod.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            status: str = condition["status"]
            return status
    return None


def memmon_events(demo: Demo, reason: str) -> list[dict[str, Any]]:
    """memmon's Events (source.component memmon) with ``reason`` on the demo pod (this very pod: its uid)."""
    return [
        event
        for event in demo.events()
        if event.get("reason") == reason
        and (event.get("source") or {}).get("component") == "memmon"
        and event["involvedObject"].get("uid") == demo.pod_uid
    ]


def wait_for_event(demo: Demo, reason: str, *, timeout: float = SETTLE_SECONDS) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        events = memmon_events(demo, reason)
        return events[-1] if events else None

    return wait_for(f"a {reason} Event from memmon on pod {demo.pod_name}", found, timeout=timeout)


def wait_for_level(demo: Demo, level: Level, *, timeout: float = SETTLE_SECONDS) -> dict[str, str]:
    """Wait until the pod's memmon.io/level annotation says ``level``; the pod's annotations then."""

    def annotated() -> dict[str, str] | None:
        found = pod_annotations(demo.pod())
        return found if found.get(LEVEL) == level.label else None

    return wait_for(f"{LEVEL}={level.label} on pod {demo.pod_name}", annotated, timeout=timeout)


def assert_level_annotations(found: Mapping[str, str], level: Level) -> None:
    assert found[LEVEL] == level.label, found
    assert RFC3339.match(found[SINCE]), f"{SINCE} is not RFC 3339: {found}"
    assert 0 < len(found[REASON]) <= 200, f"{REASON}: {found}"


def assert_level_event(event: Mapping[str, Any], level: Level, previous: Level) -> None:
    assert event["type"] == ("Normal" if level == Level.OK else "Warning"), event
    assert event["involvedObject"]["kind"] == "Pod", event
    message = event.get("message", "")
    assert previous.label in message and level.label in message, f"the Event's message: {message!r}"


def leak_into(demo: Demo, level: Level, fraction: float) -> int:
    """POST /leak with enough MiB to put the app's memory ``fraction`` into the ``level`` band, as memmon judges
    it (its RSS against the effective limit; also the app's cgroup against its limit when memmon reads one);
    the leaked MiB."""
    status, memory = demo.memmon("/health/memory")
    assert status == 200, memory
    usage, limit = memory["memory_usage_mb"], memory["effective_limit_mb"]
    assert usage is not None, f"memmon cannot read the app's memory: {memory}"
    spec = demo.spec
    gaps: list[float] = [spec.usage_inside(level, limit, with_mb_thresholds=True, fraction=fraction) - usage]
    cgroup = memory.get("cgroup")
    if cgroup and cgroup.get("limit_mb"):
        target = spec.usage_inside(level, cgroup["limit_mb"], with_mb_thresholds=False, fraction=fraction)
        gaps.append(target - cgroup["working_set_mb"])
    mb = math.ceil(min(gaps))
    assert mb > 0, f"the app is already past the middle of the {level.label} band: {memory}"
    demo.leak(mb)
    return mb


STEP_TIMEOUT = 1500
"""Per step, generous: the first step also builds the image and creates the cluster, the last deletes it; every
wait inside a step has its own, much shorter, bound."""


@pytest.mark.steps
@pytest.mark.timeout(STEP_TIMEOUT)
class TestDemoPodThroughTheLevels:
    """One pod, in order: deployed, warning, critical, emergency (graceful restart), recovered."""

    def test_deployed_with_the_sidecar_watching_the_app(self, demo: Demo) -> None:
        spec = demo.spec
        restart = spec.settings.auto_response.emergency_actions.graceful_restart
        assert restart.strategy == "kubernetes-liveness", f"the demo values' graceful restart: {restart}"
        assert {Level.CRITICAL, Level.EMERGENCY} <= set(spec.settings.server.ready_fail_levels)

        pod = demo.pod()
        assert pod_ready(pod) == "True"
        for name in (spec.app_container, "memmon"):
            container = demo.container_status(pod, name)
            assert container["ready"] is True and container["restartCount"] == 0, container

        status, memory = demo.memmon("/health/memory")
        assert status == 200, memory
        assert memory["target_kind"] == "process" and memory["processes"], f"memmon sees no app: {memory}"
        assert memory["effective_limit_mb"] == pytest.approx(spec.memory_limit_mb, abs=0.5), (
            f"memmon judges against {memory['effective_limit_mb']} MiB ({memory['limit_source']}), "
            f"not the app container's limit of {spec.memory_limit_mb:g} MiB"
        )
        status, health = demo.memmon("/health")
        assert health["level"] == "ok", (
            f"memmon is at {health['level']} before any leak (host used {memory['host']}); "
            f"the demo thresholds also apply to the host's memory"
        )
        assert demo.memmon("/health/live")[0] == 200
        assert demo.memmon("/health/ready")[0] == 200
        answer, body = demo.http("GET", spec.app_port, "/healthz")
        assert answer == 200 and json.loads(body)["held_mb"] == 0, body
        assert pod_annotations(pod).get(LEVEL, "ok") == "ok"

    def test_warning_annotates_the_pod_and_emits_an_event(self, demo: Demo) -> None:
        leak_into(demo, Level.WARNING, fraction=0.5)
        found = wait_for_level(demo, Level.WARNING)
        assert_level_annotations(found, Level.WARNING)
        assert_level_event(wait_for_event(demo, "MemoryWarning"), Level.WARNING, Level.OK)

        if Level.WARNING not in demo.spec.settings.server.ready_fail_levels:
            assert demo.memmon("/health/ready")[0] == 200
            time.sleep(demo.spec.readiness.reaction_seconds)  # give the kubelet time to probe again
            assert pod_ready(demo.pod()) == "True", "the pod left readiness at warning"

    def test_critical_takes_the_pod_out_of_readiness(self, demo: Demo) -> None:
        leak_into(demo, Level.CRITICAL, fraction=0.5)
        assert_level_annotations(wait_for_level(demo, Level.CRITICAL), Level.CRITICAL)
        assert_level_event(wait_for_event(demo, "MemoryCritical"), Level.CRITICAL, Level.WARNING)
        assert demo.memmon("/health/ready")[0] == 503
        assert demo.memmon("/health/live")[0] == 200, "no restart is asked for at critical"

        def not_ready() -> dict[str, Any] | None:
            pod = demo.pod()
            return pod if pod_ready(pod) == "False" else None

        pod = wait_for(
            "the pod's Ready condition to turn False at critical",
            not_ready,
            timeout=demo.spec.readiness.reaction_seconds + SETTLE_SECONDS,
        )
        app = demo.container_status(pod, demo.spec.app_container)
        sidecar = demo.container_status(pod, "memmon")
        assert app["ready"] is False, app
        assert sidecar["ready"] is True, f"memmon's own readiness must not follow the app's memory: {sidecar}"
        assert app["restartCount"] == 0 and sidecar["restartCount"] == 0

    def test_emergency_restarts_the_app_gracefully(self, demo: Demo) -> None:
        spec = demo.spec
        before = demo.container_status(demo.pod(), spec.app_container)["restartCount"]
        leak_into(demo, Level.EMERGENCY, fraction=0.35)

        seen: set[str] = set()

        def restarted() -> dict[str, Any] | None:
            pod = demo.pod()
            seen.add(pod_annotations(pod).get(LEVEL, ""))
            app = demo.container_status(pod, spec.app_container)
            return pod if app["restartCount"] > before else None

        grace = spec.settings.auto_response.emergency_actions.graceful_restart.grace_seconds
        pod = wait_for(
            f"the {spec.app_container} container's restart after the emergency",
            restarted,
            timeout=grace + spec.liveness.reaction_seconds + spec.termination_grace_seconds + SETTLE_SECONDS,
            every=1.0,
        )
        assert "emergency" in seen, f"{LEVEL} seen while waiting: {sorted(seen)}"
        app = demo.container_status(pod, spec.app_container)
        assert app["restartCount"] == before + 1, app
        terminated = app.get("lastState", {}).get("terminated")
        assert terminated is not None, f"no lastState.terminated: {app}"
        assert terminated.get("reason") != "OOMKilled", f"the kernel killed the app: {terminated}"
        assert terminated.get("exitCode") == 0, f"the app did not drain and exit 0: {terminated}"
        assert demo.container_status(pod, "memmon")["restartCount"] == 0, "memmon itself was restarted"

        assert_level_event(wait_for_event(demo, "MemoryEmergency"), Level.EMERGENCY, Level.CRITICAL)
        restart_event = wait_for_event(demo, "GracefulRestart")
        assert restart_event["type"] == "Warning"
        assert "kubernetes-liveness" in restart_event.get("message", ""), restart_event
        killing = [
            event
            for event in demo.events()
            if event.get("reason") == "Killing"
            and event["involvedObject"].get("fieldPath") == f"spec.containers{{{spec.app_container}}}"
        ]
        assert killing, "no Killing Event from the kubelet for the app container"
        assert any("liveness" in event.get("message", "").lower() for event in killing), killing

    def test_recovers_after_the_restart(self, demo: Demo) -> None:
        spec = demo.spec
        restarts = demo.container_status(demo.pod(), spec.app_container)["restartCount"]
        assert_level_annotations(wait_for_level(demo, Level.OK, timeout=120), Level.OK)
        recovered = wait_for_event(demo, "MemoryRecovered")
        assert recovered["type"] == "Normal", recovered

        def ready() -> dict[str, Any] | None:
            pod = demo.pod()
            return pod if pod_ready(pod) == "True" else None

        wait_for("the pod Ready again after the restart", ready, timeout=120)
        assert demo.memmon("/health/live")[0] == 200
        answer, body = demo.http("GET", spec.app_port, "/healthz")
        assert answer == 200 and json.loads(body)["held_mb"] == 0, f"not a fresh app process: {body}"

        time.sleep(spec.liveness.reaction_seconds + 5)  # long enough for a failing liveness probe to act
        pod = demo.pod()
        assert pod_ready(pod) == "True"
        assert demo.container_status(pod, spec.app_container)["restartCount"] == restarts, "restarted again"
        assert pod_annotations(pod)[LEVEL] == "ok"


# -- node mode: the DaemonSet ----------------------------------------------------------------------------------

NODE_RELEASE = "memmon-node"
NODE_NAMESPACE = "memmon-node"
WORKLOAD_NAMESPACE = "memmon-workload"
"""Where the test pods run (watched by the DaemonSet; the demo's namespace is excluded)."""
WORKLOAD_LIMIT = "128Mi"
GET_SNIPPET = """\
import sys, urllib.error, urllib.request
method, url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as answer:
        status, body = answer.status, answer.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
sys.stdout.write(str(status) + "\\n" + body.decode("utf-8", "replace"))
"""
"""An HTTP request from inside a memmon pod (python3 -c in the memmon container): status, newline, body."""
LEAKER = """\
import os, time
def read(*names):
    for name in names:
        try:
            with open(name) as handle:
                return handle.read().strip()
        except OSError:
            pass
    raise SystemExit("no memory cgroup file among " + repr(names))
limit = int(read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"))
held = []
while True:
    usage = int(read("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    if usage < 0.97 * limit:
        held.append(b"\\x01" * (1 << 20))
        time.sleep(0.05)
    else:
        print("holding", usage, "of", limit, flush=True)
        time.sleep(5)
"""
"""The leaking container: grows 1 MiB at a time until its cgroup uses 97 % of its limit (past memmon's default
emergency at 95 %, short of the OOM killer), then holds it."""


def workload_pod(name: str, command: list[str]) -> dict[str, Any]:
    """A bare pod (no controller: an eviction deletes it) running the memmon image with ``command``, one container
    ``main`` limited to WORKLOAD_LIMIT, non-root like the chart's own pods."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": WORKLOAD_NAMESPACE, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": "memmon:e2e",
                    "imagePullPolicy": "Never",
                    "command": command,
                    "resources": {
                        "limits": {"memory": WORKLOAD_LIMIT},
                        "requests": {"memory": WORKLOAD_LIMIT},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


class NodeMode:
    """The chart installed with default values (node mode) and helpers for its DaemonSet and the test pods."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True) -> Any:
        return self.cluster.kubectl(*args, timeout=timeout, check=check)

    def daemonset(self) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.json("get", "daemonset", NODE_RELEASE, "-n", NODE_NAMESPACE)
        return found

    def memmon_pods(self) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={NODE_RELEASE},app.kubernetes.io/component=node"
        items: list[dict[str, Any]] = self.cluster.json("get", "pods", "-n", NODE_NAMESPACE, "-l", selector)[
            "items"
        ]
        return items

    def memmon_on(self, node: str) -> str:
        """The name of the memmon pod on ``node``."""
        pods = [p for p in self.memmon_pods() if p["spec"].get("nodeName") == node]
        assert len(pods) == 1, f"expected one memmon pod on {node}: {[p['metadata']['name'] for p in pods]}"
        name: str = pods[0]["metadata"]["name"]
        return name

    def memmon_get(self, pod: str, path: str) -> tuple[int, Any]:
        """GET memmon's ``path`` from inside its pod (python3 in the memmon container, 127.0.0.1:8080)."""
        done = self.kubectl(
            "--namespace", NODE_NAMESPACE, "exec", pod, "-c", "memmon", "--",
            "python3", "-c", GET_SNIPPET, "GET", f"http://127.0.0.1:8080{path}", "10", timeout=60,
        )  # fmt: skip
        status, _, body = done.stdout.partition("\n")
        return int(status), json.loads(body)

    def workload(self, name: str) -> dict[str, Any] | None:
        """The test pod, or None once it is gone."""
        done = self.kubectl("get", "pod", name, "-n", WORKLOAD_NAMESPACE, "-o", "json", check=False)
        if done.returncode != 0:
            assert "NotFound" in done.stderr, done.stderr
            return None
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def create(self, pod: Mapping[str, Any]) -> None:
        """``kubectl apply`` the pod (JSON on stdin)."""
        done = subprocess.run(
            [str(self.cluster.tools.kubectl), "apply", "-f", "-"],
            input=json.dumps(pod),
            capture_output=True,
            text=True,
            timeout=60,
            env=self.cluster.env,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def running(self, name: str, *, timeout: float = 180) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            pod = self.workload(name)
            return pod if pod is not None and pod_ready(pod) == "True" else None

        return wait_for(f"test pod {name} Ready", up, timeout=timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=Pod,involvedObject.name={name}"
        items: list[dict[str, Any]] = self.cluster.json(
            "get", "events", "-n", WORKLOAD_NAMESPACE, f"--field-selector={selector}"
        )["items"]
        return items


@pytest.fixture(scope="session")
def node_mode(demo: Demo, kind_cluster: Cluster) -> NodeMode:
    """The chart with default values (node mode) installed as release memmon-node, the DaemonSet rolled out, and the
    namespace of the test pods. Requests ``demo`` so that the image is built and loaded once (and the demo's story
    has run: its namespace is excluded here so the DaemonSet leaves it alone)."""
    cluster = kind_cluster
    cluster.helm(
        "install", NODE_RELEASE, str(Path(__file__).resolve().parents[1] / "deploy" / "helm" / "memmon"),
        "--namespace", NODE_NAMESPACE, "--create-namespace",
        "--set", "image.repository=memmon", "--set", "image.tag=e2e", "--set", "image.pullPolicy=Never",
        "--set", f"node.excludeNamespaces={{{demo.namespace}}}",
        "--wait", "--timeout", "5m", timeout=360,
    )  # fmt: skip
    cluster.kubectl(
        "rollout", "status", f"daemonset/{NODE_RELEASE}", "-n", NODE_NAMESPACE, "--timeout=240s", timeout=260
    )
    cluster.kubectl("create", "namespace", WORKLOAD_NAMESPACE, timeout=60)
    return NodeMode(cluster)


@pytest.mark.steps
@pytest.mark.timeout(STEP_TIMEOUT)
class TestDaemonSetWatchesEveryPod:
    """Node mode, in order: the DaemonSet on every node, a pod's containers listed, a leaking pod evicted."""

    def test_daemonset_is_ready_on_every_node(self, node_mode: NodeMode) -> None:
        """The default install is a DaemonSet (no Deployment) whose pods are ready on every node of the cluster."""
        nodes = [n["metadata"]["name"] for n in node_mode.cluster.json("get", "nodes")["items"]]
        status = node_mode.daemonset()["status"]
        assert status["desiredNumberScheduled"] == len(nodes), status
        assert status["numberReady"] == len(nodes) and status.get("numberUnavailable", 0) == 0, status
        placed = sorted(p["spec"]["nodeName"] for p in node_mode.memmon_pods() if pod_ready(p) == "True")
        assert placed == sorted(nodes), f"memmon pods on {placed}, nodes {nodes}"
        deployments = node_mode.cluster.json("get", "deployments", "-n", NODE_NAMESPACE)["items"]
        assert deployments == [], [d["metadata"]["name"] for d in deployments]

    def test_health_targets_lists_a_test_pods_container(self, node_mode: NodeMode) -> None:
        """memmon on the test pod's node lists the pod (<namespace>/<pod>) and its container
        (<namespace>/<pod>/main) in /health/targets, judged against the container's 128Mi limit."""
        node_mode.create(workload_pod("calm", ["python3", "-c", "import time; time.sleep(86400)"]))
        pod = node_mode.running("calm")
        memmon = node_mode.memmon_on(pod["spec"]["nodeName"])
        pod_target, container_target = f"{WORKLOAD_NAMESPACE}/calm", f"{WORKLOAD_NAMESPACE}/calm/main"

        def listed() -> dict[str, dict[str, Any]] | None:
            status, body = node_mode.memmon_get(memmon, "/health/targets")
            names = {t["name"]: t for t in body.get("targets", [])} if status == 200 else {}
            return names if {pod_target, container_target} <= set(names) else None

        targets = wait_for(f"{container_target} in memmon's /health/targets", listed, timeout=SETTLE_SECONDS)
        container = targets[container_target]
        assert container["limit_mb"] == pytest.approx(128, abs=0.5), container
        assert container["level"] == "ok", container

    def test_a_leaking_pod_is_evicted_and_its_neighbour_left_alone(self, node_mode: NodeMode) -> None:
        """A container holding 97 % of its limit reaches emergency; memmon evicts its pod (the pod is deleted, a
        GracefulRestart Event from memmon names it) before the OOM killer; the calm pod keeps its uid and has
        not restarted."""
        calm = node_mode.workload("calm")
        assert calm is not None
        node_mode.create(workload_pod("leaky", ["python3", "-c", LEAKER]))
        node_mode.running("leaky")

        def gone() -> bool | None:
            pod = node_mode.workload("leaky")
            return True if pod is None or pod["metadata"].get("deletionTimestamp") else None

        wait_for("the leaking pod's eviction", gone, timeout=240, every=2.0)
        events = node_mode.events("leaky")
        restarts = [
            e
            for e in events
            if e.get("reason") == "GracefulRestart" and (e.get("source") or {}).get("component") == "memmon"
        ]
        assert restarts, (
            f"no GracefulRestart Event from memmon: {[(e.get('reason'), e.get('message')) for e in events]}"
        )
        assert not [e for e in events if "OOM" in (e.get("reason") or "")], (
            "the kernel OOM-killed the container first"
        )
        after = node_mode.workload("calm")
        assert after is not None and after["metadata"]["uid"] == calm["metadata"]["uid"], (
            "the calm pod was touched"
        )
        assert after["status"]["containerStatuses"][0]["restartCount"] == 0
        assert "deletionTimestamp" not in after["metadata"]
