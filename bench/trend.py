"""Cost of the robust trend: ``fit_trend`` on 300 points, raw and on rolling maxima, and a predictor's check.

Prints, for this machine and this run, the median and p99 of one call in microseconds (each sample is the mean of
a batch of calls, so timer resolution does not count):
- ``fit_trend`` on 300 one-second points (the leak detector's and the prediction's window at 1 s checks), raw and
  with ``rolling_max_seconds=15`` (each value first replaced by the maximum of the preceding 15 s);
- one check's work of a ``TrendPredictor`` holding a 600 s window of such points: ``add`` then ``predict``.

The series is a seeded linear leak (0.1 MiB/s) with +-2 MiB of noise: the same input in every run.

Usage: ``python bench/trend.py [--quick]`` (``--quick`` is the smoke-test size used by ``make test``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

from memmon.evaluation.trend import TrendPredictor, fit_trend
from memmon.model import MB

BASE = 200 * MB
NOISE = 2 * MB
START = 1.7e9
"""Epoch seconds of the first point: the agent's timestamps are that large, which matters for float rounding."""


def leak_series(count: int, seed: int = 7) -> list[tuple[float, float]]:
    """``count`` one-second points of a 0.1 MiB/s leak over 200 MiB with uniform noise of +-2 MiB."""
    rng = random.Random(seed)
    return [(START + t, BASE + 0.1 * MB * t + rng.uniform(-NOISE, NOISE)) for t in range(count)]


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank; the same rule as check_cost.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def per_call_us(call: Callable[[], object], samples: int, batch: int) -> list[float]:
    """``samples`` timings in microseconds per call, each the mean over ``batch`` calls."""
    out = []
    for _ in range(samples):
        began = time.perf_counter()
        for _ in range(batch):
            call()
        out.append((time.perf_counter() - began) / batch * 1e6)
    return out


def predictor_check(points: list[tuple[float, float]]) -> Callable[[], object]:
    """One check of a predictor already holding ``points``: add the next point (the oldest falls out of the
    600 s window) and predict the time to a 512 MiB level."""
    predictor = TrendPredictor(600)
    for t, value in points:
        predictor.add(t, value)
    state = {"t": points[-1][0], "value": points[-1][1]}

    def check() -> object:
        state["t"] += 1.0
        state["value"] += 0.1 * MB
        predictor.add(state["t"], state["value"])
        return predictor.predict(512 * MB)

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    args = parser.parse_args()
    samples, batch = (5, 5) if args.quick else (51, 100)
    points = leak_series(300)
    rows = [
        ("fit_trend, 300 points, raw", per_call_us(lambda: fit_trend(points), samples, batch)),
        (
            "fit_trend, 300 points, rolling_max_seconds=15",
            per_call_us(lambda: fit_trend(points, rolling_max_seconds=15.0), samples, batch),
        ),
        (
            "TrendPredictor(600 s window, 600 points): add + predict",
            per_call_us(predictor_check(leak_series(600)), samples, batch),
        ),
    ]
    print(
        f"# memmon trend cost — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(
        f"samples: {samples} of {batch} calls each"
        + (" (quick smoke run, figures not meaningful)" if args.quick else "")
    )
    print()
    print("| measurement | median µs | p99 µs |")
    print("|---|---:|---:|")
    for name, values in rows:
        print(f"| {name} | {statistics.median(values):.0f} | {percentile(values, 0.99):.0f} |")


if __name__ == "__main__":
    main()
