"""What the usage watcher costs: CPU share of its thread idle, near the emergency line and past it, next to the
check loop's, in one run on one cgroup.

A real memory cgroup (v1 here: ``/sys/fs/cgroup/memory``; v2 where the machine has a memory-enabled v2 mount,
e.g. under User-Mode Linux) limited to 256 MiB, a child holding a chosen amount of touched memory inside it, and
a ``UsageWatcher`` with the shipped settings (worst case 2000 MiB/s, pauses 2 ms to 1 s) and thresholds at
70/85/95 % of the limit (the shipped ones). For each position the watcher runs ``--seconds``; its thread's CPU
time comes from the thread's own CPU clock (``pthread_getcpuclockid``), so nothing else in the process counts.

- **idle**: the child holds ~0 (usage a few MiB): reads every (243 MiB / 2000 MiB/s) ≈ 0.12 s;
- **near**: the child holds 1 MiB under the emergency line: reads every 2 ms (the floor);
- **past the line**: the child holds 10 MiB over it (what an emergency being handled looks like): the watcher
  reads ``memory.stat`` too (the working set) and paces toward the limit, at least 10 ms apart.

The check loop's share is the median full check (every sampler + evaluation, as ``bench/check_cost.py``
measures it, on this cgroup) divided by the shipped 5 s interval.

Usage: ``python bench/usage_watch.py [--quick] [--seconds S]``. Needs root (it creates a cgroup).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from memmon.assembly import build_sampler, build_thresholds
from memmon.config import load_settings
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule
from memmon.model import Level
from memmon.sampling.usage_gauge import CgroupUsage, CgroupUsageGauge
from memmon.sampling.usage_watch import UsageWatcher, WatchPlan

MIB = 2**20
LIMIT = 256 * MIB
HOLDER = r"""
import sys
with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
    procs.write("0")
held = []
print("ok", flush=True)
for line in sys.stdin:
    held = []
    held = [b"\x01" * int(line)]
    print("ok", flush=True)
