"""The dashboard's ``target`` variable against a real multi-target agent scraped by Debian's prometheus: the
variable lists every target, per-target panels answer one series per selected target with the target in their
legend, and agent-wide panels are neither multiplied nor narrowed by the number of targets selected."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.prometheus.test_prometheus_loop import DASHBOARD, get
from tests.prometheus.test_prometheus_loop import prometheus as prometheus  # the fixture

TARGETS = {"api", "worker", "host"}
PER_TARGET_PANELS = {
    "Memory Usage (MB)",
    "Memory vs Effective Limit",
    "Memory Percentage",
    "Time to Limit (predicted)",
    "Memory Usage Trend",
    "Alert Timeline",
    "Garbage Collection",
}
"""Panels about the memory of the targets selected: every series they answer carries ``target``."""
ONE_PER_TARGET = {("Memory Percentage", "A"), ("Alert Timeline", "A"), ("Memory vs Effective Limit", "A")}
"""Queries with exactly one series for each target, whatever its kind."""


@pytest.fixture
async def multi_agent(start_agent) -> AsyncIterator[Any]:
    """One agent watching this test process as ``api`` (warning at 1 MB), a ``sleep`` as ``worker`` and the
    host, checking every 0.2 s."""
    child = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        yield await start_agent(
            {
                "monitoring": {"check_interval": 0.2},
                "targets": [
                    {"pids": [os.getpid()], "name": "api", "thresholds": {"memory_warning_mb": 1}},
                    {"pids": [child.pid], "name": "worker"},
                ],
            }
        )
    finally:
        child.kill()
        await child.wait()


def panel_queries() -> list[tuple[str, str, str, str]]:
    """(panel title, refId, expr, legendFormat) of every query of every panel, nested rows included."""
    found: list[tuple[str, str, str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(
                        (panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""))
                    )
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def concrete(expr: str, instance: str, target: str) -> str:
    """Grafana's variables replaced as Grafana does for this Prometheus and a ``target`` regex."""
    values = {"job": "memmon", "instance": instance, "target": target, "__range": "1m",
              "namespace": ".*", "pod": ".*", "container": ".*",  # the variables at All, as Grafana sends it
              "__rate_interval": "10s", "__interval": "2s", "datasource": ""}  # fmt: skip
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def legend(format_: str, labels: dict[str, str]) -> str:
    """A legendFormat rendered as Grafana does: ``{{label}}`` replaced by the series' label value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), format_)


def series(base: str, expr: str, at: float) -> list[tuple[dict[str, str], str]]:
    """(labels, value) of an instant query at time ``at`` (fixed, so that two selections see the same data)."""
    try:
        answer = get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr, 'time': at})}")
    except Exception as exc:  # an HTTP 400 carries the parse error in its body
        body = getattr(exc, "read", lambda: b"")()
        answer = json.loads(body) if body else {"status": "error", "error": str(exc)}
    assert answer.get("status") == "success", (expr, answer.get("error"))
    return sorted(
        ((r["metric"], r["value"][1]) for r in answer["data"]["result"]), key=lambda s: sorted(s[0].items())
    )


async def test_the_target_variable_selects_each_target_of_a_multi_target_agent(
    multi_agent, prometheus
) -> None:
    """label_values lists api, worker and host; with target=~"<one>" every per-target panel answers only that
    target's series, each legend names its target and no two series share a legend; agent-wide queries answer
    the same series and values for one target as for all (not multiplied, not narrowed)."""
    instance = f"127.0.0.1:{multi_agent.server.port}"
    base = await asyncio.to_thread(prometheus, instance)
    await asyncio.sleep(8)  # several scrapes: rates, deriv and increase need two points or more
    at = time.time() - 1
    match = urllib.parse.urlencode(
        {
            "match[]": f'memmon_memory_level{{job=~"memmon",instance=~"{instance}"}}',
            "start": at - 60,
            "end": at,
        }
    )
    listed = (await asyncio.to_thread(get, f"{base}/api/v1/label/target/values?{match}"))["data"]
    assert set(listed) == TARGETS, listed
    failures: list[str] = []
    seen: set[str] = set()
    for title, ref, expr, format_ in panel_queries():
        everything = await asyncio.to_thread(series, base, concrete(expr, instance, ".*"), at)
        targeted = [labels for labels, _value in everything if "target" in labels]
        if title in PER_TARGET_PANELS and len(targeted) != len(everything):
            failures.append(f"{title}/{ref}: series without a target: {everything}")
        names = [legend(format_, labels) for labels, _value in everything]
        if len(set(names)) != len(names):
            failures.append(f"{title}/{ref}: legends {format_!r} repeat: {names}")
        if targeted and "{{target}}" not in format_:
            failures.append(f"{title}/{ref}: per-target series, legend {format_!r} without the target")
        seen |= {labels["target"] for labels in targeted}
        for name in sorted(TARGETS):
            one = await asyncio.to_thread(series, base, concrete(expr, instance, name), at)
            others = sorted(
                {labels.get("target") for labels, _ in one if labels.get("target") != name} - {None}
            )
            if others:
                failures.append(f"{title}/{ref} target=~{name!r}: series of {others}")
            if (title, ref) in ONE_PER_TARGET and len(one) != 1:
                failures.append(f"{title}/{ref} target=~{name!r}: {len(one)} series, not 1: {one}")
            wide = [s for s in one if "target" not in s[0]]
            if wide != [s for s in everything if "target" not in s[0]]:
                failures.append(f"{title}/{ref} target=~{name!r}: agent-wide {wide} != {everything}")
    assert failures == [], "\n".join(failures)
    assert seen == TARGETS
