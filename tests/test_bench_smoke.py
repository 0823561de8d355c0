"""Benchmarks run once at tiny sizes: they must keep working, their figures are not judged here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NOT_RUN = ("not run on this machine", "skipped:")
"""What a benchmark's first line says when this machine cannot run it (it then exits 0)."""


def quick_run(script: str, timeout: float) -> str:
    """``bench/<script> --quick``'s output; the test skips, with the script's reason, where it was not run."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0] if result.stdout else ""
    if any(marker in first for marker in NOT_RUN):
        pytest.skip(f"bench/{script}: {first.lstrip('# ')}")
    return result.stdout


def test_check_cost_benchmark_prints_its_table() -> None:
    """bench/check_cost.py --quick prints the check-cost table, the ratio to the floor and the idle footprint."""
    out = quick_run("check_cost.py", 120)
    assert re.search(r"\| full check \(all samplers \+ evaluation\), every check \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"\| floor: os\.read of the same files \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"full check / floor \(median\): [\d.]+x", out)
    assert re.search(r"idle agent .*RSS [\d.]+ MiB, CPU [\d.]+ %", out)


def test_leaks_benchmark_prints_its_tables() -> None:
    """bench/leaks.py --quick prints detection delay, false positives, prediction error and tracemalloc cost."""
    out = quick_run("leaks.py", 300)
    assert re.search(r"\| linear leak .* \| \d+/\d+ \| \d+ s / \d+ s \|", out)
    assert re.search(r"\| gc sawtooth \(false positives\) \| \d+/\d+ \|", out)
    assert re.search(r"prediction error, .*TrendPredictor median [\d.]+ %", out)
    assert re.search(r"\| build [\d,]+ small dicts \(kept\) \| \d+ \|", out)


def test_footprint_benchmark_compares_memmon_with_node_exporter() -> None:
    """bench/footprint.py --quick prints the footprint, scrape and /health load tables and the goals."""
    out = quick_run("footprint.py", 300)
    assert re.search(r"\| memmon \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"\| node_exporter \| ", out)
    assert re.search(r"\| idle RSS < 50 MB .*\| (met|missed) \|", out)


@pytest.mark.parametrize(
    ("script", "row"),
    [
        ("oom_race.py", r"\| shipped, 5 s, events \(emergency 95 %\) \| \d+ \| \d+ \| \d+ \| \d+ \|"),
        ("alert_latency.py", r"\| cgroup target, kernel notifications .* \| \d+ \| [\d.]+ \|"),
        (
            "usage_watch.py",
            r"\| near \(1 MiB under the emergency line\) \| \d+ \| \d+ \| [\d.]+ \| [\d.]+ \|",
        ),
    ],
)
def test_oom_race_and_alert_latency_benchmarks_print_their_tables(script: str, row: str) -> None:
    """bench/oom_race.py, alert_latency.py and usage_watch.py --quick print their tables (real cgroups: root
    only; skipped, with the script's reason, where it says it was not run)."""
    out = quick_run(script, 300)
    assert re.search(row, out), out


def test_prefork_benchmark_prints_its_table() -> None:
    """bench/prefork.py --quick prints a row per server and protection (real gunicorn and uWSGI: root only)."""
    out = quick_run("prefork.py", 180)  # skips without root, a writable cgroup v1 or a server
    figures = r"1/1 \| \d+ \| \d+ \| [\d.]+ \| [\d.,]+ \|"
    for server in ("gunicorn-sync", "gunicorn-gthread", "uwsgi"):
        for row in ("kernel", "max-requests", "memmon"):
            assert re.search(rf"\| {server} \| 100 \| {row} \| {figures}", out), out
    assert re.search(r"N = \d+; gunicorn-sync: `--max-requests \d+ --max-requests-jitter \d+`", out)


def test_prefork_cost_benchmark_prints_its_table() -> None:
    """bench/prefork_cost.py --quick prints the server-mode sample cost next to fixed pids, and the USS read."""
    out = quick_run("prefork_cost.py", 120)  # skips without root, a writable cgroup v1 or gunicorn
    assert re.search(r"\| process sample, server mode \(master \+ 3 workers\) \| \d+ \| \d+ \|", out), out
    assert re.search(r"server mode / fixed pids \(median\): [\d.]+x", out), out


def test_trend_benchmark_prints_its_table() -> None:
    """bench/trend.py --quick prints the per-call cost of fit_trend (raw, rolling maxima) and a predictor check."""
    out = quick_run("trend.py", 120)
    for row in (
        r"fit_trend, 300 points, raw",
        r"fit_trend, 300 points, rolling_max_seconds=15",
        r"TrendPredictor\(600 s window, 600 points\): add \+ predict",
    ):
        assert re.search(rf"\| {row} \| \d+ \| \d+ \|", out), out
