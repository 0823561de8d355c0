"""Benchmarks run once at tiny sizes: they must keep working, their figures are not judged here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_check_cost_benchmark_prints_its_table() -> None:
    """bench/check_cost.py --quick prints the check-cost table, the ratio to the floor and the idle footprint."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "check_cost.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"\| full check \(all samplers \+ evaluation\), every check \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"\| floor: os\.read of the same files \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"full check / floor \(median\): [\d.]+x", out)
    assert re.search(r"idle agent .*RSS [\d.]+ MiB, CPU [\d.]+ %", out)


def test_leaks_benchmark_prints_its_tables() -> None:
    """bench/leaks.py --quick prints detection delay, false positives, prediction error and tracemalloc cost."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "leaks.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"\| linear leak .* \| \d+/\d+ \| \d+ s / \d+ s \|", out)
    assert re.search(r"\| gc sawtooth \(false positives\) \| \d+/\d+ \|", out)
    assert re.search(r"prediction error, .*TrendPredictor median [\d.]+ %", out)
    assert re.search(r"\| build [\d,]+ small dicts \(kept\) \| \d+ \|", out)


def test_footprint_benchmark_compares_memmon_with_node_exporter() -> None:
    """bench/footprint.py --quick prints the footprint, scrape and /health load tables and the goals."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "footprint.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"\| memmon \| [\d.]+ \| [\d.]+ \|", out)
    assert re.search(r"\| node_exporter \| ", out)
    assert re.search(r"\| idle RSS < 50 MB .*\| (met|missed) \|", out)


def test_oom_race_and_alert_latency_benchmarks_print_their_tables() -> None:
    """bench/oom_race.py, oom_race_v2.py (User-Mode Linux), alert_latency.py and usage_watch.py --quick print
    their tables (real cgroups: root only)."""
    for script, row in (
        ("oom_race.py", r"\| shipped, 5 s, events \(emergency 95 %\) \| \d+ \| \d+ \| \d+ \| \d+ \|"),
        ("alert_latency.py", r"\| cgroup target, kernel notifications .* \| \d+ \| [\d.]+ \|"),
        (
            "usage_watch.py",
            r"\| near \(1 MiB under the emergency line\) \| \d+ \| \d+ \| [\d.]+ \| [\d.]+ \|",
        ),
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / "bench" / script), "--quick"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        if "not run on this machine" in result.stdout.splitlines()[0]:
            continue  # no root or no writable cgroup v1 here: the script says so and exits 0
        assert re.search(row, result.stdout), result.stdout


def test_prefork_benchmark_prints_its_table() -> None:
    """bench/prefork.py --quick prints a row per server and protection (real gunicorn and uWSGI: root only)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "prefork.py"), "--quick"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if "not run on this machine" in result.stdout.splitlines()[0]:
        return  # no root, no writable cgroup v1, or a server missing: the script says so and exits 0
    figures = r"1/1 \| \d+ \| \d+ \| [\d.]+ \| [\d.,]+ \|"
    for server in ("gunicorn-sync", "gunicorn-gthread", "uwsgi"):
        for row in ("kernel", "max-requests", "memmon"):
            assert re.search(rf"\| {server} \| 100 \| {row} \| {figures}", result.stdout), result.stdout
    assert re.search(r"N = \d+; gunicorn-sync: `--max-requests \d+ --max-requests-jitter \d+`", result.stdout)


def test_prefork_cost_benchmark_prints_its_table() -> None:
    """bench/prefork_cost.py --quick prints the server-mode sample cost next to fixed pids, and the USS read."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "prefork_cost.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if result.stdout.startswith("skipped:"):
        return  # no root, no writable cgroup v1, or gunicorn missing: the script says so and exits 0
    assert re.search(
        r"\| process sample, server mode \(master \+ 3 workers\) \| \d+ \| \d+ \|", result.stdout
    )
    assert re.search(r"server mode / fixed pids \(median\): [\d.]+x", result.stdout), result.stdout
