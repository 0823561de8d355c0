"""bench/multi_target.py run once at smoke sizes (N = 1 and 2): it must keep working; its figures are not judged."""

from __future__ import annotations

import re

from tests.test_bench_smoke import quick_run

FIGURES = (
    r"[\d.]+ \| [\d.]+ \| \d+ / \d+ \| [\d.]+ \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d,]+ \| [\d.]+ \| [\d.]+ \|"
)
"""check median, p99, rounds / expected, CPU %, RSS, /metrics bytes, gzip bytes, series, scrape median, p99."""


def test_multi_target_benchmark_prints_one_agent_separate_agents_and_node_exporter() -> None:
    """bench/multi_target.py --quick prints one agent at N = 1 (with and without the usage watcher), 2 separate
    agents, node_exporter, and one agent at N = 2 with its per-target cost or says multi-target is not available
    (real cgroups: root only; skipped, with the script's reason, where it says it was not run)."""
    out = quick_run("multi_target.py", 300)
    assert re.search(rf"\| one agent \| 1 \| 1 \| {FIGURES}", out), out
    assert re.search(rf"\| one agent \+ usage watcher \| 1 \| 1 \| {FIGURES}", out), out
    assert re.search(rf"\| 2 agents, one target each \| 2 \| 1 \| {FIGURES}", out), out
    assert re.search(
        r"\| node_exporter \(reference, default collectors\) \| - \| - \| - \| - \| - \| [\d.]+ \|", out
    )
    if "multi-target not available in this build" not in out:
        assert re.search(rf"\| one agent \| 2 \| 1 \| {FIGURES}", out), out
        assert re.search(r"\| one agent \| 2 \| 1 \| -?\d+ \| -?\d+ \| -?[\d.]+ \| -?[\d.]+ \(", out), out
