"""memmon's Grafana dashboard: its structure, its PromQL (parsed by Debian's real promtool), and the metric names it
and the Prometheus rules use, checked against a real memmon agent's /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "helm" / "memmon" / "files" / "memmon-dashboard.json"
DASHBOARD_COPY = ROOT / "deploy" / "grafana" / "memmon-dashboard.json"
RULES = ROOT / "deploy" / "helm" / "memmon" / "files" / "prometheus-rules.yaml"
SYNC_SCRIPT = ROOT / "scripts" / "sync_dashboard.sh"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: install Debian's prometheus; make test does this when root"
)

GUIDE_PANELS = (
    "Memory Usage (MB)",
    "Memory Usage Trend",
    "Memory Alerts",
    "Memory Percentage",
    "Swap Usage",
    "Garbage Collection",
    "Alert Timeline",
    "Check Response Time",
)
"""The guide's key panels ("Grafana dashboard" section), by title."""
EXTRA_PANELS = (
    "Memory vs Effective Limit",
    "Time to Limit (predicted)",
    "Actions Taken",
    "Alert Delivery Failures",
)
DATASOURCE_UID = "${datasource}"
FILTERS = ('job=~"$job"', 'instance=~"$instance"')
POD_FILTERS = ('namespace=~"$namespace"', 'pod=~"$pod"', 'target=~"$target"')
"""What every query filters by besides job and instance (the per-target panels also by $container)."""
CLUSTER_ROW = "Cluster view"
CLUSTER_PANELS = ("Pods Nearest Their Limit", "Restarts vs Kernel OOM Kills")
"""The node-mode panels, in the row "Cluster view" (tests/prometheus/test_prometheus_node.py runs them)."""
NODE_ONLY_METRICS = {"memmon_target_actions_total"}
"""Names only a node-mode agent exposes (checked against one in tests/prometheus/test_prometheus_node.py); the
dashboard uses them in the Cluster view row only."""

NODE_ONLY_RULE_METRICS = {
    "memmon_kubernetes_watch_failures_total",
    "memmon_kubernetes_watch_lists_total",
    "memmon_kubernetes_watch_events_total",
    "memmon_kubernetes_watch_bookmarks_total",
}
"""The pod watch's counters, which only a node-mode agent exposes (checked against one, and MemmonPodWatchFailing
evaluated on them, in tests/prometheus/test_prometheus_node.py)."""

NOT_EXPOSED_BY_THE_AGENT = {
    # Prometheus writes `up` itself for every scrape target; no exporter exposes it. MemmonDown uses it.
    "up",
}
"""Names the dashboard or the rules may use although the agent's /metrics does not show them. Nothing else: in
particular memmon_predicted_seconds_to_limit is not listed, as memmon has no prediction yet and the dashboard
computes the time to the limit in PromQL instead."""

GRAFANA_VARIABLES = {"__range": "1h", "__rate_interval": "1m", "__interval": "1m"}
"""Concrete stand-ins for Grafana's duration variables; every other $variable stands in a label matcher."""


# -- PromQL scanning ----------------------------------------------------------------------------------------------

TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<matchers>\{(?:[^{}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[a-z]*)
  | (?P<variable>\$\{\w+\}|\$\w+)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE,
)
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
     "quantile", "limitk", "limit_ratio"}
)  # fmt: skip
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def selectors(expr: str) -> list[tuple[str, str]]:
    """The (metric name, label matchers) of every series selector in a PromQL expression (matchers "" when none).

    A small scanner, enough for the expressions of this repository: it skips strings, function and aggregation
    names, the label lists of by/without/on/ignoring/group_left/group_right, and offset durations (Grafana's
    $variables included)."""
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr) if m.lastgroup != "space"]
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind != "name":
            i += 1
        elif text in LABEL_LISTS and following[1] == "(":
            i += 2
            while i < len(tokens) and tokens[i][1] != ")":
                i += 1
            i += 1
        elif text == "offset":
            i += 2
        elif text.lower() in KEYWORDS or text in AGGREGATIONS or following[1] == "(":
            i += 1
        elif following[0] == "matchers":
            found.append((text, following[1]))
            i += 2
        else:
            found.append((text, ""))
            i += 1
    return found


