"""A node at the kubelet's default maximum of 110 pods: one memmon in node mode, next to the sidecar mode's total for
the same pods, next to one agent given the same cgroups as a plain ``targets`` list, and next to node_exporter.

The node: ``--pods`` (110, ``maxPods``' default) burstable pods as real cgroup v1 memory cgroups under
``/sys/fs/cgroup/memory/memmon-bench-node-<id>/``, in the cgroupfs driver's names (``kubepods/burstable/pod<uid>/
<id>``) or, with ``--layout systemd``, the systemd driver's (``kubepods.slice/kubepods-burstable.slice/
kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope``). Each pod has a sandbox cgroup and one container
cgroup ``app`` (256 MiB limit, the pod's limit too), each holding one idle ``sleep`` (the sandbox's stands for the
pause process). The strict API stand-in (``tests/actions/kube_standin.py``, on its own event loop thread in this
process) serves the pods bound to the node, with a bookmark a minute (kube-apiserver's watch cache sends one about
every minute); **pod churn**: every ``churn_every`` seconds (5; quick 0.5) one pod's annotation
``bench.example.com/churn`` changes at the stand-in, round-robin, so MODIFIED events flow on the watch.

Configurations, each started, warmed up (10 s; quick 1.5 s, after node mode has every target ``ok``), measured over
a window (``--window``, 60 s; quick 3 s) and stopped, all with the shipped defaults but the check interval (usage
watcher on):

- **node mode**: ONE memmon, ``node: {enabled: true, containers: true}``: pods x 2 targets (each pod against its
  limit, each container against its own) plus the host; at the shipped 5 s interval and at 1 s; also at 1 s on a
  node of ``small_pods`` (20) pods, so the cost per pod can be compared at two sizes;
- **plain targets**: one memmon given the same pods x 2 cgroups as ``{"targets": [{"cgroup": ...}, ...]}`` (no
  API, no roster): what node mode adds on top of watching that many cgroups;
- **sidecar mode**: one single-target memmon per pod watching its container cgroup (``{"target": {"cgroup": ...}}``),
  ``--sidecars`` of them (110; quick 3), summed; when fewer agents than pods run (``--sidecars`` or the memory
  check: an agent is ~60 MiB), the row for all pods is scaled linearly from those measured and marked EXTRAPOLATED;
- **node_exporter** (Debian's ``prometheus-node-exporter``, default collectors, none per cgroup), once.

Figures (the helpers of ``bench/multi_target.py``): check time for all targets per round (median, p99: the
per-check ``check_seconds`` of the agent's SQLite history summed over one round; N agents: their k-th rounds
summed), CPU share of one core (utime+stime from /proc over the window), RSS (VmRSS at the end), ``/metrics`` size
(text, gzip, series) and scrape time (median, p99 of 20 gzip scrapes after the window); during the window every
process is scraped every 15 s. For node mode also the watch traffic: the deltas over the window of
``memmon_kubernetes_watch_{events,bookmarks,bytes}_total`` (updated at each roster refresh, at most 5 s late) and
their totals since the start (the first list included), next to what the stand-in sent.

Every cgroup, ``sleep``, agent and the stand-in are removed/stopped at the end, on error and on Ctrl-C or SIGTERM.
Usage: ``python bench/node_mode.py [--quick] [--pods 110] [--sidecars 110] [--window 60] [--layout cgroupfs]``
(root; a cgroup v1 memory mount).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import wait_http
from footprint import NODE_EXPORTER, Target, tool_version
from memmon import __version__ as memmon_version
from multi_target import (
    V1_MEMORY,
    Agent,
    Result,
    _on_sigterm,
    config,
    extrapolate,
    history,
    mem_available_mib,
    ms,
    print_table,
    rounds,
    run_agents,
    run_node_exporter,
    spawn,
    stop_all,
    why_not_runnable,
    window,
)
from multi_target import (
    Sizes as MultiTargetSizes,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the API stand-in lives with the tests
from tests.actions.kube_standin import KubeStandin, make_pod

NODE = "bench-node"
NAMESPACE = "shop"
LIMIT = 256 * 2**20
CHURN_ANNOTATION = "bench.example.com/churn"
BOOKMARK_SECONDS = 60.0
"""kube-apiserver's watch cache sends a bookmark about once a minute (k8s.io/apiserver cacher)."""
AGENT_MIB = 60.0
"""RSS of one idle single-target agent (57.8 MiB in bench/multi_target.py), for the does-it-fit check."""
WATCH_COUNTERS = ("events", "bookmarks", "bytes", "lists", "relists", "failures")


