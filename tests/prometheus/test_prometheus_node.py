"""The dashboard's Cluster view against a real node-mode memmon scraped by Debian's prometheus.

The panels of the row "Cluster view" (pods nearest their limit; memmon's restarts next to kernel OOM kills) have
data only where memmon watches pods, so tests/prometheus/test_prometheus_loop.py leaves them out and this test runs
them: memmon in node mode over a kubepods-like tree of REAL cgroup v1 memory cgroups
(``<unique>/kubepods/burstable/pod<uid>/<container id>``), its pods named by the strict API stand-in
(tests/actions/kube_standin.py), one container holding real memory past a low emergency threshold so that memmon
evicts its pod at the stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.actions.kube_standin import KubeStandin, make_pod
from tests.alerting.receivers import free_port
from tests.deploy.test_dashboard import NODE_ONLY_RULE_METRICS, rule_expressions
from tests.prometheus.test_prometheus_loop import NODE_ONLY_PANELS, dashboard_expressions, get
from tests.prometheus.test_prometheus_loop import prometheus as prometheus  # the fixture
from tests.waiting import wait_until

V1_MEMORY = Path("/sys/fs/cgroup/memory")
NODE = "node-1"
MIB = 1 << 20
LIMIT = 256 * MIB
LEAKY = ("shop", "leaky-0")
"""The pod whose container holds memory past the emergency threshold: memmon evicts it."""
CALM = [("shop", "web-0"), ("shop", "web-1"), ("billing", "db-0")]
"""Pods whose container runs a process holding nothing: ok, never touched."""
NODE_ONLY_METRICS = {"memmon_target_actions_total", "memmon_node_pods", *NODE_ONLY_RULE_METRICS}


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    container_id: str
    directory: Path
    """The container's cgroup."""


def _write(path: Path, value: int) -> None:
    path.write_text(str(value))


