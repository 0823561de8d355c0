"""A real Prometheus in the loop: Debian's prometheus scrapes a running agent, and every PromQL expression of
the dashboard, of the alert rules and of the guide's sample queries runs through its HTTP API.

This keeps the dashboard and the rules honest when metric names change.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerting.receivers import Receiver, free_port
from tests.deploy.test_dashboard import NODE_ONLY_RULE_METRICS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "memmon-dashboard.json"
RULES = ROOT / "deploy" / "helm" / "memmon" / "files" / "prometheus-rules.yaml"
GUIDE_QUERIES = [
    'avg_over_time(memory_usage_bytes{component="rss_mb"}[5m])',
    "increase(memory_alerts_sent_total[1h])",
    "histogram_quantile(0.95, rate(memory_check_duration_seconds_bucket[5m]))",
]
NODE_ONLY_PANELS = frozenset({"Pods Nearest Their Limit", "Restarts vs Kernel OOM Kills"})
"""The dashboard's Cluster view: per-pod panels that only a node-mode agent has data for (pods, their restarts and
OOM kills); tests/prometheus/test_prometheus_node.py runs them against one. Every other panel runs here."""
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

if not Path(PROMETHEUS).exists() or not Path(PROMTOOL).exists():
    pytest.skip(
        "Debian's prometheus is missing; make test installs it when run as root", allow_module_level=True
    )


def get(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
async def busy_agent(start_agent) -> AsyncIterator[Any]:
    """An agent at warning with a webhook receiver that accepts and a Slack one that refuses, so alert, delivery
    (delivered and failed) and action series all exist."""
    async with Receiver() as hook, Receiver() as slack:
        slack.default = slack.default.__class__(status=500, body="no_service")
        agent = await start_agent(
            {
                "monitoring": {"check_interval": 0.2},
                "thresholds": {
                    "memory_warning_mb": 1,
                    "memory_critical_mb": 100_000,
                    "memory_emergency_mb": 200_000,
                },
                "alerting": {
                    "webhook_url": hook.url + "/hook",
                    "slack_webhook": slack.url + "/services/T/B/x",
                    "delivery": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5},
                },
            }
        )
        yield agent


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Starts Debian's prometheus on 127.0.0.1 scraping a target every second; yields a start function."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [{"job_name": "memmon", "static_configs": [{"targets": [target]}]}],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        argv = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if get(f"{base}/api/v1/targets")["data"]["activeTargets"][0]["health"] == "up":
                    return base
            except (OSError, KeyError, IndexError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, nested rows included."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def concrete(expr: str, instance: str) -> str:
    """Grafana's variables replaced by what this test's Prometheus has."""
    values = {"job": "memmon", "instance": instance, "target": "self", "__range": "5m",
              "namespace": ".*", "pod": ".*", "container": ".*",  # the variables at All, as Grafana sends it
              "__rate_interval": "10s", "__interval": "2s", "datasource": ""}  # fmt: skip
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        return get(url)
    except Exception as exc:  # an HTTP 400 carries the parse error in its body
        body = getattr(exc, "read", lambda: b"")()
        return json.loads(body) if body else {"status": "error", "error": str(exc)}


async def test_every_dashboard_rule_and_guide_query_runs_and_returns_data(busy_agent, prometheus) -> None:
    """After a few scrapes, every dashboard panel query and guide query parses and returns data; every rule
    expression parses and every metric it names has data."""
    import asyncio

    instance = f"127.0.0.1:{busy_agent.server.port}"
    base = await asyncio.to_thread(prometheus, instance)
    # A dozen scrapes (rates and predict_linear need several points), while the watched process (this one) grows
    # 2 MiB each half second: "Time to Limit" divides by deriv() > 0, which a flat process has no data for.
    ballast: list[bytes] = []
    for _ in range(24):
        ballast.append(b"\x01" * (2 << 20))
        await asyncio.sleep(0.5)
    failures: list[str] = []
    panels = dashboard_expressions()
    assert {title for title, _ in panels} >= NODE_ONLY_PANELS, "a node-only panel was renamed: update the set"
    for title, expr in [("guide", q) for q in GUIDE_QUERIES] + [
        p for p in panels if p[0] not in NODE_ONLY_PANELS
    ]:
        answer = await asyncio.to_thread(query, base, concrete(expr, instance))
        if answer.get("status") != "success":
            failures.append(f"{title}: {expr}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            failures.append(f"{title}: {expr}: no data")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            answer = await asyncio.to_thread(query, base, rule["expr"])
            if answer.get("status") != "success":
                failures.append(f"rule {name}: {answer.get('error')}")
                continue
            # Node-only names have data only in node mode: test_prometheus_node.py evaluates their rule there.
            for metric in (
                set(re.findall(r"\b(memmon_\w+|memory_\w+)\b", rule["expr"])) - NODE_ONLY_RULE_METRICS
            ):
                data = await asyncio.to_thread(query, base, f"count({{__name__=~'{metric}.*'}})")
                if not data["data"]["result"]:
                    failures.append(f"rule {name}: {metric} has no data")
    assert failures == []


def test_memmon_metrics_follow_prometheus_naming_conventions(tmp_path: Path) -> None:
    """promtool check metrics finds nothing to say about the memmon_* family (the guide's compatibility family,
    memory_usage_bytes in MB and percent, is exempt by design and documented as such)."""
    import urllib.request

    from tests.test_cli import clean_env, memmon, stop, wait_ready

    port = free_port()
    proc = memmon("--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path),
                  "--check-interval", "0.2", env=clean_env())  # fmt: skip
    try:
        wait_ready(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            exposition = response.read()
    finally:
        assert stop(proc)[0] == 0
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    findings = (result.stdout + result.stderr).decode().splitlines()
    assert [line for line in findings if "memmon_" in line] == []
