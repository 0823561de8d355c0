"""Cost of one full check (every sampler + evaluation) and the agent's idle footprint.

Prints, for this machine and this run:
- the median and p99 of one full check, in microseconds, as the agent runs it (the default embedded config:
  own process, its cgroup, the host, PSI), next to the floor of reading the same kernel files with plain
  ``os.read`` in the same run, and their ratio (the overhead memmon adds on top of the kernel's own cost);
- the cost of counting gc-tracked objects (done every ``gc_objects_every`` checks, so it shows in the p99);
- the idle RSS and CPU share of a real ``memmon`` process checking every second.

Usage: ``python bench/check_cost.py [--quick]`` (``--quick`` is the smoke-test size used by ``make test``).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from memmon.assembly import build_sampler, build_thresholds
from memmon.config import load_settings
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule
from memmon.model import MemorySample
from memmon.sampling.snapshot import SnapshotSampler


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Microseconds per call, ``runs`` calls after 20 warm-up calls."""
    for _ in range(20):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def full_checks(
    sampler: SnapshotSampler, evaluator: Evaluator, runs: int
) -> tuple[list[float], list[float], list[float]]:
    """Microseconds per full check: all of them, those that did not count gc objects and those that did (seen
    from the sample's ``gc_objects_at`` changing). Counting inside the check, with the heap cache-cold, costs
    several times what a tight loop of ``len(gc.get_objects())`` suggests, so it is measured here."""
    every: list[float] = []
    plain: list[float] = []
    counting: list[float] = []
    last_count_at: float | None = None
    for index in range(runs + 20):
        started = time.perf_counter_ns()
        evaluation = evaluator.evaluate(sampler.sample())
        elapsed = (time.perf_counter_ns() - started) / 1000
        process = evaluation.sample.process
        counted_at = process.gc_objects_at if process else None
        if index >= 20:
            every.append(elapsed)
            (plain if counted_at == last_count_at else counting).append(elapsed)
        last_count_at = counted_at
    return every, plain, counting


def kernel_files(sample: MemorySample) -> list[str]:
    """The files a check reads, derived from what the sample found (same sources, same count)."""
    files = ["/proc/self/statm", "/proc/meminfo"]
    if sample.pressure is not None:
        files.append(sample.pressure.source)
    if sample.cgroup is not None:
        root = Path("/sys/fs/cgroup/memory" if sample.cgroup.version == 1 else "/sys/fs/cgroup")
        directory = root / sample.cgroup.path.lstrip("/")
        names = (
            [
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "memory.stat",
                "memory.oom_control",
                "memory.failcnt",
            ]
            if sample.cgroup.version == 1
            else ["memory.current", "memory.max", "memory.stat", "memory.events"]
        )
        files += [str(directory / name) for name in names if (directory / name).exists()]
    return files


def read_all(paths: list[str]) -> None:
    """The floor: open, read and close each file with no parsing."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.read(fd, 65536)
        finally:
            os.close(fd)


def idle_footprint(seconds: float) -> tuple[float, float]:
    """(RSS MiB, CPU %) of a real memmon process over ``seconds`` at a 1 s check interval."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as state:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memmon", "--health-port", str(port), "--prometheus-port", "0",
             "--state-dir", state, "--check-interval", "1", "--log-level", "WARNING"],
        )  # fmt: skip
        try:
            time.sleep(min(3.0, seconds))  # start-up (imports) is not idle time
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu_seconds() -> float:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / ticks

            cpu0, wall0 = cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = cpu_seconds(), time.monotonic()
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    return rss_kib / 1024, 100 * (cpu1 - cpu0) / (wall1 - wall0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    args = parser.parse_args()
    runs, idle_seconds = (200, 2.0) if args.quick else (20_000, 30.0)

    settings = load_settings(None, environ={})
    sampler, process = build_sampler(settings)
    evaluator = Evaluator(ThresholdRule(build_thresholds(settings)))
    first = sampler.sample()
    files = kernel_files(first)

    every = settings.monitoring.gc_objects_every
    full, without_count, with_count = full_checks(sampler, evaluator, runs)
    floor = timed(lambda: read_all(files), runs)
    evaluate_only = timed(lambda: evaluator.evaluate(first), runs)
    rss_mib, cpu_percent = idle_footprint(idle_seconds)

    print(
        f"# memmon check cost — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"target {first.target}; cgroup {first.cgroup.path if first.cgroup else 'none'}; {len(files)} kernel files"
    )
    print(f"runs: {runs}{' (quick smoke run, figures not meaningful)' if args.quick else ''}")
    print()
    print("| measurement | median µs | p99 µs |")
    print("|---|---:|---:|")
    rows = [
        ("full check (all samplers + evaluation), every check", full),
        (f"full check, the {every - 1} of {every} without the gc object count", without_count),
        ("floor: os.read of the same files", floor),
        ("evaluation alone", evaluate_only),
        (f"full check, the 1 of {every} that also counts gc objects", with_count),
    ]
    for name, values in rows:
        print(f"| {name} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} |")
    ratio = statistics.median(full) / statistics.median(floor)
    print()
    print(f"full check / floor (median): {ratio:.2f}x")
    print(f"idle agent ({idle_seconds:g} s at 1 s interval): RSS {rss_mib:.1f} MiB, CPU {cpu_percent:.2f} %")
    if process.is_own_process:
        print(f"gc-tracked objects in this benchmark process: {len(gc.get_objects())}")
    print(
        "idle RSS is of the whole agent process: interpreter, aiohttp, pydantic, prometheus-client, sqlite3"
    )


if __name__ == "__main__":
    main()
