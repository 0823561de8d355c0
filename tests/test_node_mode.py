"""Node mode on real memory cgroups: a kubepods tree of 20 pods, the strict API stand-in listing them; a leak in one
container alerts for that pod alone and restarts it (eviction, or SIGTERM to its main process); no other pod is
touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.kube_standin import KubeStandin, make_pod
from tests.cgroups import V1_MEMORY
from tests.prefork.agent import RunningAgent, running_agent
from tests.prefork.servers import free_port
from tests.test_cgroup_alerts import Grower

PODS = 20
LEAKER = 7
NODE = "node-1"
CONTAINER_LIMIT = 256 * 2**20
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


class Node:
    """A kubepods tree (cgroupfs driver names) of real v1 memory cgroups: ``PODS`` burstable pods, each with a
    sandbox and one container ``app`` (256 MiB) holding a process."""

    def __init__(self, count: int = PODS) -> None:
        self.count = count
        if os.geteuid() != 0 or not os.access(V1_MEMORY, os.W_OK):
            pytest.skip("creating v1 memory cgroups needs root and a writable v1 memory hierarchy")
        self.root = V1_MEMORY / f"memmon-node-{uuid.uuid4().hex[:10]}"
        self.uids = [str(uuid.UUID(int=index + 1 + (uuid.uuid4().int >> 64 << 64))) for index in range(count)]
        self.container_ids = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(count)]
        self.directories: list[Path] = []
        self.sleepers: list[subprocess.Popen[bytes]] = []

    def pod_dir(self, index: int) -> Path:
        """The pod cgroup of pod ``index``."""
        return self.root / "kubepods" / "burstable" / f"pod{self.uids[index]}"

    def container_dir(self, index: int) -> Path:
        """The ``app`` container cgroup of pod ``index``."""
        return self.pod_dir(index) / self.container_ids[index]

    def make(self) -> None:
        """Create the tree; a ``sleep`` in every container but the leaker's (the test starts a grower there)."""
        for directory in (self.root, self.root / "kubepods", self.root / "kubepods" / "burstable"):
            directory.mkdir()
            self.directories.append(directory)
        for index in range(self.count):
            pod = self.pod_dir(index)
            sandbox = pod / (uuid.uuid4().hex * 2)
            for directory in (pod, sandbox, self.container_dir(index)):
                directory.mkdir()
                self.directories.append(directory)
            (pod / "memory.limit_in_bytes").write_text(str(2 * CONTAINER_LIMIT))
            (self.container_dir(index) / "memory.limit_in_bytes").write_text(str(CONTAINER_LIMIT))
            if index != LEAKER:
                procs = self.container_dir(index) / "cgroup.procs"
                self.sleepers.append(
                    subprocess.Popen(
                        ["sh", "-c", f"echo $$ > {procs} && exec sleep 300"], start_new_session=True
                    )
                )

    def pods(self) -> list[dict[str, Any]]:
        """The API's pods of the node: ``shop/web-N`` with container ``app`` (its container id as in the tree)."""
        return [
            make_pod(
                "shop",
                f"web-{index}",
                self.uids[index],
                NODE,
                [("app", f"containerd://{self.container_ids[index]}", "256Mi")],
                owner="ReplicaSet/web-7d9",
            )
            for index in range(self.count)
        ]

    def remove(self) -> None:
        """Kill what runs in the tree and remove it bottom-up."""
        for sleeper in self.sleepers:
            sleeper.kill()
            sleeper.wait()
        for directory in reversed(self.directories):
            deadline = time.monotonic() + 10
            while directory.exists() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    for pid in (directory / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), 9)
                    directory.rmdir()
                time.sleep(0.05)


@contextlib.contextmanager
def node_tree(count: int = PODS) -> Iterator[Node]:
    """A fresh node tree of ``count`` pods, removed afterwards."""
    node = Node(count)
    try:
        node.make()
        yield node
    finally:
        node.remove()


@contextlib.contextmanager
def standin(pods: list[dict[str, Any]]) -> Iterator[KubeStandin]:
    """The API stand-in on its own event loop thread, serving ``pods`` bound to ``NODE``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    api = KubeStandin(node=NODE, bookmark_interval=5.0)

    async def start() -> None:
        await api.start()
        for pod in pods:
            api.add_pod(pod)

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    api.call = lambda fn, *args: asyncio.run_coroutine_threadsafe(_called(fn, *args), loop).result(10)  # type: ignore[attr-defined]
    try:
        yield api
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def _called(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the stand-in's loop (its watchers are woken there)."""
    return fn(*args)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.1)