def concrete(expr: str) -> str:
    """``expr`` with Grafana's variables replaced by values PromQL accepts."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    expr = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: m.group(1) or m.group(2), expr)
    assert "$" not in expr, expr
    return expr


def exposed_names(exposition: str) -> set[str]:
    """Sample names a text exposition can carry: from each ``# TYPE`` line (histograms as _bucket/_sum/_count,
    counters with _total, also families that have no sample yet) and from the samples themselves."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {name, f"{name}_sum", f"{name}_count"}
            elif kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


# -- The dashboard ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The canonical dashboard, parsed."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in panels_of(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_selectors(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, series selector) inside each label_values(selector, label) variable query."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {variable['name']}: {query}"
        found.append((f"variable {variable['name']}", match.group(1)))
    return found


def test_dashboard_is_valid_dashboard_json(dashboard: dict[str, Any]) -> None:
    """The file is dashboard JSON with the required top-level fields, uid "memmon" and the title."""
    for field in ("annotations", "editable", "panels", "refresh", "schemaVersion", "tags", "templating", "time",
                  "timezone", "title", "uid", "version"):  # fmt: skip
        assert field in dashboard, field
    assert dashboard["uid"] == "memmon"
    assert dashboard["title"] == "memmon — memory"
    # 39 loads as it is in Grafana 10.4 and 11, and later versions migrate it (v40-v42 change nothing used here).
    assert isinstance(dashboard["schemaVersion"], int) and 39 <= dashboard["schemaVersion"] <= 42
    assert dashboard["id"] is None
    assert isinstance(dashboard["refresh"], str)
    assert set(dashboard["time"]) == {"from", "to"}
    assert dashboard["panels"] and all(isinstance(p, dict) for p in dashboard["panels"])


def test_panel_ids_are_unique_and_every_panel_has_a_grid_position(dashboard: dict[str, Any]) -> None:
    """Panel ids are unique, and every panel has a gridPos inside Grafana's 24 columns."""
    panels = panels_of(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    for panel in panels:
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid), panel["title"]
        assert all(isinstance(grid[key], int) for key in ("x", "y", "w", "h")), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    """Every panel, and each of its queries, has a Prometheus datasource referencing ${datasource} (rows have no
    query)."""
    for panel in panels_of(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        if panel["type"] == "row":
            assert "targets" not in panel, panel["title"]
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]


def test_guide_panels_and_the_extra_panels_are_present(dashboard: dict[str, Any]) -> None:
    """The guide's eight key panels and the four extra ones (limit, time to limit, actions, deliveries) exist."""
    titles = [panel["title"] for panel in panels_of(dashboard)]
    assert len(titles) == len(set(titles)), titles
    assert set(GUIDE_PANELS) | set(EXTRA_PANELS) <= set(titles), set(GUIDE_PANELS) | set(EXTRA_PANELS) - set(
        titles
    )