@dataclass(frozen=True)
class Sizes:
    pods: int
    sidecars: int
    warmup: float
    window: float
    scrapes: int
    scrape_every: float
    churn_every: float
    intervals: tuple[float, ...]
    small_pods: int | None
    """A second, smaller node run in node mode at 1 s (None: not run)."""

    def timing(self) -> MultiTargetSizes:
        """The figures multi_target's helpers read (warm-up, window, scrapes)."""
        return MultiTargetSizes(self.warmup, self.window, self.scrapes, self.scrape_every, (), 0, ())


FULL = Sizes(110, 110, 10, 60, 20, 15, 5, (5.0, 1.0), 20)
QUICK = Sizes(5, 3, 1.5, 3, 3, 1.5, 0.5, (1.0,), None)


@dataclass
class NodeResult(Result):
    pods: int = 0
    watch_window: dict[str, float] = field(default_factory=dict)
    """Deltas of memmon_kubernetes_watch_<what>_total over the window."""
    watch_total: dict[str, float] = field(default_factory=dict)
    """Their values at the window's end (since the agent started: the first list included)."""
    churned: int = 0
    """Pod updates made at the stand-in during the window."""
    sent_events: int = 0
    """Watch events the stand-in sent during the window."""
    seconds: float = 0.0
    """From the agent's start until every pod and container target was listed ``ok``."""