def statuses(agent: RunningAgent) -> dict[str, str]:
    """Target name -> status, from /health/targets."""
    return {target["name"]: target["status"] for target in agent.get("/health/targets")["targets"]}


@contextlib.contextmanager
def node_agent(
    node: Node, api: KubeStandin, tmp_path: Path, restart: str, forget_after: float = 300
) -> Iterator[RunningAgent]:
    """memmon in node mode over ``node``'s tree, naming pods from ``api``; waits until every pod is ok."""
    token = tmp_path / "token"
    token.write_text(api.token)
    config = {
        "monitoring": {"check_interval": 0.2, "forget_missing_targets_seconds": forget_after},
        "thresholds": THRESHOLDS,
        "auto_response": {
            "emergency_actions": {"graceful_restart": {"grace_seconds": 5, "cooldown_seconds": 30}}
        },
        "node": {"enabled": True, "name": NODE, "cgroup_root": str(node.root), "restart": restart},
    }
    # No POD_NAME or POD_NAMESPACE: node mode calls the API about the node's pods, never about its own.
    env = {"MEMMON_KUBE_API": api.url, "MEMMON_KUBE_TOKEN_FILE": str(token)}
    with running_agent([], config=config, env=env) as agent:
        pods = range(node.count)
        expected = {f"shop/web-{i}" for i in pods} | {f"shop/web-{i}/app" for i in pods}
        wait_until(
            lambda: (
                expected <= set(statuses(agent)) and all(statuses(agent)[name] == "ok" for name in expected)
            ),
            timeout=30,
            what="every pod and container watched and ok",
        )
        yield agent


def leak(grower: Grower) -> None:
    """The grower takes 200 MiB: 78 % of its container's 256 MiB (emergency at 70 %), 39 % of the pod's."""
    assert grower.proc.stdin is not None
    grower.proc.stdin.write("200\n")
    grower.proc.stdin.flush()


def assert_only_the_leaker_alerted(agent: RunningAgent) -> None:
    """Alerts fired for the leaking pod's targets only, the container's emergency among them."""
    alerts = agent.get("/health/alerts?hours=1")["alerts"]
    fired = {(a["target"], a["severity"]) for a in alerts}
    leaker = f"shop/web-{LEAKER}"
    assert (f"{leaker}/app", "emergency") in fired, fired
    assert {target for target, _ in fired} <= {leaker, f"{leaker}/app"}, fired


def test_a_leaking_container_gets_its_pod_evicted_and_no_other_pod_is_touched(tmp_path: Path) -> None:
    """20 pods: the leak in web-7's container alerts for web-7 alone (namespace/pod/container labels), web-7 is
    evicted once at the API, Events land on web-7 only, every other pod's process runs on."""
    with node_tree() as node, standin(node.pods()) as api:
        grower = Grower(node.container_dir(LEAKER))
        try:
            with node_agent(node, api, tmp_path, "evict") as agent:
                leak(grower)
                wait_until(lambda: bool(api.evictions), timeout=30, what="an eviction")
                time.sleep(1.0)  # a second restart (the pod's own target, a later check) would show by now
                evicted = [(e["metadata"]["namespace"], e["metadata"]["name"]) for e in api.evictions]
                assert evicted == [("shop", f"web-{LEAKER}")], evicted
                assert_only_the_leaker_alerted(agent)
                involved = {event["involvedObject"]["name"] for event in api.events}
                assert involved == {f"web-{LEAKER}"}, involved
                with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=5) as answer:
                    text = answer.read().decode()
                labels = f'container="app",namespace="shop",pod="web-{LEAKER}"'
                target = f'target="shop/web-{LEAKER}/app"'
                assert f"memmon_memory_level{{{labels},{target}}} 3.0" in text
                pod = f'pod="web-{LEAKER}"'
                evict = 'action="restart:kubernetes-evict",container="app",namespace="shop",outcome="success"'
                evictions = f"{evict},{pod},{target}"
                actions = [
                    line for line in text.splitlines() if line.startswith("memmon_target_actions_total{")
                ]
                assert f"memmon_target_actions_total{{{evictions}}} 1.0" in actions, actions
                assert 'memmon_node_pods{state="watched"} 20.0' in text
                assert all(sleeper.poll() is None for sleeper in node.sleepers)
                annotations = api.pods[("shop", f"web-{LEAKER}")]["metadata"].get("annotations", {})
                assert annotations.get("memmon.io/level") == "warning", (
                    annotations
                )  # the pod's: 39 % of 512 MiB
            assert " dropped" not in agent.log  # annotating the pod did not rebuild its targets
        finally:
            grower.stop()


