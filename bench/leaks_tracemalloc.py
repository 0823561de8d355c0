"""What a tracemalloc window costs: finish() per window, and how much tracing slows allocation-heavy code.

Prints, for this machine and this run:
- the cost of ``AllocationProfiler.finish()`` (one snapshot, grouping, filtering, naming functions) for the
  test's workload (40 leaked 100 kB buffers next to churn that allocates and frees) and for windows whose
  survivors are many small objects, at 1 and 5 frames;
- the slowdown factor of allocation-heavy loops with tracing on at 1, 5 and 10 frames versus off: building
  200k small dicts that stay alive until the loop ends, and 200k dicts that die at once (churn). The loops
  run 10 calls deep, as service code does, so that deeper tracebacks have frames to record.

Usage: ``python bench/leaks_tracemalloc.py [--quick]`` (``--quick`` is a tiny smoke-test size).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from memmon.sampling.allocations import AllocationProfiler

DEPTH = 10
KEPT: list[bytearray] = []


def at_depth(depth: int, fn: Callable[[], object]) -> object:
    """``fn()`` called ``depth`` Python frames below here."""
    return fn() if depth <= 1 else at_depth(depth - 1, fn)


def leak() -> None:
    """The test's leak: keep one 100 kB buffer."""
    KEPT.append(bytearray(100_000))


def churn() -> int:
    """The test's churn: allocate about as much in small objects and free it on return."""
    return len([bytes(1000) for _ in range(100)] + [str(i) * 5 for i in range(1000)])


def leak_workload() -> None:
    """40 leaks, each next to a churn."""
    for _ in range(40):
        leak()
        churn()


def build_dicts(count: int) -> Callable[[], object]:
    """A loop that builds ``count`` small dicts and keeps them until it returns."""

    def run() -> object:
        return [{"id": i, "name": "x", "value": i * 2} for i in range(count)]

    return run


def churn_dicts(count: int) -> Callable[[], object]:
    """A loop that builds ``count`` small dicts, each dropped at once."""

    def run() -> object:
        total = 0
        for i in range(count):
            record = {"id": i, "name": "x", "value": i * 2}
            total += len(record)
        return total

    return run


def finish_cost(workload: Callable[[], object], frames: int, runs: int) -> tuple[float, int]:
    """Median milliseconds of ``finish()`` after ``workload`` ran (10 deep) in the window, and the blocks."""
    timings: list[float] = []
    blocks = 0
    for _ in range(runs):
        KEPT.clear()
        gc.collect()
        profiler = AllocationProfiler(frames=frames, top=10)
        profiler.start()
        survivors = at_depth(DEPTH, workload)
        blocks = len(tracemalloc.take_snapshot().traces)
        started = time.perf_counter()
        profiler.finish()
        timings.append((time.perf_counter() - started) * 1000)
        del survivors
    KEPT.clear()
    return statistics.median(timings), blocks


def loop_seconds(workload: Callable[[], object], frames: int, runs: int) -> float:
    """Median seconds of ``workload`` (10 deep) with tracing at ``frames`` frames (0: off)."""
    timings: list[float] = []
    for _ in range(runs):
        gc.collect()
        if frames:
            tracemalloc.start(frames)
        started = time.perf_counter()
        result = at_depth(DEPTH, workload)
        timings.append(time.perf_counter() - started)
        if frames:
            tracemalloc.stop()
        del result
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    args = parser.parse_args()
    runs = 1 if args.quick else 5
    loop_size = 20_000 if args.quick else 200_000
    survivor_sizes = (1_000, 10_000) if args.quick else (10_000, 100_000, 1_000_000)

    print(
        f"# tracemalloc window cost — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print(
        f"runs per figure (median): {runs}{' (quick smoke run, figures not meaningful)' if args.quick else ''}"
    )
    print()
    print("| finish() after a window of | traced blocks | frames=1 ms | frames=5 ms |")
    print("|---|---:|---:|---:|")
    windows: list[tuple[str, Callable[[], object]]] = [
        ("the test's workload (40 x 100 kB leaked + churn)", leak_workload)
    ]
    windows += [(f"{size:,} surviving small dicts", build_dicts(size)) for size in survivor_sizes]
    for name, workload in windows:
        one, _ = finish_cost(workload, 1, runs)
        five, blocks = finish_cost(workload, 5, runs)
        print(f"| {name} | {blocks:,} | {one:.1f} | {five:.1f} |")
    print()
    print(f"| allocation-heavy loop ({DEPTH} calls deep) | off ms | frames=1 | frames=5 | frames=10 |")
    print("|---|---:|---:|---:|---:|")
    loops = [
        (f"build {loop_size:,} small dicts (kept)", build_dicts(loop_size)),
        (f"churn {loop_size:,} small dicts (freed at once)", churn_dicts(loop_size)),
    ]
    for name, workload in loops:
        off = loop_seconds(workload, 0, runs)
        cells = []
        for frames in (1, 5, 10):
            traced = loop_seconds(workload, frames, runs)
            cells.append(f"{traced * 1000:.0f} ms ({traced / off:.1f}x)")
        print(f"| {name} | {off * 1000:.0f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
