"""Leak detection and prediction, measured: detection delay, false positives over steady workloads, prediction
error against predict_linear, and the cost of tracemalloc at the chosen settings.

Synthetic series (time-compressed: one point per 5 s, a 300 s window, the guide's 10 % threshold) with seeded
noise, fed to the same ``LeakDetector`` and ``TrendPredictor`` the agent runs; then the tracemalloc overhead
table of ``bench/leaks_tracemalloc.py`` (allocation-heavy loops with and without tracing).

Usage: ``python bench/leaks.py [--quick]`` (``--quick``: a few seeds and the tracemalloc table's quick mode).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from memmon.evaluation.leaks import LeakDetector
from memmon.evaluation.trend import TrendPredictor

MB = 2**20
STEP = 5.0
WINDOW = 300.0
BASE = 200 * MB

Series = Callable[[float, random.Random], float]


def linear_leak(t: float, rng: random.Random) -> float:
    """0.1 MB/s (30 MB, 15 % per window) starting at t = 600 s, on 200 MB with ±2 MB noise."""
    return BASE + max(0.0, t - 600) * 0.1 * MB + rng.uniform(-2, 2) * MB


def sawtooth(t: float, rng: random.Random) -> float:
    """+60 MB over 30 s, then collected back."""
    return BASE + (t % 30) / 30 * 60 * MB + rng.uniform(-2, 2) * MB


def cache(t: float, rng: random.Random) -> float:
    """Fills 40 MB over the first 300 s, then flat."""
    return BASE + min(t, 300) / 300 * 40 * MB + rng.uniform(-2, 2) * MB


def spike(t: float, rng: random.Random) -> float:
    """+100 MB for 5 s at t = 700 s."""
    return BASE + (100 * MB if 700 <= t < 705 else 0) + rng.uniform(-2, 2) * MB


def noise(t: float, rng: random.Random) -> float:
    """Flat with ±4 MB noise."""
    return BASE + rng.uniform(-4, 4) * MB


def first_suspicion(series: Series, seed: int, duration: float, *, after: float = 0.0) -> float | None:
    """Seconds from ``after`` to the first suspected verdict (None: never)."""
    rng = random.Random(seed)
    detector = LeakDetector(window_seconds=WINDOW, threshold_growth_rate=0.1)
    t = 0.0
    while t <= duration:
        verdict = detector.add(t, series(t, rng))
        if verdict is not None and verdict.suspected and t >= after:
            return t - after
        t += STEP
    return None


def prediction_errors(seeds: int) -> tuple[list[float], list[float]]:
    """Relative error of the time to a 1 GiB limit for a linear leak: TrendPredictor vs least squares."""
    ours, baseline = [], []
    for seed in range(seeds):
        rng = random.Random(seed)
        predictor = TrendPredictor(600)
        points: list[tuple[float, float]] = []
        rate, limit = 0.5 * MB, 1024 * MB
        for step in range(int(600 / STEP) + 1):
            t = step * STEP
            value = BASE + rate * t + rng.uniform(-8, 8) * MB
            predictor.add(t, value)
            points.append((t, value))
        truth = (limit - (BASE + rate * points[-1][0])) / rate
        prediction = predictor.predict(limit)
        if prediction is not None and prediction.seconds is not None:
            ours.append(abs(prediction.seconds - truth) / truth)
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_v = sum(v for _, v in points) / n
        slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / sum(
            (t - mean_t) ** 2 for t, _ in points
        )
        fitted_end = mean_v + slope * (points[-1][0] - mean_t)
        baseline.append(abs((limit - fitted_end) / slope - truth) / truth)
    return ours, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few seeds: a smoke test, not a measurement")
    args = parser.parse_args()
    seeds = 3 if args.quick else 50
    started = time.perf_counter()
    print(f"# memmon leak detection — {time.strftime('%Y-%m-%d')}, seeds: {seeds}, window {WINDOW:g} s, "
          f"one point per {STEP:g} s")  # fmt: skip
    delays = [first_suspicion(linear_leak, seed, 2400, after=600) for seed in range(seeds)]
    found = [d for d in delays if d is not None]
    print()
    print("| workload | runs flagged as a leak | detection delay after the leak starts (median / max) |")
    print("|---|---:|---|")
    median = f"{statistics.median(found):.0f} s / {max(found):.0f} s" if found else "-"
    print(f"| linear leak 0.1 MB/s (15 %/window) | {len(found)}/{seeds} | {median} |")
    for name, series in (("gc sawtooth", sawtooth), ("cache filling then flat", cache), ("one-off spike", spike),
                         ("noise only", noise)):  # fmt: skip
        start = (
            600.0 if series is cache else 0.0
        )  # a cache still filling is growth; judged once flat for a window
        flagged = sum(first_suspicion(series, seed, 2400, after=start) is not None for seed in range(seeds))
        print(f"| {name} (false positives) | {flagged}/{seeds} | - |")
    ours, baseline = prediction_errors(seeds)
    print()
    print(f"prediction error, time to a 1 GiB limit (linear leak, window full): TrendPredictor median "
          f"{statistics.median(ours) * 100:.1f} % (max {max(ours) * 100:.1f} %), least squares median "
          f"{statistics.median(baseline) * 100:.1f} % (max {max(baseline) * 100:.1f} %)")  # fmt: skip
    print(f"(series part took {time.perf_counter() - started:.1f} s)")
    print()
    table = Path(__file__).with_name("leaks_tracemalloc.py")
    subprocess.run([sys.executable, str(table), *(["--quick"] if args.quick else [])], check=True)


if __name__ == "__main__":
    main()