def test_signal_restart_ends_the_leaking_container_process_alone(tmp_path: Path) -> None:
    """``node.restart: signal``: SIGTERM reaches the leaking container's main process (the kubelet would restart it
    in place); nothing is evicted and every other container's process runs on."""
    with node_tree() as node, standin(node.pods()) as api:
        grower = Grower(node.container_dir(LEAKER))
        try:
            with node_agent(node, api, tmp_path, "signal") as agent:
                leak(grower)
                wait_until(
                    lambda: grower.proc.poll() is not None, timeout=30, what="the leaker ended by SIGTERM"
                )
                assert grower.proc.returncode == -15, grower.proc.returncode
                assert not api.evictions
                assert_only_the_leaker_alerted(agent)
                assert all(sleeper.poll() is None for sleeper in node.sleepers)
        finally:
            grower.stop()


def test_pods_come_and_go_and_a_wrong_annotation_is_one_event_on_its_pod(tmp_path: Path) -> None:
    """A wrong memmon.io annotation is one MemmonBadAnnotation Event on that pod naming the key and what is
    expected; a pod annotated memmon.io/watch "false" leaves the targets; a deleted pod (API and cgroups) is
    reported missing, then forgotten."""
    with node_tree(3) as node:
        pods = node.pods()
        pods[0]["metadata"]["annotations"] = {"memmon.io/restart": "reboot"}
        with standin(pods) as api, node_agent(node, api, tmp_path, "evict", forget_after=2) as agent:
            wait_until(lambda: bool(api.events), timeout=15, what="the bad annotation's Event")
            event = api.events[0]
            assert event["reason"] == "MemmonBadAnnotation" and event["involvedObject"]["name"] == "web-0"
            assert (
                "memmon.io/restart='reboot'" in event["message"]
                and "evict, signal or none" in event["message"]
            )

            def opt_out(pod: dict[str, Any]) -> None:
                pod["metadata"]["annotations"] = {"memmon.io/watch": "false"}

            api.call(api.update_pod, "shop", "web-1", opt_out)  # type: ignore[attr-defined]
            wait_until(
                lambda: "shop/web-1" not in statuses(agent), timeout=15, what="web-1 no longer watched"
            )
            assert "shop/web-1/app" not in statuses(agent)
            api.call(api.delete_pod, "shop", "web-2")  # type: ignore[attr-defined]
            for sleeper in node.sleepers[1:]:
                sleeper.kill()
                sleeper.wait()
            for directory in (node.container_dir(2), *node.pod_dir(2).iterdir(), node.pod_dir(2)):
                if directory.is_dir():
                    directory.rmdir()
            wait_until(lambda: "shop/web-2" not in statuses(agent), timeout=20, what="web-2 forgotten")
            assert "shop/web-2/app" not in statuses(agent)
            assert [e["reason"] for e in api.events] == ["MemmonBadAnnotation"]


def test_an_unreachable_api_server_leaves_every_pod_watched_by_uid(tmp_path: Path) -> None:
    """No API server answering: each pod cgroup is a target pod-<uid> (judged, never evicted), /health answers,
    and memmon keeps trying."""
    with node_tree(2) as node:
        token = tmp_path / "token"
        token.write_text("t")
        config = {"node": {"enabled": True, "name": NODE, "cgroup_root": str(node.root)}}
        closed = f"http://127.0.0.1:{free_port()}"
        env = {
            "MEMMON_KUBE_API": closed,
            "MEMMON_KUBE_TOKEN_FILE": str(token),
        }
        with running_agent(["--check-interval", "0.2"], config=config, env=env) as agent:
            expected = {f"pod-{uid}" for uid in node.uids}
            wait_until(lambda: expected <= set(statuses(agent)), timeout=20, what="pods watched by uid")
            assert agent.get("/health")["status"] == "healthy"
