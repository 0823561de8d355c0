"""Many targets: one agent watching N real cgroups, next to N single-target agents and next to node_exporter.

N real cgroup v1 memory cgroups (``/sys/fs/cgroup/memory/memmon-bench-mt-<id>-<i>``, 256 MiB limit), each holding
one idle ``sleep``, for N in 1, 10, 100 and 500 (quick: 1 and 2). For each N, in one run, each configuration
starts, warms up (10 s; quick 1.5 s), is measured over a window (60 s; quick 3 s) and is stopped:

- **one agent**: one ``memmon`` watching all N cgroups (config file ``{"targets": [{"cgroup": ...}, ...]}``) at a
  1 s check interval, the usage watcher off; the same **+ usage watcher** (the shipped default, one watcher per
  target); and, for N = 1 and 100, the same at a 5 s interval (the issue's aim is stated at 5 s);
- **N agents**: N single-target agents (one per cgroup, each its own state dir and port), usage watcher off, where
  they fit in memory (and N <= 100: at 500 the row is an extrapolation from the largest N run, marked as such);
- **node_exporter** (Debian's ``prometheus-node-exporter``, its default collectors, none of them per cgroup): the
  reference agent, once.

Figures per configuration: check time for all targets per round (median, p99; the per-check ``check_seconds`` of
the agent's SQLite history, read after it stopped, summed over the targets of one round), rounds seen / expected,
CPU share (utime+stime from /proc/PID/stat over the window, percent of one core; N agents summed), RSS at the end
(VmRSS; N agents summed), ``/metrics`` size (plain text, and on the wire with ``Accept-Encoding: gzip``) and scrape
time (median, p99 of 20 scrapes each way over one keep-alive connection on 127.0.0.1). During the window every
process is scraped every 15 s (gzip accepted, Prometheus's default scrape interval), so node_exporter does its
work and memmon's serving is counted too. Then the cost of each extra idle target: (one agent at N - one agent at
1) / (N - 1), in KiB of RSS and percent of a core, next to the issue's aim (< 100 KiB, < 0.05 % at 5 s).

Every cgroup, ``sleep`` and agent it starts is removed/stopped at the end, on error and on Ctrl-C or SIGTERM too.
Usage: ``python bench/multi_target.py [--quick] [--counts 1,10] [--window S]`` (root; a cgroup v1 memory mount).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from benchlib import cpu_seconds, free_port, percentile, status_kib, wait_http
from footprint import NODE_EXPORTER, Target, child_env, tool_version
from memmon import __version__ as memmon_version

V1_MEMORY = Path("/sys/fs/cgroup/memory")
LIMIT = 256 * 2**20
DB_FILENAME = "memmon.db"  # memmon.storage.store.DB_FILENAME; read with plain sqlite3, as any reader would
AIM_KIB, AIM_CORE_PERCENT, AIM_INTERVAL = 100.0, 0.05, 5.0
"""The issue's aim: each extra idle target costs under 100 KiB and under 0.05 % of a core at a 5 s interval."""
HOST_ROW = "host"
"""The history's target name of the host's own check in a multi-target agent (the host is judged once)."""
AGENT_MIB_GUESS = 60.0
"""RSS of one idle agent before one was measured (57 MiB in bench/footprint.py), for the does-it-fit check."""
START_BATCH = 8
"""Separate agents started at once (each spends ~1 s of CPU importing; 2 cores here)."""


@dataclass(frozen=True)
class Sizes:
    warmup: float
    window: float
    scrapes: int
    scrape_every: float
    counts: tuple[int, ...]
    max_separate: int
    slow_counts: tuple[int, ...]
    """N for the one-agent runs at a 5 s interval (the first is the baseline of the per-target cost)."""


FULL = Sizes(10, 60, 20, 15, (1, 10, 100, 500), 100, (1, 100))
QUICK = Sizes(1.5, 3, 3, 1.5, (1, 2), 2, ())


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    log: Path