class NodeTree:
    """``pods`` burstable pods of real v1 memory cgroups in ``layout``'s names, each a sandbox and a container
    ``app`` (256 MiB), one ``sleep`` in each."""

    def __init__(self, pods: int, layout: str) -> None:
        self.root = V1_MEMORY / f"memmon-bench-node-{uuid.uuid4().hex[:8]}"
        self.layout = layout
        self.uids = [str(uuid.uuid4()) for _ in range(pods)]
        self.container_ids = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(pods)]
        self.made: list[Path] = []
        self.sleeps: list[subprocess.Popen[bytes]] = []

    def pod_dir(self, index: int) -> Path:
        uid = self.uids[index]
        if self.layout == "systemd":
            slug = uid.replace("-", "_")
            slice_ = self.root / "kubepods.slice" / "kubepods-burstable.slice"
            return slice_ / f"kubepods-burstable-pod{slug}.slice"
        return self.root / "kubepods" / "burstable" / f"pod{uid}"

    def cgroup_name(self, container_id: str) -> str:
        return f"cri-containerd-{container_id}.scope" if self.layout == "systemd" else container_id

    def container_dir(self, index: int) -> Path:
        return self.pod_dir(index) / self.cgroup_name(self.container_ids[index])

    def make(self) -> None:
        self._mkdir(self.root)
        for index in range(len(self.uids)):
            pod = self.pod_dir(index)
            for parent in reversed(pod.parents):
                if parent.is_relative_to(self.root) and parent != self.root and not parent.exists():
                    self._mkdir(parent)
            self._mkdir(pod)
            (pod / "memory.limit_in_bytes").write_text(str(LIMIT))
            sandbox = pod / self.cgroup_name(uuid.uuid4().hex + uuid.uuid4().hex)
            for directory in (sandbox, self.container_dir(index)):
                self._mkdir(directory)
                sleep = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL)
                self.sleeps.append(sleep)
                (directory / "cgroup.procs").write_text(str(sleep.pid))
            (self.container_dir(index) / "memory.limit_in_bytes").write_text(str(LIMIT))

    def _mkdir(self, directory: Path) -> None:
        directory.mkdir()
        self.made.append(directory)

    def pods(self) -> list[dict[str, Any]]:
        """The API's pods: ``shop/web-N``, container ``app`` with its container id as in the tree."""
        return [
            make_pod(
                NAMESPACE,
                f"web-{index}",
                self.uids[index],
                NODE,
                [("app", f"containerd://{self.container_ids[index]}", "256Mi")],
                owner="ReplicaSet/web-7d9",
            )
            for index in range(len(self.uids))
        ]

    def relative(self, directory: Path) -> str:
        """The cgroup's path in the memory hierarchy (what a ``target.cgroup`` names)."""
        return "/" + str(directory.relative_to(V1_MEMORY))

    def remove(self) -> None:
        """Kill the sleeps, then remove the cgroups bottom-up (killing anything left in them)."""
        for sleep in self.sleeps:
            sleep.kill()
        for sleep in self.sleeps:
            sleep.wait(10)
        for directory in reversed(self.made):
            deadline = time.monotonic() + 10
            while directory.exists() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    for pid in (directory / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                    directory.rmdir()
                    break
                time.sleep(0.05)
            if directory.exists():
                print(f"warning: could not remove {directory}", file=sys.stderr)


def _annotate(pod: dict[str, Any], value: str) -> None:
    pod["metadata"]["annotations"][CHURN_ANNOTATION] = value


class Standin:
    """The API stand-in on its own event loop thread, serving the tree's pods, changing one pod's annotation every
    ``churn_every`` seconds."""

    def __init__(self, pods: list[dict[str, Any]], churn_every: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.api = KubeStandin(node=NODE, bookmark_interval=BOOKMARK_SECONDS)
        self.keys = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods]
        self.pods = pods
        self.churn_every = churn_every
        self.churned = 0
        self._churn: asyncio.Task[None] | None = None

    def start(self) -> None:
        # An agent stopped while a watch event is being written ends that handler with a connection reset, which
        # aiohttp logs with a traceback: expected at every stop here, not a fault of either side.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        self.thread.start()

        async def start() -> None:
            await self.api.start()
            for pod in self.pods:
                self.api.add_pod(pod)
            self._churn = asyncio.get_running_loop().create_task(self._churn_loop())

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    async def _churn_loop(self) -> None:
        while True:
            await asyncio.sleep(self.churn_every)
            namespace, name = self.keys[self.churned % len(self.keys)]
            self.api.update_pod(namespace, name, partial(_annotate, value=str(self.churned)))
            self.churned += 1

    def counts(self) -> tuple[int, int]:
        """(pod updates made, watch events sent) so far."""

        async def read() -> tuple[int, int]:
            return self.churned, self.api.watch_events_sent

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def stop(self) -> None:
        async def stop() -> None:
            if self._churn is not None:
                self._churn.cancel()
            await self.api.stop()

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@contextlib.contextmanager
def node(pods: int, layout: str, churn_every: float) -> Iterator[tuple[NodeTree, Standin]]:
    """A fresh node tree and the stand-in serving its pods; both removed/stopped afterwards, whatever happened."""
    tree = NodeTree(pods, layout)
    api: Standin | None = None
    try:
        tree.make()
        api = Standin(tree.pods(), churn_every)
        api.start()
        yield tree, api
    finally:
        if api is not None:
            api.stop()
        tree.remove()


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def watch_counters(port: int) -> dict[str, float]:
    """memmon_kubernetes_watch_<what>_total now (plain text /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = {}
    for what in WATCH_COUNTERS:
        match = re.search(rf"^memmon_kubernetes_watch_{what}_total (\S+)$", text, re.MULTILINE)
        found[what] = float(match.group(1)) if match else float("nan")
    return found


def wait_all_ok(agent: Agent, expected: set[str], timeout: float = 180.0) -> None:
    """Until every expected target is listed at /health/targets with status ok."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            raise RuntimeError(f"the node-mode agent exited with {agent.proc.returncode}")
        with contextlib.suppress(OSError, ValueError):
            seen = {t["name"]: t["status"] for t in get_json(agent.port, "/health/targets")["targets"]}
            if expected <= set(seen) and all(seen[name] == "ok" for name in expected):
                return
        time.sleep(0.5)
    missing = sorted(expected - set(seen))[:5]
    raise RuntimeError(
        f"not every target ok in {timeout:g} s: {len(expected - set(seen))} missing ({missing})"
    )


def run_node_mode(tree: NodeTree, api: Standin, interval: float, sizes: Sizes, tmp: Path) -> NodeResult:
    """One memmon in node mode over ``tree``, naming pods from ``api``: started, warmed up, measured, stopped."""
    pods = len(tree.uids)
    result = NodeResult(
        f"node mode, {pods} pods",
        "node",
        2 * pods,
        interval,
        expected_rounds=sizes.window / interval,
        pods=pods,
    )
    run_dir = Path(tempfile.mkdtemp(prefix=f"node-{pods}-", dir=tmp))
    (run_dir / "token").write_text(api.api.token)
    conf: dict[str, object] = {
        "monitoring": {"check_interval": interval},
        "node": {"enabled": True, "name": NODE, "cgroup_root": str(tree.root), "containers": True},
    }
    env = {
        "MEMMON_KUBE_API": api.api.url,
        "MEMMON_KUBE_TOKEN_FILE": str(run_dir / "token"),
        "POD_NAMESPACE": "memmon",
        "POD_NAME": "memmon-bench",
    }
    agent = spawn(conf, run_dir / "agent", env)
    began = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{agent.port}/health", agent.proc, timeout=120)
        names = {f"{NAMESPACE}/web-{i}" for i in range(pods)} | {
            f"{NAMESPACE}/web-{i}/app" for i in range(pods)
        }
        wait_all_ok(agent, names)
        result.seconds = time.monotonic() - began
        time.sleep(sizes.warmup)
        target = Target("node mode", memmon_version, agent.proc, agent.port)
        before, (churned0, sent0) = watch_counters(agent.port), api.counts()
        wall0, wall1 = window(result, [target], sizes.timing())
        after, (churned1, sent1) = watch_counters(agent.port), api.counts()
    except BaseException:
        with contextlib.suppress(OSError):
            sys.stderr.write(f"--- {agent.log} (tail)\n{agent.log.read_text(errors='replace')[-3000:]}\n")
        raise
    finally:
        stop_all([agent.proc])
    result.watch_window = {what: after[what] - before[what] for what in WATCH_COUNTERS}
    result.watch_total = after
    result.churned, result.sent_events = churned1 - churned0, sent1 - sent0
    sums, seen = rounds(history(agent.state_dir, wall0, wall1))
    result.rounds = sums
    result.host_row = "host" in seen
    if len(seen - {"host"}) != 2 * pods:
        result.note = f"history holds {len(seen - {'host'})} of {2 * pods} targets"
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def run_plain(tree: NodeTree, interval: float, sizes: Sizes, tmp: Path) -> Result:
    """One memmon given the tree's pod and container cgroups as a plain ``targets`` list."""
    paths = []
    for index in range(len(tree.uids)):
        paths += [tree.relative(tree.pod_dir(index)), tree.relative(tree.container_dir(index))]
    conf = config(paths, interval, watch=True, multi=True)
    label = f"plain `targets` list, the same {len(paths)} cgroups (no API)"
    return run_agents(label, "one", [conf], len(paths), interval, sizes.timing(), tmp)


def sidecars_that_fit(wanted: int) -> tuple[int, str | None]:
    """How many single-target agents may run here (at most half of MemAvailable), and why fewer if so."""
    fit = int(0.5 * mem_available_mib() / AGENT_MIB)
    if wanted <= fit:
        return wanted, None
    return (
        fit,
        f"{wanted} agents x {AGENT_MIB:g} MiB is over half of MemAvailable ({mem_available_mib():.0f} MiB)",
    )


def run_sidecars(
    tree: NodeTree, count: int, interval: float, sizes: Sizes, tmp: Path, why: str | None
) -> Result:
    """``count`` single-target agents, one per pod's container cgroup; scaled to every pod when fewer ran."""
    pods = len(tree.uids)
    confs = [
        config([tree.relative(tree.container_dir(i))], interval, watch=True, multi=False)
        for i in range(count)
    ]
    label = f"sidecar mode: {count} agents, one container each"
    measured = run_agents(label, "separate", confs, count, interval, sizes.timing(), tmp)
    if count >= pods:
        return measured
    reason = why or f"--sidecars {count}"
    scaled = extrapolate(measured, pods, reason)
    scaled.label = (
        f"sidecar mode, {pods} agents: EXTRAPOLATED x{pods / count:.3g} from {count} (not run: {reason})"
    )
    return scaled


def watch_rows(results: list[NodeResult], seconds: float) -> list[str]:
    """The pod watch's counters of each node-mode run: deltas over the window of ``seconds``, totals at its end."""
    rows = []
    for r in results:
        w, t = r.watch_window, r.watch_total
        rows.append(
            f"| {r.label} | {r.interval:g} | {r.churned} | {r.sent_events} | {w['events']:.0f} | "
            f"{w['bookmarks']:.0f} | {w['bytes']:,.0f} | {w['bytes'] / seconds:,.0f} | "
            f"{(w['bytes'] / w['events']) if w['events'] else 0:,.0f} | {t['bytes']:,.0f} | {t['lists']:.0f} | "
            f"{t['relists']:.0f} | {t['failures']:.0f} | {r.seconds:.1f} |"
        )
    return rows


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def comparison_rows(nodes: list[NodeResult], others: list[Result]) -> list[str]:
    """Node mode (all pods) next to each baseline measured in this run at the same interval (node_exporter: any).
    N agents' /metrics bytes and scrape time are per agent times N: Prometheus scrapes each of them."""
    rows = []
    for n in nodes:
        if n.pods != max(x.pods for x in nodes):
            continue
        for other in others:
            if other.interval not in (None, n.interval):
                continue
            each = other.n if other.kind.startswith("separate") else 1
            check = (
                ratio(statistics.median(n.rounds), statistics.median(other.rounds))
                if n.rounds and other.rounds
                else "-"
            )
            scrape = statistics.median(other.scrape_gzip) * each * 1000 if other.scrape_gzip else 0.0
            rows.append(
                f"| {n.interval:g} | {other.label} | {ratio(n.rss_kib, other.rss_kib)} | "
                f"{ratio(n.cpu_percent, other.cpu_percent)} | {check} | "
                f"{ratio(n.body_bytes, other.body_bytes * each)} | {ratio(n.gzip_bytes, other.gzip_bytes * each)} | "
                f"{ms(n.scrape_gzip, 0.5)} / {scrape:.2f} |"
            )
    return rows


def scaling_rows(nodes: list[NodeResult]) -> list[str]:
    """Per-pod figures of node mode at each node size measured at the same interval."""
    rows = []
    for r in sorted(nodes, key=lambda r: (r.interval or 0, r.pods)):
        median = statistics.median(r.rounds) * 1000 if r.rounds else float("nan")
        rows.append(
            f"| {r.interval:g} | {r.pods} | {median / r.pods:.2f} | {r.cpu_percent / r.pods:.3f} | "
            f"{r.rss_kib / 1024:.1f} | {r.body_bytes / r.pods:,.0f} | {ms(r.scrape_gzip, 0.5)} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="5 pods, 3 sidecar agents, 3 s windows: a smoke test"
    )
    parser.add_argument("--pods", type=int, help="pods on the node (default 110, maxPods' default)")
    parser.add_argument("--sidecars", type=int, help="single-target agents run (default: one per pod)")
    parser.add_argument("--window", type=float, help="seconds measured per configuration (default 60)")
    parser.add_argument("--layout", choices=("cgroupfs", "systemd"), default="cgroupfs", help="cgroup names")
    args = parser.parse_args()
    reason = why_not_runnable()
    if reason:
        print(f"# node_mode: not run on this machine: {reason}")
        return 0
    sizes = QUICK if args.quick else FULL
    if args.pods:
        sizes = dataclasses.replace(sizes, pods=args.pods, sidecars=min(sizes.sidecars, args.pods))
    if args.sidecars:
        sizes = dataclasses.replace(sizes, sidecars=min(args.sidecars, sizes.pods))
    if args.window:
        sizes = dataclasses.replace(sizes, window=args.window)
    signal.signal(signal.SIGTERM, _on_sigterm)
    load_at_start = os.getloadavg()[0]
    exporter = shutil.which(NODE_EXPORTER)
    nodes: list[NodeResult] = []
    others: list[Result] = []
    notes: list[str] = []
    began, started_at = time.monotonic(), time.gmtime()
    with tempfile.TemporaryDirectory(prefix="memmon-node-") as tmp_name:
        tmp = Path(tmp_name)
        if sizes.small_pods:
            with node(sizes.small_pods, args.layout, sizes.churn_every) as (tree, api):
                nodes.append(run_node_mode(tree, api, 1.0, sizes, tmp))
        with node(sizes.pods, args.layout, sizes.churn_every) as (tree, api):
            count, why = sidecars_that_fit(sizes.sidecars)
            for interval in sizes.intervals:
                nodes.append(run_node_mode(tree, api, interval, sizes, tmp))
                others.append(run_plain(tree, interval, sizes, tmp))
                others.append(run_sidecars(tree, count, interval, sizes, tmp, why))
        if exporter:
            others.append(run_node_exporter(exporter, sizes.timing(), tmp))
        else:
            notes.append(f"{NODE_EXPORTER} not installed (Debian package of that name): no reference row")
    print(f"# Node mode, {sizes.pods} pods — {time.strftime('%Y-%m-%d %H:%M UTC', started_at)}")
    versions = f"memmon {memmon_version}; node_exporter: " + (
        tool_version([exporter, "--version"]) if exporter else "not installed"
    )
    print(
        f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
        f"Linux {platform.release()}, cgroup v1 (memory controller at {V1_MEMORY}), {args.layout} driver names, "
        f"root, Python {sys.version.split()[0]}; {versions}"
    )
    print(
        f"load average (1 min) at start {load_at_start:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"run took {time.monotonic() - began:.0f} s"
    )
    if args.quick:
        print("**quick smoke run: sizes shrunk, figures not meaningful**")
    print()
    print(
        f"{sizes.pods} burstable pods, each a sandbox and a container `app` (256 MiB limit), one idle `sleep` in "
        f"each. Node mode: {2 * sizes.pods} targets (pods and containers) + the host; sidecar agents: one container "
        f"each. Shipped defaults but the check interval (usage watcher on). Each configuration: {sizes.warmup:g} s "
        f"warm-up, a {sizes.window:g} s window scraped every {sizes.scrape_every:g} s (gzip), then {sizes.scrapes} "
        f"scrapes each way. Pod churn: one pod's annotation changed at the API stand-in every "
        f"{sizes.churn_every:g} s."
    )
    print()
    print_table([*nodes, *others])
    print()
    print("## Watch traffic of node mode (the pod watch, over the window)")
    print()
    print(
        "| configuration | interval s | pod updates (churn) | events sent by the API | events received "
        "| bookmarks | bytes received | bytes/s | bytes/event | bytes since start | lists | relists | failures "
        "| every target ok after s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in watch_rows(nodes, sizes.window):
        print(row)
    print()
    print("## Node mode next to each baseline (node mode / baseline)")
    print()
    print(
        "| interval s | baseline | RSS ratio | CPU ratio | check time ratio (median) | /metrics text ratio "
        "| gzip ratio | scrape median ms (node / baseline; N agents: x N) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in comparison_rows(nodes, others):
        print(row)
    if len({r.pods for r in nodes}) > 1:
        print()
        print("## Node mode per pod at two node sizes")
        print()
        print(
            "| interval s | pods | check ms per pod (median round / pods) | CPU % per pod | RSS MiB "
            "| /metrics bytes per pod | scrape median ms |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row in scaling_rows(nodes):
            print(row)
    print()
    with_host = sorted({f"{r.label} ({r.interval:g} s)" for r in [*nodes, *others] if r.host_row})
    if with_host:
        notes.append(
            f"check time per round includes the host's own check (target `host`) for: {', '.join(with_host)}"
        )
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