def test_guide_panels_have_their_visualizations_and_thresholds(dashboard: dict[str, Any]) -> None:
    """Each panel has the guide's kind: coloured MB thresholds, a 70/85/95 % gauge, alerts by severity, etc."""
    panels = {panel["title"]: panel for panel in panels_of(dashboard)}

    def steps(title: str) -> list[dict[str, Any]]:
        return list(panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"])

    def exprs(title: str) -> str:
        return "\n".join(target["expr"] for target in panels[title]["targets"])

    usage = panels["Memory Usage (MB)"]
    assert usage["type"] == "timeseries"
    assert usage["fieldConfig"]["defaults"]["unit"] in ("mbytes", "decmbytes", "bytes")
    assert [step["color"] for step in steps("Memory Usage (MB)")] == ["green", "yellow", "orange", "red"]
    assert usage["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"

    percentage = panels["Memory Percentage"]
    assert percentage["type"] == "gauge"
    assert [step["value"] for step in steps("Memory Percentage")] == [None, 70, 85, 95]
    assert "memmon_memory_usage_ratio" in exprs("Memory Percentage") and "* 100" in exprs("Memory Percentage")

    assert panels["Memory Alerts"]["type"] == "stat"
    assert re.search(r"sum by \(severity\) \(increase\(memory_alerts_sent_total\{.*\}\[\$__range\]\)",
                     exprs("Memory Alerts"))  # fmt: skip
    assert panels["Alert Timeline"]["type"] == "state-timeline"
    assert "memmon_memory_level" in exprs("Alert Timeline")
    assert "histogram_quantile(" in exprs("Check Response Time")
    assert "memmon_check_duration_seconds_bucket" in exprs("Check Response Time")
    assert "deriv(" in exprs("Memory Usage Trend")
    assert "rate(memmon_gc_collections_total" in exprs("Garbage Collection")
    assert "memmon_host_swap_used_bytes" in exprs("Swap Usage")
    assert "memmon_effective_limit_bytes" in exprs("Memory vs Effective Limit")
    assert "predict_linear(" in exprs("Memory vs Effective Limit")
    assert panels["Time to Limit (predicted)"]["fieldConfig"]["defaults"]["unit"] == "s"
    assert "memmon_actions_total" in exprs("Actions Taken")
    assert "memmon_alert_deliveries_total" in exprs("Alert Delivery Failures")


def test_template_variables_are_datasource_job_instance_namespace_pod_container_and_target(
    dashboard: dict[str, Any],
) -> None:
    """The variables are datasource, job, instance, namespace, pod, container and target, each with All and
    each query narrowed by the ones before it; namespace, pod and container are label_values over
    memmon_memory_usage_ratio."""
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "namespace", "pod", "container", "target"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "namespace", "pod", "container", "target"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    where = dict(variable_selectors(dashboard))
    assert where["variable instance"] == 'memmon_build_info{job=~"$job"}'
    assert where["variable namespace"] == 'memmon_memory_usage_ratio{job=~"$job",instance=~"$instance"}'
    assert where["variable pod"] == (
        'memmon_memory_usage_ratio{job=~"$job",instance=~"$instance",namespace=~"$namespace"}'
    )
    assert where["variable container"] == (
        'memmon_memory_usage_ratio{job=~"$job",instance=~"$instance",namespace=~"$namespace",pod=~"$pod"}'
    )
    assert where["variable target"] == (
        'memmon_memory_level{job=~"$job",instance=~"$instance",namespace=~"$namespace",pod=~"$pod",'
        'container=~"$container"}'
    )
    for name in ("namespace", "pod", "container"):
        query = variables[name]["query"]["query"]
        assert query.endswith(f", {name})") and variables[name]["definition"] == query, name


def test_every_query_filters_by_job_instance_namespace_pod_and_target(dashboard: dict[str, Any]) -> None:
    """Every selector filters by $job and $instance; every query by $namespace, $pod and $target (directly or via
    memmon_memory_level), and every per-target query also by $container (the Cluster view is per pod)."""
    for where, expr in queries(dashboard):
        found = selectors(expr)
        assert found, where
        for name, matchers in found:
            for wanted in FILTERS:
                assert wanted in matchers, f"{where}: {name} lacks {wanted}"
        for wanted in POD_FILTERS:
            assert wanted in expr, f"{where} lacks {wanted}"
        if where.split(" / ")[0] not in CLUSTER_PANELS:
            assert 'container=~"$container"' in expr, where


def cluster_view(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels after the row "Cluster view" (an open row holds the panels that follow it)."""
    panels = dashboard["panels"]
    index = next(
        i for i, panel in enumerate(panels) if panel["type"] == "row" and panel["title"] == CLUSTER_ROW
    )
    following = panels[index + 1 :]
    end = next((i for i, panel in enumerate(following) if panel["type"] == "row"), len(following))
    return following[:end]


def test_cluster_view_shows_pods_nearest_their_limit_and_restarts_next_to_oom_kills(
    dashboard: dict[str, Any],
) -> None:
    """A "Cluster view" row below the per-target panels holds the top 10 pods by memmon_memory_usage_ratio (by
    namespace and pod) and, per pod, memmon's restarts (memmon_target_actions_total{action=~"restart.*"}) next to
    the kernel's OOM kills of the pod's cgroup (memmon_cgroup_oom_kills_total, pod targets only)."""
    panels = cluster_view(dashboard)
    assert [panel["title"] for panel in panels] == list(CLUSTER_PANELS)
    row = next(panel for panel in dashboard["panels"] if panel["type"] == "row")
    assert row["gridPos"]["y"] >= max(
        p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"] if p["title"] not in CLUSTER_PANELS
        and p["type"] != "row"
    )  # fmt: skip
    nearest, restarts = panels
    (top,) = nearest["targets"]
    assert re.fullmatch(
        r"topk\(10, max by \(namespace, pod\) \(memmon_memory_usage_ratio\{.*\}\)\)", top["expr"]
    )
    assert top["legendFormat"] == "{{namespace}}/{{pod}}" and top["instant"] is True
    assert nearest["fieldConfig"]["defaults"]["unit"] == "percentunit"
    memmon_restarts, oom_kills = restarts["targets"]
    assert memmon_restarts["expr"].startswith("sum by (namespace, pod) (")
    assert 'memmon_target_actions_total{action=~"restart.*",' in memmon_restarts["expr"]
    assert "increase(memmon_target_actions_total{" in memmon_restarts["expr"]
    assert oom_kills["expr"].startswith("sum by (namespace, pod) (increase(memmon_cgroup_oom_kills_total{")
    assert 'container=""' in oom_kills["expr"], "a container's OOM kill is in its pod's cgroup count too"
    for target in nearest["targets"] + restarts["targets"]:
        assert 'pod!=""' in target["expr"], "pods only"
    assert {"memmon restarts", "OOM kills"} == {
        t["legendFormat"].split("}} ", 1)[1] for t in restarts["targets"]
    }
    used = {name for _, expr in queries(dashboard) for name, _ in selectors(expr)}
    outside = {
        name
        for panel in panels_of(dashboard)
        if panel["title"] not in CLUSTER_PANELS
        for target in panel.get("targets", [])
        for name, _ in selectors(target["expr"])
    }
    assert used >= NODE_ONLY_METRICS and not NODE_ONLY_METRICS & outside


@needs_promtool
def test_every_query_parses_as_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool accepts every query (and every variable's selector) as a recording rule, variables made concrete."""
    exprs = queries(dashboard) + variable_selectors(dashboard)
    rules = [
        {"record": f"dashboard:query_{index}", "expr": concrete(expr)}
        for index, (_, expr) in enumerate(exprs)
    ]
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60, check=False
    )
    listing = "\n".join(f"query_{index}: {where}: {expr}" for index, (where, expr) in enumerate(exprs))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{listing}"
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout + done.stderr


def test_the_scanner_finds_metric_names() -> None:
    """The PromQL scanner used below finds selectors and skips functions, label lists, strings and durations."""
    expr = (
        'sum by (job, le) (rate(a_bucket{x="{}"}[5m] offset 1h)) / on(job) group_left(le) b_total '
        'or label_replace(c, "d", "$1", "e", "(.*)") > bool 1e3 and max(f{g=~"h"}) * 2 unless i offset $__range'
    )
    assert selectors(expr) == [
        ("a_bucket", '{x="{}"}'),
        ("b_total", ""),
        ("c", ""),
        ("f", '{g=~"h"}'),
        ("i", ""),
    ]


# -- Metric names against a real agent ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode("utf-8"))


@pytest.fixture(scope="module")
def agent_exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a real memmon agent on 127.0.0.1 (watching itself, checking every 0.2 s), once its checks
    have filled in the per-target series."""
    port = _free_port()
    workdir = tmp_path_factory.mktemp("memmon-agent")
    log_path = workdir / "stderr.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEMMON_")}
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memmon", "--bind", "127.0.0.1", "--health-port", str(port),
             "--prometheus-port", "0", "--state-dir", str(workdir / "state"), "--check-interval", "0.2"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )  # fmt: skip
    try:
        text, deadline = "", time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(
                    f"memmon exited early with {proc.returncode}: {log_path.read_text(encoding='utf-8')}"
                )
            try:
                text = _fetch(f"http://127.0.0.1:{port}/metrics")
            except (urllib.error.URLError, ConnectionError):
                text = ""
            if "\nmemmon_gc_tracked_objects{" in text and "\nmemmon_last_check_timestamp_seconds{" in text:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"memmon's /metrics lacked the per-target series after 20 s:\n{text}")
        yield text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rule_expressions() -> list[tuple[str, str]]:
    """(rule name, expr) of every rule in the rule file."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [
        (rule.get("alert") or rule["record"], rule["expr"]) for group in groups for rule in group["rules"]
    ]


def test_agent_exposition_parses_histograms_and_counters(agent_exposition: str) -> None:
    """Exposed names include histogram _bucket/_count, _total counters and sample-less families, not bare names."""
    names = exposed_names(agent_exposition)
    assert {"memmon_check_duration_seconds_bucket", "memmon_check_duration_seconds_count"} <= names
    assert "memmon_check_duration_seconds" not in names
    assert {"memmon_checks_total", "memmon_actions_total", "memmon_alert_deliveries_total"} <= names


def test_dashboard_metrics_exist_in_the_agent_exposition(
    dashboard: dict[str, Any], agent_exposition: str
) -> None:
    """Every metric name the dashboard queries (panels and variables) is exposed by a real agent's /metrics."""
    exposed = exposed_names(agent_exposition) | NOT_EXPOSED_BY_THE_AGENT | NODE_ONLY_METRICS
    used = {
        name for _, expr in queries(dashboard) + variable_selectors(dashboard) for name, _ in selectors(expr)
    }
    assert used, "no metric name found in the dashboard"
    assert used - exposed == set(), f"not exposed by memmon: {sorted(used - exposed)}"


def test_rule_metrics_exist_in_the_agent_exposition(agent_exposition: str) -> None:
    """Every metric name the rules use is exposed by a real agent's /metrics (or recorded by them, or `up`)."""
    expressions = rule_expressions()
    recorded = {name for name, _ in expressions if ":" in name}
    exposed = exposed_names(agent_exposition) | NOT_EXPOSED_BY_THE_AGENT | NODE_ONLY_RULE_METRICS | recorded
    used = {name for _, expr in expressions for name, _ in selectors(expr)}
    assert used, "no metric name found in the rules"
    assert used - exposed == set(), f"not exposed by memmon: {sorted(used - exposed)}"


# -- The two copies -----------------------------------------------------------------------------------------------


def test_the_two_dashboard_copies_are_identical() -> None:
    """deploy/grafana/memmon-dashboard.json is byte-identical to the chart's canonical dashboard."""
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD.read_bytes(), "run scripts/sync_dashboard.sh"


def test_sync_script_check_mode_agrees() -> None:
    """scripts/sync_dashboard.sh --check reports the copies identical."""
    done = subprocess.run(
        ["bash", str(SYNC_SCRIPT), "--check"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