@contextlib.contextmanager
def kubepods_tree(pods: list[tuple[str, str]]) -> Iterator[tuple[Path, list[Pod]]]:
    """``/sys/fs/cgroup/memory/memmon-node-<random>/kubepods/burstable/pod<uid>/<container id>`` for each pod, the
    pod and its one container limited to ``LIMIT``; every process left is killed and the cgroups removed bottom-up
    afterwards. Skips, saying why, where real v1 memory cgroups cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("the kubepods tree is made of real cgroups: needs root")
    if not (V1_MEMORY / "cgroup.procs").is_file() or not os.access(V1_MEMORY, os.W_OK):
        pytest.skip(f"{V1_MEMORY} is not a writable cgroup v1 memory mount")
    root = V1_MEMORY / f"memmon-node-{uuid.uuid4().hex[:12]}"
    made: list[Path] = []
    try:
        burstable = root / "kubepods" / "burstable"
        for directory in (root, root / "kubepods", burstable):
            directory.mkdir()
            made.append(directory)
        found = []
        for namespace, name in pods:
            uid = str(uuid.uuid4())
            container_id = uuid.uuid4().hex + uuid.uuid4().hex
            pod_dir = burstable / f"pod{uid}"
            pod_dir.mkdir()
            made.append(pod_dir)
            _write(pod_dir / "memory.limit_in_bytes", LIMIT)
            container_dir = pod_dir / container_id
            container_dir.mkdir()
            made.append(container_dir)
            _write(container_dir / "memory.limit_in_bytes", LIMIT)
            found.append(Pod(namespace, name, uid, container_id, container_dir))
        yield root, found
    finally:
        for directory in reversed(made):
            deadline = time.monotonic() + 10
            while directory.exists():
                with contextlib.suppress(OSError):
                    for pid in (directory / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    directory.rmdir()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not remove {directory}")
                time.sleep(0.05)


@contextlib.contextmanager
def holder(container: Path, mib: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process in ``container``'s cgroup holding ``mib`` MiB of touched memory until it is killed. It joins the
    cgroup itself before it allocates: cgroup v1 charges a page to the cgroup of the task that touched it and does not
    move the charge when the task moves (memory.move_charge_at_immigrate 0), so a move from outside could race with
    the allocation and leave part of it charged to the parent (seen: 34 of 48 MiB)."""
    script = (
        f"import os, time; open({str(container / 'cgroup.procs')!r}, 'w').write(str(os.getpid())); "
        f"b = b'\\x01' * ({mib} << 20); print(1, flush=True); time.sleep(600)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"1"
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


@pytest.fixture
async def node_memmon(tmp_path: Path) -> AsyncIterator[tuple[str, KubeStandin]]:
    """memmon in node mode (a subprocess) over a real kubepods tree, its pods listed by the stand-in API server;
    yields memmon's host:port and the stand-in."""
    with kubepods_tree([LEAKY, *CALM]) as (root, pods):
        async with KubeStandin(node=NODE) as api:
            for pod in pods:
                api.add_pod(
                    make_pod(
                        pod.namespace,
                        pod.name,
                        pod.uid,
                        NODE,
                        [("app", f"containerd://{pod.container_id}", "256Mi")],
                        owner=f"ReplicaSet/{pod.name}-rs",
                    )
                )
            token = tmp_path / "token"
            token.write_text(api.token)
            config = tmp_path / "config.json"
            config.write_text(
                json.dumps(
                    {
                        "node": {"enabled": True, "name": NODE, "cgroup_root": str(root)},
                        "monitoring": {"check_interval": 0.5},
                        # Low thresholds: the leaky container (about 48 MiB of 256) is at emergency, the empty ones ok.
                        "thresholds": {
                            "memory_percent_warning": 5,
                            "memory_percent_critical": 10,
                            "memory_percent_emergency": 15,
                        },
                    }
                )
            )
            port = free_port()
            env = {key: value for key, value in os.environ.items() if not key.startswith("MEMMON_")}
            env |= {
                "MEMMON_KUBE_API": api.url,
                "MEMMON_KUBE_TOKEN_FILE": str(token),
                "POD_NAMESPACE": "memmon",  # memmon's own pod, as the DaemonSet's downward API gives it
                "POD_NAME": "memmon-x",
            }
            with contextlib.ExitStack() as stack:
                stack.enter_context(holder(pods[0].directory, 48))
                for pod in pods[1:]:
                    stack.enter_context(holder(pod.directory, 0))
                log = (tmp_path / "memmon.log").open("wb")
                process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
                    [sys.executable, "-m", "memmon", "--config", str(config), "--bind", "127.0.0.1",
                     "--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path / "state")],
                    stdout=log, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
                try:
                    deadline = time.monotonic() + 30
                    while True:
                        if process.poll() is not None:
                            pytest.fail(
                                f"memmon exited {process.returncode}: {(tmp_path / 'memmon.log').read_text()}"
                            )
                        with contextlib.suppress(OSError, urllib.error.URLError):
                            text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
                            if f'pod="{LEAKY[1]}"' in text:
                                break
                        if time.monotonic() > deadline:
                            pytest.fail(
                                f"no series of pod {LEAKY[1]} within 30 s: {(tmp_path / 'memmon.log').read_text()}"
                            )
                        await asyncio.sleep(0.3)
                    yield f"127.0.0.1:{port}", api
                finally:
                    process.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.to_thread(process.wait, 15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                    log.close()


def concrete(expr: str, instance: str) -> str:
    """Grafana's variables as Grafana replaces them with every variable at All."""
    values = {"job": "memmon", "instance": instance, "namespace": ".*", "pod": ".*", "container": ".*",
              "target": ".*", "__range": "1m", "__rate_interval": "10s", "__interval": "2s"}  # fmt: skip
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        answer: dict[str, Any] = get(url)
    except Exception as exc:  # an HTTP 400 carries the parse error in its body
        body = getattr(exc, "read", lambda: b"")()
        answer = json.loads(body) if body else {"status": "error", "error": str(exc)}
    return answer


async def test_cluster_view_panels_return_the_node_pods(
    node_memmon: tuple[str, KubeStandin], prometheus: Callable[[str], str]
) -> None:
    """Against a node-mode memmon on a real Prometheus, every Cluster view query parses and returns data: the
    pods nearest their limit (leaky-0 first, labelled by namespace and pod), memmon's restart of leaky-0 (evicted at
    the stand-in) and the OOM kill counts of the pods; the node-only metric names are exposed, and the pod watch's
    alert parses and stays silent."""
    instance, api = node_memmon
    base = await asyncio.to_thread(prometheus, instance)
    with contextlib.suppress(TimeoutError):
        await wait_until(lambda: bool(api.evictions), within=60, step=0.5)
    assert [(e["metadata"]["namespace"], e["metadata"]["name"]) for e in api.evictions] == [LEAKY]
    await asyncio.sleep(6)  # several scrapes after the restart was counted
    exposition = await asyncio.to_thread(fetch, f"http://{instance}/metrics")
    for name in NODE_ONLY_METRICS:
        assert f"\n{name}" in exposition, f"{name} not exposed by node-mode memmon"
    panels = [(title, expr) for title, expr in dashboard_expressions() if title in NODE_ONLY_PANELS]
    assert {title for title, _ in panels} == NODE_ONLY_PANELS
    failures: list[str] = []
    answers: dict[str, list[dict[str, Any]]] = {}
    for title, expr in panels:
        answer = await asyncio.to_thread(query, base, concrete(expr, instance))
        if answer.get("status") != "success":
            failures.append(f"{title}: {expr}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            failures.append(f"{title}: {expr}: no data")
        else:
            answers[expr] = answer["data"]["result"]
    assert failures == [], "\n".join(failures)
    nearest = next(result for expr, result in answers.items() if expr.startswith("topk("))
    top = max(nearest, key=lambda series: float(series["value"][1]))
    assert (top["metric"]["namespace"], top["metric"]["pod"]) == LEAKY, nearest
    restarts = next(result for expr, result in answers.items() if "memmon_target_actions_total" in expr)
    assert [(s["metric"]["namespace"], s["metric"]["pod"]) for s in restarts if float(s["value"][1]) > 0] == [
        LEAKY
    ]
    # The node-only alert runs on the real series: it parses and stays silent while the watch works.
    watch_rules = [
        (name, expr)
        for name, expr in rule_expressions()
        if any(metric in expr for metric in NODE_ONLY_RULE_METRICS)
    ]
    assert [name for name, _ in watch_rules] == ["MemmonPodWatchFailing"]
    for name, expr in watch_rules:
        answer = await asyncio.to_thread(query, base, expr)
        assert answer.get("status") == "success", f"{name}: {answer.get('error')}"
        assert answer["data"]["result"] == [], f"{name} fired on a working watch: {answer['data']['result']}"
