"""bench/node_mode.py run once at smoke sizes (5 pods, 3 sidecar agents): it must keep working; its figures are not
judged."""

from __future__ import annotations

import re

from tests.test_bench_smoke import quick_run

FIGURES = (
    r"[\d.]+ \| [\d.]+ \| \d+ / \d+ \| [\d.]+ \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d,]+ \| [\d.]+ \| [\d.]+ \|"
)
"""check median, p99, rounds / expected, CPU %, RSS, /metrics bytes, gzip bytes, series, scrape median, p99."""


def test_node_mode_benchmark_prints_node_mode_sidecars_node_exporter_and_watch_traffic() -> None:
    """bench/node_mode.py --quick prints node mode over 5 pods (10 targets), the plain targets list, the sidecar
    total extrapolated from 3 agents, node_exporter, the watch traffic with the churn's events and the ratios
    (real cgroups: root only; skipped, with the script's reason, where it says it was not run)."""
    out = quick_run("node_mode.py", 300)
    assert re.search(rf"\| node mode, 5 pods \| 10 \| 1 \| {FIGURES}", out), out
    assert re.search(
        rf"\| plain `targets` list, the same 10 cgroups \(no API\) \| 10 \| 1 \| {FIGURES}", out
    ), out
    assert re.search(
        rf"\| sidecar mode, 5 agents: EXTRAPOLATED x[\d.]+ from 3 .*\| 5 \| 1 \| {FIGURES}", out
    ), out
    assert re.search(
        r"\| node_exporter \(reference, default collectors\) \| - \| - \| - \| - \| - \| [\d.]+ \|", out
    )
    watch = re.search(r"\| node mode, 5 pods \| 1 \| (\d+) \| (\d+) \| (\d+) \| \d+ \| ([\d,]+) \|", out)
    assert watch, out
    churned, sent, received, window_bytes = watch.groups()
    assert (
        int(churned) > 0 and int(sent) > 0 and int(received) > 0 and int(window_bytes.replace(",", "")) > 0
    ), out
    for baseline in ("plain `targets` list", "sidecar mode", "node_exporter"):
        assert re.search(rf"\| 1 \| {re.escape(baseline)}[^|]* \| [\d.]+ \| [\d.]+ \|", out), out
