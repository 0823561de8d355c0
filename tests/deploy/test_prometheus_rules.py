"""memmon's Prometheus rules (the chart's files/prometheus-rules.yaml), checked and unit-tested by Debian's real
promtool; the metric names they use are checked against a real agent in test_dashboard.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "helm" / "memmon" / "files" / "prometheus-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "memmon-rules.test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: install Debian's prometheus; make test does this when root"
)

REQUIRED_ALERTS = {
    "MemmonMemoryWarning",
    "MemmonMemoryCritical",
    "MemmonMemoryEmergency",
    "MemmonMemoryLeakSuspected",
    "MemmonAlertDeliveryFailing",
    "MemmonDown",
    "MemmonCheckStalled",
    "MemmonPodWatchFailing",
}
SEVERITIES = {"warning", "critical", "emergency"}
"""memmon's own level names, as its Alertmanager channel sends them."""
JOB_MATCHER = 'job=~".*memmon.*"'


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


@needs_promtool
def test_rule_file_passes_promtool_check() -> None:
    """promtool check rules accepts the rule file, its lint for duplicate rules included."""
    done = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    """promtool test rules passes deploy/prometheus/memmon-rules.test.yaml."""
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_rule_file_is_a_plain_groups_document() -> None:
    """The file is one YAML document whose only key is `groups`, as a rule file and a PrometheusRule spec need."""
    assert list(load(RULES)) == ["groups"]
    assert len(list(yaml.safe_load_all(RULES.read_text(encoding="utf-8")))) == 1
    names = [group["name"] for group in load(RULES)["groups"]]
    assert len(names) == len(set(names)), names


def test_required_alerts_exist_with_severity_and_annotations() -> None:
    """Every required alert exists; every alert has a memmon severity and a summary and a description."""
    rules = alerting_rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_level_alerts_name_the_target_and_the_value() -> None:
    """Level alerts read memmon_memory_level, wait less as the level rises, and show the target and the value."""
    rules = {rule["alert"]: rule for rule in alerting_rules()}
    durations = []
    for name, level in (
        ("MemmonMemoryWarning", 1),
        ("MemmonMemoryCritical", 2),
        ("MemmonMemoryEmergency", 3),
    ):
        rule = rules[name]
        assert rule["expr"].strip() == f"memmon_memory_level >= {level}", name
        assert "{{ $labels.target }}" in rule["annotations"]["summary"], name
        assert "$value" in rule["annotations"]["description"], name
        durations.append(_seconds(rule.get("for", "0s")))
    assert durations == sorted(durations, reverse=True) and durations[0] > durations[-1], durations


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_memmon_down_uses_the_documented_job_convention() -> None:
    """MemmonDown matches the scrape job by the convention the file's header documents (job=~".*memmon.*")."""
    text = RULES.read_text(encoding="utf-8")
    header = text.split("\ngroups:", 1)[0]
    assert JOB_MATCHER in header and "Scrape job" in header
    down = next(rule for rule in alerting_rules() if rule["alert"] == "MemmonDown")
    assert down["expr"].count(f"up{{{JOB_MATCHER}}}") == 2
    assert "absent(" in down["expr"] and "== 0" in down["expr"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """The promtool tests load the chart's rule file and show every alert both firing and not firing."""
    tests = load(RULE_TESTS)
    assert [(RULE_TESTS.parent / path).resolve() for path in tests["rule_files"]] == [RULES.resolve()]
    fired: set[str] = set()
    silent: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts - fired == set(), "never shown firing"
    assert alerts - silent == set(), "never shown not firing"


def test_target_alerts_name_the_pod_and_container_in_node_mode() -> None:
    """The per-target alerts' summaries name namespace/pod (and the container) when the series carry them, the
    target otherwise; the promtool tests show both forms on node-mode series."""
    who = (
        "{{ with $labels.pod }}pod {{ $labels.namespace }}/{{ . }}{{ with $labels.container }} container {{ . }}"
        "{{ end }}{{ else }}{{ $labels.target }}{{ end }}"
    )
    rules = alerting_rules()
    per_target = [rule for rule in rules if "$labels.target" in rule["annotations"]["summary"]]
    assert {rule["alert"] for rule in per_target} == {
        "MemmonMemoryWarning",
        "MemmonMemoryCritical",
        "MemmonMemoryEmergency",
        "MemmonMemoryLeakSuspected",
        "MemmonCheckStalled",
    }
    for rule in per_target:
        assert who in rule["annotations"]["summary"], rule["alert"]
    summaries = {
        alert["exp_annotations"]["summary"]
        for group in load(RULE_TESTS)["tests"]
        for case in group.get("alert_rule_test", [])
        for alert in case.get("exp_alerts", [])
    }
    assert "memmon: pod shop/web-0 memory at EMERGENCY level" in summaries
    assert "memmon: pod shop/web-0 container app memory at EMERGENCY level" in summaries
    assert "memmon: app memory at EMERGENCY level" in summaries