"""


def memory_root() -> tuple[Path, int] | None:
    """A writable memory cgroup root: v2 with the memory controller, else v1; None when there is none."""
    v2 = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError):
        if "memory" in (v2 / "cgroup.subtree_control").read_text().split():
            return v2, 2
    v1 = v2 / "memory"
    if (v1 / "memory.usage_in_bytes").is_file() and os.access(v1, os.W_OK):
        return v1, 1
    return None


@contextlib.contextmanager
def cgroup() -> Iterator[tuple[Path, int]]:
    """A fresh 256 MiB memory cgroup, removed afterwards."""
    found = memory_root()
    assert found is not None
    root, version = found
    directory = root / f"memmon-bench-watch-{uuid.uuid4().hex[:10]}"
    directory.mkdir()
    try:
        (directory / ("memory.max" if version == 2 else "memory.limit_in_bytes")).write_text(str(LIMIT))
        yield directory, version
    finally:
        with contextlib.suppress(OSError):
            for pid in (directory / "cgroup.procs").read_text().split():
                os.kill(int(pid), 9)
        deadline = time.monotonic() + 10
        while directory.exists() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                directory.rmdir()
            time.sleep(0.05)


class Holder:
    """A child in the cgroup holding ``n`` bytes of touched memory on request."""

    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._ack()

    def hold(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{max(0, n)}\n")
        self.proc.stdin.flush()
        self._ack()

    def _ack(self) -> None:
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def thread_cpu(watcher: UsageWatcher) -> float:
    """CPU seconds the watcher's thread used so far."""
    thread = watcher._thread
    assert thread is not None and thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def measure(watcher: UsageWatcher, seconds: float) -> tuple[float, float]:
    """(reads per second, CPU share in percent) of the watcher's thread over ``seconds``."""
    time.sleep(0.2)  # past the first reads after the plan changed
    cpu, reads, started = thread_cpu(watcher), watcher.reads, time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    return (watcher.reads - reads) / wall, 100 * (thread_cpu(watcher) - cpu) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per position: a smoke test")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per position (default 10)")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    if memory_root() is None or os.geteuid() != 0:  # a note, not a failure: the other benchmarks still run
        print("# usage_watch: not run on this machine: needs root and a writable memory cgroup hierarchy")
        return
    settings = load_settings(None, overrides={})
    watch = settings.monitoring.usage_watch
    rule = ThresholdRule(build_thresholds(settings))
    rows: list[tuple[str, float, float, float]] = []
    with cgroup() as (directory, version):
        holder = Holder(directory)
        try:
            settings = load_settings(None, overrides={"target": {"cgroup": str(directory)}})
            sampler, _ = build_sampler(settings)
            evaluator = Evaluator(ThresholdRule(build_thresholds(settings)))
            sample = sampler.sample()
            levels = rule.watch_levels(sample)
            emergency = levels[Level.EMERGENCY]
            watcher = UsageWatcher(
                lambda _reason: None,
                worst_case_bytes_per_second=watch.worst_case_mb_per_second * MIB,
                min_interval=watch.min_interval_seconds,
                max_interval=watch.max_interval_seconds,
            )
            gauge = CgroupUsageGauge(CgroupUsage(directory, version))
            watcher.start()
            try:
                for name, held in (
                    ("idle (usage a few MiB)", 0),
                    ("near (1 MiB under the emergency line)", None),
                    ("past the line (10 MiB over: memory.stat read too)", 10 * MIB),
                ):
                    if held is None:  # top up to 1 MiB under the line, whatever the child's own size
                        holder.hold(0)
                        holder.hold(emergency - MIB - gauge.read())
                    elif held:
                        holder.hold(0)
                        holder.hold(emergency + held - gauge.read())
                    else:
                        holder.hold(0)
                    usage = gauge.read()
                    plan = WatchPlan(
                        CgroupUsage(directory, version),
                        tuple(sorted(set(levels.values()))),
                        emergency,
                        LIMIT,
                        usage,
                    )
                    watcher.follow(plan)
                    rate, share = measure(watcher, seconds)
                    rows.append((name, rate, share, usage / MIB))
            finally:
                watcher.stop()
            reads = []
            for _ in range(2000 if not args.quick else 200):
                started = time.perf_counter_ns()
                gauge.read()
                reads.append((time.perf_counter_ns() - started) / 1000)
            gauge.close()
            checks = []
            for _ in range(500 if not args.quick else 50):
                started = time.perf_counter_ns()
                evaluator.evaluate(sampler.sample())
                checks.append((time.perf_counter_ns() - started) / 1000)
        finally:
            holder.stop()
    check_us = statistics.median(checks)
    print(f"# Usage watcher cost — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, kernel {os.uname().release}, "
          f"cgroup v{version}, {'root' if os.geteuid() == 0 else 'unprivileged'}"
          + (" (quick smoke run, figures not meaningful)" if args.quick else ""))  # fmt: skip
    print(
        f"256 MiB cgroup, shipped thresholds (emergency 95 %), worst case {watch.worst_case_mb_per_second:g} MiB/s, "
        f"pauses {watch.min_interval_seconds * 1000:g} ms to {watch.max_interval_seconds:g} s; {seconds:g} s each"
    )
    print()
    print("| position | usage MiB | reads/s | CPU share of one core, % | CPU µs per read |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, share, usage in rows:
        per_read = share / 100 * 1e6 / rate if rate else 0.0
        print(f"| {name} | {usage:.0f} | {rate:.0f} | {share:.3f} | {per_read:.1f} |")
    print(
        f"| check loop: one full check every 5 s ({check_us:.0f} µs median) | - | 0.2 | {check_us / 5e4:.4f} | - |"
    )
    print()
    print(f"one usage read (pread of an open fd): median {statistics.median(reads):.1f} µs, "
          f"p99 {sorted(reads)[int(len(reads) * 0.99) - 1]:.1f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