@dataclass
class Result:
    label: str
    kind: str
    """``one``, ``one+watch``, ``separate``, ``separate-extrapolated`` or ``node_exporter``."""
    n: int
    interval: float | None
    rounds: list[float] = field(default_factory=list)
    """Seconds of check time for all targets, one entry per complete round in the window."""
    expected_rounds: float = 0.0
    cpu_percent: float = 0.0
    rss_kib: int = 0
    body_bytes: int = 0
    gzip_bytes: int = 0
    series: int = 0
    scrape_plain: list[float] = field(default_factory=list)
    scrape_gzip: list[float] = field(default_factory=list)
    note: str = ""
    host_row: bool = False
    """The agent recorded the host's own check as a row (target ``host``): counted in each round."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so the ``finally`` blocks clean up as on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def why_not_runnable() -> str | None:
    """None when this machine can run the benchmark, else the reason."""
    if os.geteuid() != 0:
        return "needs root (it creates cgroups)"
    if not (V1_MEMORY / "memory.usage_in_bytes").is_file() or not os.access(V1_MEMORY, os.W_OK):
        return f"{V1_MEMORY} is not a writable cgroup v1 memory mount"
    return None


@contextlib.contextmanager
def cgroups(count: int) -> Iterator[list[str]]:
    """``count`` fresh memory cgroups, each with one idle ``sleep`` in it; yields their hierarchy paths. The
    sleeps are killed and the cgroups removed afterwards, whatever happened."""
    prefix = f"memmon-bench-mt-{uuid.uuid4().hex[:6]}"
    made: list[Path] = []
    sleeps: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            directory = V1_MEMORY / f"{prefix}-{index}"
            directory.mkdir()
            made.append(directory)
            (directory / "memory.limit_in_bytes").write_text(str(LIMIT))
            sleep = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL)
            sleeps.append(sleep)
            (directory / "cgroup.procs").write_text(str(sleep.pid))
        yield [f"/{d.name}" for d in made]
    finally:
        for sleep in sleeps:
            sleep.kill()
        for sleep in sleeps:
            sleep.wait(10)
        for directory in made:
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


def memmon_head() -> list[str]:
    """The ``memmon`` script beside this interpreter (the venv's), else ``python -m memmon``."""
    script = Path(sys.executable).with_name("memmon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "memmon"]


def config(paths: Sequence[str], interval: float, watch: bool, multi: bool) -> dict[str, object]:
    """The agent's config file: ``targets`` (the multi-target form) or today's single ``target``."""
    monitoring = {"check_interval": interval, "usage_watch": {"enabled": watch}}
    if multi:
        return {"targets": [{"cgroup": p} for p in paths], "monitoring": monitoring}
    assert len(paths) == 1
    return {"target": {"cgroup": paths[0]}, "monitoring": monitoring}


def multi_target_refusal(paths: Sequence[str], tmp: Path) -> str | None:
    """None when this build's ``memmon check-config`` accepts a ``targets`` list, else what it said."""
    path = tmp / "probe.json"
    path.write_text(json.dumps(config(paths, 1, False, multi=True)))
    done = subprocess.run(
        [*memmon_head(), "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]


def spawn(conf: dict[str, object], directory: Path, env: dict[str, str] | None = None) -> Agent:
    """One agent on 127.0.0.1 with ``conf``, its state and log in ``directory``; ``/metrics`` on its health port.
    ``env``: variables added to the agent's environment (after memmon's own were removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(conf))
    port = free_port()
    log = directory / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*memmon_head(), "--config", str(directory / "config.json"), "--bind", "127.0.0.1",
             "--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(directory / "state"),
             "--log-level", "WARNING"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**child_env(), **(env or {})},
        )  # fmt: skip
    return Agent(proc, port, directory / "state", log)


def start_agents(confs: Sequence[dict[str, object]], tmp: Path, started: list[Agent]) -> list[Agent]:
    """Start one agent per config, ``START_BATCH`` at a time, each answering ``/health`` before the next batch;
    one whose port was taken meanwhile is started again on another. Every agent is appended to ``started`` as
    soon as it exists (the caller stops them, whatever happens here)."""
    agents: list[Agent] = []
    for first in range(0, len(confs), START_BATCH):
        batch = [(first + i, c) for i, c in enumerate(confs[first : first + START_BATCH])]
        pending = []
        for index, conf in batch:
            agent = spawn(conf, tmp / f"agent-{index}")
            started.append(agent)
            pending.append((index, conf, agent))
        for index, conf, agent in pending:
            for attempt in (1, 2, 3):
                try:
                    wait_http(f"http://127.0.0.1:{agent.port}/health", agent.proc, timeout=180)
                    break
                except RuntimeError:
                    told = agent.log.read_text(errors="replace")
                    if attempt == 3 or agent.proc.poll() is None or "in use" not in told:
                        raise RuntimeError(f"agent {index} did not start:\n{told[-2000:]}") from None
                    agent = spawn(conf, tmp / f"agent-{index}-retry{attempt}")
                    started.append(agent)
            agents.append(agent)
    return agents


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM to each (this run's processes only), then wait; SIGKILL what is still there after ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def rss_now(pids: Sequence[int]) -> int:
    return sum(status_kib(pid) for pid in pids)


def window(result: Result, targets: Sequence[Target], sizes: Sizes) -> tuple[float, float]:
    """Measure CPU share and RSS of ``targets`` over the window, scraping each every ``scrape_every`` s (gzip
    accepted); then the scrape figures of the first. Returns the window's wall-clock bounds."""
    pids = [t.pid for t in targets]
    cpu0 = sum(cpu_seconds(pid) for pid in pids)
    wall0, t0 = time.time(), time.monotonic()
    next_scrape = t0
    while (now := time.monotonic()) < t0 + sizes.window:
        if now >= next_scrape:
            for target in targets:
                target.scrape("gzip")
            next_scrape += sizes.scrape_every
        time.sleep(max(0.0, min(next_scrape, t0 + sizes.window) - time.monotonic()))
    elapsed = time.monotonic() - t0
    result.cpu_percent = 100 * (sum(cpu_seconds(pid) for pid in pids) - cpu0) / elapsed
    result.rss_kib = rss_now(pids)
    wall1 = time.time()
    for target in targets:
        if target.proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited with {target.proc.returncode} during the window")
    first = targets[0]
    for mode in ("plain", "gzip"):  # warm-up, not counted
        first.scrape(mode)
    for _ in range(sizes.scrapes):
        for mode, into in (("plain", result.scrape_plain), ("gzip", result.scrape_gzip)):
            elapsed_s, wire, body = first.scrape(mode)
            into.append(elapsed_s)
            if mode == "plain":
                result.body_bytes = len(body)
                result.series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            else:
                result.gzip_bytes = wire
    for target in targets:
        if target.connection is not None:
            target.connection.close()
    return wall0, wall1


def history(state_dir: Path, wall0: float, wall1: float) -> list[tuple[float, str, float]]:
    """(timestamp, target, check_seconds) of the checks in [wall0, wall1], oldest first."""
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / DB_FILENAME}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT timestamp, target, check_seconds FROM samples WHERE timestamp BETWEEN ? AND ? "
            "AND check_seconds IS NOT NULL ORDER BY timestamp",
            (wall0, wall1),
        ).fetchall()
    return [(float(ts), str(target), float(seconds)) for ts, target, seconds in rows]


def rounds(rows: Sequence[tuple[float, str, float]]) -> tuple[list[float], set[str]]:
    """One agent's rows grouped into rounds (a round ends when a name it already holds comes again: the agent
    spreads its targets' checks over the interval); the sum of ``check_seconds`` of each round that holds every
    name seen in the window (the N targets, and ``host`` where the agent judges the host as a row of its own),
    and those names."""
    names = {target for _, target, _ in rows}
    sums: list[float] = []
    current: dict[str, float] = {}
    for _, target, seconds in rows:
        if target in current:
            if len(current) == len(names):
                sums.append(sum(current.values()))
            current = {}
        current[target] = seconds
    if current and len(current) == len(names):
        sums.append(sum(current.values()))
    return sums, names


def rounds_of_many(per_agent: Sequence[list[float]]) -> list[float]:
    """N single-target agents: round k is the k-th round of each in the window, summed (their rounds are not in
    step; the sum is the check work the machine does for all targets per interval)."""
    if not per_agent:
        return []
    count = min(len(sums) for sums in per_agent)
    return [sum(sums[k] for sums in per_agent) for k in range(count)]


def run_agents(
    label: str, kind: str, confs: list[dict[str, object]], n: int, interval: float, sizes: Sizes, tmp: Path
) -> Result:
    """Start the agents of one configuration, measure them, stop them, read their history."""
    result = Result(label, kind, n, interval, expected_rounds=sizes.window / interval)
    started: list[Agent] = []
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{n}-", dir=tmp))
    try:
        agents = start_agents(confs, run_dir, started)
        time.sleep(sizes.warmup)
        targets = [Target(f"agent {i}", memmon_version, a.proc, a.port) for i, a in enumerate(agents)]
        wall0, wall1 = window(result, targets, sizes)
    except BaseException:
        for agent in started[-3:]:
            with contextlib.suppress(OSError):
                sys.stderr.write(f"--- {agent.log} (tail)\n{agent.log.read_text(errors='replace')[-2000:]}\n")
        raise
    finally:
        stop_all([a.proc for a in started])
    per_agent = [rounds(history(a.state_dir, wall0, wall1)) for a in agents]
    result.rounds = rounds_of_many([sums for sums, _ in per_agent])
    names = set().union(*(names for _, names in per_agent))
    result.host_row = HOST_ROW in names
    if len(names - {HOST_ROW}) != n:
        result.note = f"history holds {len(names - {HOST_ROW})} of {n} targets"
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def run_node_exporter(binary: str, sizes: Sizes, tmp: Path) -> Result:
    """node_exporter alone, over the same window and scrapes."""
    result = Result("node_exporter (reference, default collectors)", "node_exporter", 0, None)
    port = free_port()
    with open(tmp / "node_exporter.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc)
        time.sleep(sizes.warmup)
        window(result, [Target("node_exporter", "", proc, port)], sizes)
    finally:
        stop_all([proc])
    return result


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def separate_fits(n: int, sizes: Sizes, per_agent_mib: float) -> str | None:
    """None when N separate agents may run here, else why not."""
    need, available = n * per_agent_mib, mem_available_mib()
    if need > 0.5 * available:
        return (
            f"{n} agents x {per_agent_mib:.0f} MiB = {need / 1024:.1f} GiB, over half of MemAvailable "
            f"({available / 1024:.1f} GiB)"
        )
    if n > sizes.max_separate:
        return (
            f"more than {sizes.max_separate} agents (each spends ~1 s of CPU starting; {os.cpu_count()} CPUs)"
        )
    return None


def extrapolate(base: Result, n: int, reason: str) -> Result:
    """N separate agents from ``base`` (a measured separate run), scaled linearly: not a measurement."""
    scale = n / base.n
    return Result(
        f"{n} agents: EXTRAPOLATED x{scale:g} from {base.n} (not run: {reason})",
        "separate-extrapolated",
        n,
        base.interval,
        rounds=[r * scale for r in base.rounds],
        expected_rounds=base.expected_rounds,
        cpu_percent=base.cpu_percent * scale,
        rss_kib=round(base.rss_kib * scale),
        body_bytes=base.body_bytes,
        gzip_bytes=base.gzip_bytes,
        series=base.series,
        scrape_plain=base.scrape_plain,
        scrape_gzip=base.scrape_gzip,
    )


def ms(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction) * 1000:.2f}" if values else "-"


def print_table(results: list[Result]) -> None:
    print(
        "| configuration | N | interval s | check time, all targets, median ms | p99 ms | rounds / expected "
        "| CPU % of one core | RSS MiB | /metrics bytes (text) | bytes gzip | series | scrape median ms | p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        interval = f"{r.interval:g}" if r.interval else "-"
        rounds = f"{len(r.rounds)} / {r.expected_rounds:.0f}" if r.interval else "-"
        label = r.label + (f" ({r.note})" if r.note else "")
        print(
            f"| {label} | {r.n or '-'} | {interval} | {ms(r.rounds, 0.5)} | {ms(r.rounds, 0.99)} | {rounds} | "
            f"{r.cpu_percent:.2f} | {r.rss_kib / 1024:.1f} | {r.body_bytes:,} | {r.gzip_bytes:,} | {r.series:,} | "
            f"{ms(r.scrape_gzip, 0.5)} | {ms(r.scrape_gzip, 0.99)} |"
        )


def per_target_rows(results: list[Result]) -> list[str]:
    """Cost of each extra idle target in one agent: (at N - at 1) / (N - 1), by kind and interval."""
    rows = []
    by_key = {(r.kind, r.n, r.interval): r for r in results}
    for r in results:
        base = by_key.get((r.kind, 1, r.interval))
        if not r.kind.startswith("one") or r.n <= 1 or base is None or r.interval is None:
            continue
        kib = (r.rss_kib - base.rss_kib) / (r.n - 1)
        core = (r.cpu_percent - base.cpu_percent) / (r.n - 1)
        check_us = (
            (statistics.median(r.rounds) - statistics.median(base.rounds)) / (r.n - 1) * 1e6
            if r.rounds and base.rounds
            else None
        )
        at_5 = core * r.interval / AIM_INTERVAL
        scaled = "measured" if r.interval == AIM_INTERVAL else f"x{r.interval:g}/{AIM_INTERVAL:g} s, estimate"
        verdict = "met" if kib < AIM_KIB and at_5 < AIM_CORE_PERCENT else "missed"
        rows.append(
            f"| {r.label} | {r.n} | {r.interval:g} | {'-' if check_us is None else f'{check_us:.0f}'} | "
            f"{kib:.0f} | {core:.4f} | {at_5:.4f} ({scaled}) | {verdict} |"
        )
    return rows


def comparison_rows(results: list[Result]) -> list[str]:
    """One agent at N next to N separate agents at N (same interval, usage watcher off): the ratios."""
    rows = []
    ones = {r.n: r for r in results if r.kind == "one" and r.interval == 1}
    for many in results:
        one = ones.get(many.n)
        if not many.kind.startswith("separate") or one is None or not many.rss_kib or not many.cpu_percent:
            continue
        mark = " (extrapolated)" if many.kind == "separate-extrapolated" else ""
        rows.append(
            f"| {many.n} | {one.rss_kib / 1024:.1f} | {many.rss_kib / 1024:.1f}{mark} | "
            f"{one.rss_kib / many.rss_kib:.3f} | {one.cpu_percent:.2f} | {many.cpu_percent:.2f}{mark} | "
            f"{one.cpu_percent / many.cpu_percent:.2f} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 2 and 3 s windows: a smoke test")
    parser.add_argument("--counts", help="comma-separated N (default 1,10,100,500; quick 1,2)")
    parser.add_argument("--window", type=float, help="seconds measured per configuration (default 60)")
    args = parser.parse_args()
    reason = why_not_runnable()
    if reason:  # a note, not a failure: the other benchmarks still run
        print(f"# multi_target: not run on this machine: {reason}")
        return 0
    sizes = QUICK if args.quick else FULL
    if args.counts:
        counts = tuple(sorted({int(c) for c in args.counts.split(",")} | {1}))
        slow = tuple(c for c in sizes.slow_counts if c in counts)
        sizes = dataclasses.replace(sizes, counts=counts, slow_counts=slow)
    if args.window:
        sizes = dataclasses.replace(sizes, window=args.window)
    signal.signal(signal.SIGTERM, _on_sigterm)
    load_at_start = os.getloadavg()[0]
    node_exporter = shutil.which(NODE_EXPORTER)
    results: list[Result] = []
    notes: list[str] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="memmon-multi-") as tmp_name, cgroups(max(sizes.counts)) as paths:
        tmp = Path(tmp_name)
        refusal = multi_target_refusal(paths[:2], tmp)
        if refusal:
            notes.append(
                f"multi-target not available in this build (`memmon check-config` refused a `targets` list: "
                f"{refusal}): the one-agent rows are run at N = 1 only, with today's single `target`"
            )
        per_agent_mib = AGENT_MIB_GUESS
        largest_separate: Result | None = None
        for n in sizes.counts:
            if n == 1 or not refusal:
                for kind, watch, label in (
                    ("one", False, "one agent"),
                    ("one+watch", True, "one agent + usage watcher"),
                ):
                    conf = config(paths[:n], 1, watch, multi=not refusal)
                    results.append(run_agents(label, kind, [conf], n, 1, sizes, tmp))
            why = separate_fits(n, sizes, per_agent_mib)
            if why is None:
                confs = [config([p], 1, False, multi=False) for p in paths[:n]]
                label = (
                    f"{n} agents, one target each" if n > 1 else "1 agent, one target (single-target config)"
                )
                largest_separate = run_agents(label, "separate", confs, n, 1, sizes, tmp)
                results.append(largest_separate)
                per_agent_mib = max(per_agent_mib, 1.2 * largest_separate.rss_kib / 1024 / n)
            elif largest_separate is not None:
                results.append(extrapolate(largest_separate, n, why))
                notes.append(
                    f"{n} separate agents not run: {why}; their row is scaled from {largest_separate.n}"
                )
            else:
                notes.append(f"{n} separate agents not run: {why}")
        for n in sizes.slow_counts:
            if n == 1 or not refusal:
                conf = config(paths[:n], AIM_INTERVAL, False, multi=not refusal)
                results.append(run_agents("one agent", "one", [conf], n, AIM_INTERVAL, sizes, tmp))
        if node_exporter:
            results.append(run_node_exporter(node_exporter, sizes, tmp))
        else:
            notes.append(f"{NODE_EXPORTER} not installed (Debian package of that name): no reference row")
    versions = {
        "memmon": memmon_version,
        "node_exporter": tool_version([node_exporter, "--version"]) if node_exporter else "not installed",
    }
    print(f"# One agent, many targets — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, cgroup v1 (memory controller at {V1_MEMORY}), root, "
        f"Python {sys.version.split()[0]}; " + "; ".join(f"{k}: {v}" for k, v in versions.items())
    )
    print(
        f"load average (1 min) at start {load_at_start:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"run took {time.monotonic() - began:.0f} s"
    )
    if args.quick:
        print("**quick smoke run: sizes shrunk, figures not meaningful**")
    if refusal:
        print(f"**multi-target not available in this build** ({refusal}): one-agent rows at N = 1 only")
    print()
    print(
        f"Each configuration: {sizes.warmup:g} s warm-up, then a {sizes.window:g} s window, scraped every "
        f"{sizes.scrape_every:g} s (gzip); then {sizes.scrapes} scrapes each way. Targets: idle cgroups (one `sleep` "
        "each, 256 MiB limit). N agents: CPU and RSS summed, /metrics of one of them."
    )
    print()
    print_table(results)
    comparison = comparison_rows(results)
    if comparison:
        print()
        print("## One agent next to N single-target agents (1 s interval, usage watcher off)")
        print()
        print(
            "| N | one agent RSS MiB | N agents RSS MiB | ratio | one agent CPU % | N agents CPU % | ratio |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row in comparison:
            print(row)
    rows = per_target_rows(results)
    print()
    print(
        f"## Cost of each extra idle target in one agent: (at N - at 1) / (N - 1); aim < {AIM_KIB:g} KiB and "
        f"< {AIM_CORE_PERCENT:g} % of a core at {AIM_INTERVAL:g} s"
    )
    print()
    if rows:
        print(
            "| configuration | N | interval s | check µs | RSS KiB | % core at the interval | % core at 5 s | aim |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for row in rows:
            print(row)
        print()
        print(
            "At 5 s from a 1 s run: the check loop's share scaled by 1/5 (an estimate; the usage watcher's reads "
            "do not follow the check interval, so for the watcher rows it is a lower bound). The 5 s rows are "
            "measured directly."
        )
    else:
        print("not measured (needs one agent at N = 1 and at a larger N)")
    with_host = sorted({f"{r.label} (N = {r.n})" for r in results if r.host_row})
    if with_host:
        notes.append(
            "check time per round includes the host's own check (history target `host`, judged once per "
            f"interval) for: {', '.join(with_host)}"
        )
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
