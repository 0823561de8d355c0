"""What watching a pre-fork server costs: the worker lookup at every check, and the USS read when acting.

Starts real gunicorn (3 sync workers, about 100 MiB leaked into them) and prints, for this machine and run:
- one process sample in server mode (the master's children read from ``/proc/<pid>/task/*/children``, then each
  process's RSS) next to the same four pids watched as fixed ``--pid`` (the baseline), median and p99 in
  microseconds, and their ratio;
- one worker's unique set size from ``smaps_rollup`` (what ``WorkerRecycle`` reads for each worker when it acts,
  never at a check), and ``psutil``'s ``memory_full_info()`` for the same worker.

Usage: ``python bench/prefork_cost.py [--runs N] [--quick]`` (root, a cgroup v1 memory hierarchy, gunicorn).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from memmon.sampling.prefork import unique_bytes
from memmon.sampling.process import ProcessSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the server harness lives with the tests
from tests.prefork.servers import MIB, http_get, launch, leak_path, why_not_runnable


def micros(fn: Callable[[], object], runs: int) -> list[float]:
    """Microseconds per call, ``runs`` calls after 20 warm-up calls."""
    for _ in range(20):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]


def main() -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 runs (the smoke test)")
    args = parser.parse_args()
    runs = 200 if args.quick else args.runs
    reason = why_not_runnable("gunicorn-sync")
    if reason:
        print(f"skipped: {reason}")
        return 0
    with launch("gunicorn-sync") as server:
        for _ in range(12):
            http_get(server.port, leak_path(8 * MIB), timeout=10)
        server_mode = ProcessSampler([server.master_pid], server=True)
        server_mode.sample()
        pids = [server.master_pid, *server.worker_pids()]
        fixed = ProcessSampler(pids)
        worker = max(server.worker_pids(), key=lambda pid: psutil.Process(pid).memory_info().rss)
        rss = psutil.Process(worker).memory_info().rss
        rows = [
            ("process sample, server mode (master + 3 workers)", micros(server_mode.sample, runs)),
            ("process sample, the same 4 pids fixed (baseline)", micros(fixed.sample, runs)),
            (
                f"USS of one worker ({rss / MIB:.0f} MiB RSS), smaps_rollup",
                micros(lambda: unique_bytes(worker), runs),
            ),
            (
                "the same, psutil memory_full_info()",
                micros(lambda: psutil.Process(worker).memory_full_info(), runs),
            ),
        ]
    print(f"pre-fork watching cost, gunicorn 3 sync workers, {runs} runs each (microseconds)\n")
    print("| what | median | p99 |")
    print("|---|---|---|")
    for name, values in rows:
        print(f"| {name} | {statistics.median(values):.0f} | {p99(values):.0f} |")
    ratio = statistics.median(rows[0][1]) / statistics.median(rows[1][1])
    print(f"\nserver mode / fixed pids (median): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
