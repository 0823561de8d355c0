"""/metrics' shape pinned: every family's name, type, help text and label names, and the exact per-target series of a
known target, as the collector produced them before it was split into one collector per source (issue 14)."""

from __future__ import annotations

import dataclasses

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from memmon.exposition.metrics import build_registry, target_families
from memmon.exposition.metrics.families import TARGET_LABEL
from memmon.exposition.metrics.view import target_views
from tests.alerting.receivers import Receiver
from tests.exposition.metric_scenarios import start_every_source_agent

# Generated from the single-method collector (before the split) scraping the every-source agent.
EVERY_FAMILY = {
    "memmon_actions": ("counter", "Actions run, by outcome.", ("memmon_actions_total{action,outcome}",)),
    "memmon_active_alerts": ("gauge", "Alerts firing now.", ("memmon_active_alerts{severity,target}",)),
    "memmon_alert_channel_degraded": (
        "gauge",
        "1 while a channel keeps failing.",
        ("memmon_alert_channel_degraded{channel}",),
    ),
    "memmon_alert_deliveries": (
        "counter",
        "Alert deliveries by channel and outcome.",
        ("memmon_alert_deliveries_total{channel,outcome}",),
    ),
    "memmon_alert_handler_errors": ("counter", "Custom alert handler failures.", ()),
    "memmon_alert_spool_pending": ("gauge", "Deliveries waiting.", ("memmon_alert_spool_pending{channel}",)),
    "memmon_alerts": ("counter", "Alerts fired.", ("memmon_alerts_total{component,severity,target}",)),
    "memmon_alerts_resolved": (
        "counter",
        "Alerts resolved.",
        ("memmon_alerts_resolved_total{component,severity,target}",),
    ),
    "memmon_build_info": ("gauge", "memmon version.", ("memmon_build_info{version}",)),
    "memmon_cgroup_memory_failures": (
        "counter",
        "v1 failcnt: limit hits.",
        ("memmon_cgroup_memory_failures_total{target}",),
    ),
    "memmon_cgroup_memory_limit_bytes": (
        "gauge",
        "cgroup limit (absent when none).",
        ("memmon_cgroup_memory_limit_bytes{target}",),
    ),
    "memmon_cgroup_memory_usage_bytes": (
        "gauge",
        "cgroup memory usage.",
        ("memmon_cgroup_memory_usage_bytes{target}",),
    ),
    "memmon_cgroup_memory_working_set_bytes": (
        "gauge",
        "cgroup usage - inactive file.",
        ("memmon_cgroup_memory_working_set_bytes{target}",),
    ),
    "memmon_cgroup_oom_kills": (
        "counter",
        "OOM kills in the cgroup.",
        ("memmon_cgroup_oom_kills_total{target}",),
    ),
    "memmon_check_duration_seconds": (
        "histogram",
        "Cost of one full check.",
        (
            "memmon_check_duration_seconds_bucket{}",
            "memmon_check_duration_seconds_count{}",
            "memmon_check_duration_seconds_sum{}",
        ),
    ),
    "memmon_check_failures": ("counter", "Checks that raised.", ("memmon_check_failures_total{}",)),
    "memmon_check_overruns": ("counter", "Checks slower than the limit.", ("memmon_check_overruns_total{}",)),
    "memmon_checks": ("counter", "Checks completed.", ("memmon_checks_total{}",)),
    "memmon_component_level": (
        "gauge",
        "Level per component (0-3).",
        ("memmon_component_level{component,target}",),
    ),
    "memmon_effective_limit_bytes": (
        "gauge",
        "The limit percentages are of.",
        ("memmon_effective_limit_bytes{source,target}",),
    ),
    "memmon_gc_collections": ("counter", "gc collections.", ("memmon_gc_collections_total{target}",)),
    "memmon_gc_tracked_objects": (
        "gauge",
        "gc-tracked objects (sampled every N checks).",
        ("memmon_gc_tracked_objects{target}",),
    ),
    "memmon_host_memory_available_bytes": (
        "gauge",
        "Host available memory.",
        ("memmon_host_memory_available_bytes{target}",),
    ),
    "memmon_host_memory_total_bytes": ("gauge", "Host memory.", ("memmon_host_memory_total_bytes{target}",)),
    "memmon_host_swap_total_bytes": ("gauge", "Host swap.", ("memmon_host_swap_total_bytes{target}",)),
    "memmon_host_swap_used_bytes": ("gauge", "Host swap used.", ("memmon_host_swap_used_bytes{target}",)),
    "memmon_last_check_timestamp_seconds": (
        "gauge",
        "When the latest check ran.",
        ("memmon_last_check_timestamp_seconds{target}",),
    ),
    "memmon_memory_events": (
        "counter",
        "Kernel memory notifications that triggered a check.",
        ("memmon_memory_events_total{kind}",),
    ),
    "memmon_memory_level": (
        "gauge",
        "Overall level: 0 ok, 1 warning, 2 critical, 3 emergency.",
        ("memmon_memory_level{target}",),
    ),
    "memmon_memory_pressure_avg10_ratio": (
        "gauge",
        "PSI memory stall share over 10 s.",
        ("memmon_memory_pressure_avg10_ratio{kind,target}",),
    ),
    "memmon_memory_usage_ratio": (
        "gauge",
        "Judged memory / effective limit.",
        ("memmon_memory_usage_ratio{target}",),
    ),
    "memmon_predicted_seconds_to_limit": (
        "gauge",
        "Seconds until the effective limit at the current trend (predictive alerting).",
        ("memmon_predicted_seconds_to_limit{target}",),
    ),
    "memmon_process_resident_memory_bytes": (
        "gauge",
        "RSS of the target processes.",
        ("memmon_process_resident_memory_bytes{target}",),
    ),
    "memmon_process_virtual_memory_bytes": (
        "gauge",
        "VMS of the target processes.",
        ("memmon_process_virtual_memory_bytes{target}",),
    ),
    "memmon_processes": ("gauge", "Target processes found.", ("memmon_processes{target}",)),
    "memmon_server_worker_max_resident_bytes": (
        "gauge",
        "RSS of the pre-fork server's largest worker.",
        ("memmon_server_worker_max_resident_bytes{target}",),
    ),
    "memmon_server_workers": (
        "gauge",
        "Workers of the pre-fork server target.",
        ("memmon_server_workers{target}",),
    ),
    "memmon_source_degraded": (
        "gauge",
        "1 when a source could not be read or a watch not armed.",
        ("memmon_source_degraded{source,target}",),
    ),
    "memmon_start_time_seconds": (
        "gauge",
        "When monitoring started (epoch).",
        ("memmon_start_time_seconds{}",),
    ),
    "memmon_store_errors": ("counter", "State store failures.", ("memmon_store_errors_total{operation}",)),
    "memmon_target_memory_bytes": (
        "gauge",
        "The judged memory: rss sum or cgroup working set.",
        ("memmon_target_memory_bytes{target}",),
    ),
    "memory_alerts_sent": (
        "counter",
        "Guide compatibility: firing alerts notified.",
        ("memory_alerts_sent_total{severity}",),
    ),
    "memory_check_duration_seconds": (
        "histogram",
        "Guide compatibility: cost of one check.",
        (
            "memory_check_duration_seconds_bucket{}",
            "memory_check_duration_seconds_count{}",
            "memory_check_duration_seconds_sum{}",
        ),
    ),
    "memory_cleanup_operations": (
        "counter",
        "Guide compatibility: cleanup actions run.",
        ("memory_cleanup_operations_total{}",),
    ),
    "memory_leaks_detected": (
        "counter",
        "Guide compatibility: leaks detected.",
        ("memory_leaks_detected_total{}",),
    ),
    "memory_usage_bytes": (
        "gauge",
        "Guide compatibility family; units as the component label says (MB or percent), not bytes.",
        ("memory_usage_bytes{component}",),
    ),
}

BEFORE_FIRST_CHECK = {
    "memory_usage_bytes", "memory_alerts_sent", "memory_check_duration_seconds", "memory_cleanup_operations",
    "memory_leaks_detected", "memmon_build_info", "memmon_check_duration_seconds", "memmon_checks",
    "memmon_check_overruns", "memmon_check_failures", "memmon_actions", "memmon_alert_handler_errors",
    "memmon_store_errors", "memmon_memory_events", "memmon_alert_deliveries", "memmon_alert_spool_pending",
    "memmon_alert_channel_degraded",
}  # fmt: skip
"""The families of an agent that has not checked yet (no per-target family, no start time, no usage series)."""

PER_TARGET_SERIES = """\
memmon_alerts_total{component="cgroup_memory",severity="critical",target="cgroup:/app"} 1.0
memmon_alerts_total{component="swap_memory",severity="critical",target="cgroup:/app"} 0.0
memmon_alerts_total{component="system_memory",severity="critical",target="cgroup:/app"} 0.0
memmon_alerts_total{component="cgroup_memory",severity="emergency",target="cgroup:/app"} 0.0
memmon_alerts_total{component="swap_memory",severity="emergency",target="cgroup:/app"} 0.0
memmon_alerts_total{component="system_memory",severity="emergency",target="cgroup:/app"} 0.0
memmon_alerts_total{component="cgroup_memory",severity="warning",target="cgroup:/app"} 1.0
memmon_alerts_total{component="memory_prediction",severity="warning",target="cgroup:/app"} 1.0
memmon_alerts_total{component="swap_memory",severity="warning",target="cgroup:/app"} 0.0
memmon_alerts_total{component="system_memory",severity="warning",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="cgroup_memory",severity="critical",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="swap_memory",severity="critical",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="system_memory",severity="critical",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="cgroup_memory",severity="emergency",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="swap_memory",severity="emergency",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="system_memory",severity="emergency",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="cgroup_memory",severity="warning",target="cgroup:/app"} 1.0
memmon_alerts_resolved_total{component="swap_memory",severity="warning",target="cgroup:/app"} 0.0
memmon_alerts_resolved_total{component="system_memory",severity="warning",target="cgroup:/app"} 0.0
memmon_memory_level{target="cgroup:/app"} 2.0
memmon_component_level{component="cgroup_memory",target="cgroup:/app"} 2.0
memmon_component_level{component="system_memory",target="cgroup:/app"} 0.0
memmon_component_level{component="swap_memory",target="cgroup:/app"} 0.0
memmon_active_alerts{severity="warning",target="cgroup:/app"} 0.0
memmon_active_alerts{severity="critical",target="cgroup:/app"} 1.0
memmon_active_alerts{severity="emergency",target="cgroup:/app"} 0.0
memmon_target_memory_bytes{target="cgroup:/app"} 6.815744e+08
memmon_effective_limit_bytes{source="cgroup",target="cgroup:/app"} 1.048576e+09
memmon_memory_usage_ratio{target="cgroup:/app"} 0.65
memmon_last_check_timestamp_seconds{target="cgroup:/app"} 1.000035e+06
memmon_predicted_seconds_to_limit{target="cgroup:/app"} 35.0
memmon_process_resident_memory_bytes{target="cgroup:/app"} 6.815744e+08
memmon_process_virtual_memory_bytes{target="cgroup:/app"} 2.0447232e+09
memmon_processes{target="cgroup:/app"} 3.0
memmon_server_workers{target="cgroup:/app"} 2.0
memmon_server_worker_max_resident_bytes{target="cgroup:/app"} 1.703936e+08
memmon_gc_tracked_objects{target="cgroup:/app"} 12345.0
memmon_gc_collections_total{target="cgroup:/app"} 7.0
memmon_cgroup_memory_usage_bytes{target="cgroup:/app"} 6.82622976e+08
memmon_cgroup_memory_working_set_bytes{target="cgroup:/app"} 6.815744e+08
memmon_cgroup_memory_limit_bytes{target="cgroup:/app"} 1.048576e+09
memmon_cgroup_oom_kills_total{target="cgroup:/app"} 2.0
memmon_cgroup_memory_failures_total{target="cgroup:/app"} 3.0
memmon_host_memory_total_bytes{target="cgroup:/app"} 1.7179869184e+10
memmon_host_memory_available_bytes{target="cgroup:/app"} 8.589934592e+09
memmon_host_swap_total_bytes{target="cgroup:/app"} 4.294967296e+09
memmon_host_swap_used_bytes{target="cgroup:/app"} 1.073741824e+09
memmon_memory_pressure_avg10_ratio{kind="some",target="cgroup:/app"} 0.015
memmon_memory_pressure_avg10_ratio{kind="full",target="cgroup:/app"} 0.005
memmon_source_degraded{source="cgroup",target="cgroup:/app"} 0.0
memmon_source_degraded{source="host",target="cgroup:/app"} 0.0
memmon_source_degraded{source="kernel_events",target="cgroup:/app"} 0.0
memmon_source_degraded{source="memory_high_guard",target="cgroup:/app"} 0.0
memmon_source_degraded{source="pressure",target="cgroup:/app"} 0.0
memmon_source_degraded{source="process",target="cgroup:/app"} 0.0
memmon_source_degraded{source="store",target="cgroup:/app"} 0.0
memmon_source_degraded{source="usage_watch",target="cgroup:/app"} 1.0
"""
"""The every-source agent's per-target series after its 35th check, in order, with their values."""

GUIDE_USAGE_SERIES = """\
memory_usage_bytes{component="rss_mb"} 650.0
memory_usage_bytes{component="vms_mb"} 1950.0
memory_usage_bytes{component="percent"} 65.0
memory_usage_bytes{component="available_mb"} 350.0
memory_usage_bytes{component="swap_percent"} 25.0
"""


def shape(text: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Family name -> (type, help, sorted ``series{label names}``), ``le`` of histogram buckets left out."""
    out = {}
    for family in text_string_to_metric_families(text):
        series = {
            sample.name + "{" + ",".join(sorted(set(sample.labels) - {"le"})) + "}"
            for sample in family.samples
        }
        out[family.name] = (family.type, family.documentation, tuple(sorted(series)))
    return out


def series_lines(text: str, first: str) -> str:
    """The sample lines from the family named ``first`` on (comments left out)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# HELP {first} "))
    return "".join(line + "\n" for line in lines[start:] if not line.startswith("#"))


async def test_every_family_keeps_its_name_type_help_and_labels(start_agent) -> None:
    """An agent with every source, a pre-fork target, a prediction, an action and two channels exposes exactly the
    families, help texts, types and label names the collector had before its split."""
    async with Receiver() as receiver:
        agent = await start_every_source_agent(start_agent, receiver.url)
        status, text = await agent.get("/metrics")
    assert status == 200
    assert shape(text) == EVERY_FAMILY


async def test_per_target_series_keep_their_labels_and_values(start_agent) -> None:
    """The per-target series of a known target (and the guide's usage family) are the same lines, values included,
    as before the split."""
    async with Receiver() as receiver:
        agent = await start_every_source_agent(start_agent, receiver.url)
        text = generate_latest(build_registry(agent.monitor)).decode()
    assert series_lines(text, "memmon_alerts_total") == PER_TARGET_SERIES
    assert [line for line in text.splitlines() if line.startswith("memory_usage_bytes{")] == (
        GUIDE_USAGE_SERIES.splitlines()
    )


async def test_before_the_first_check_only_agent_families_show(start_agent) -> None:
    """Before the first check /metrics has the agent-wide families only, with the same help texts and labels."""
    agent = await start_agent(first_check=False)
    status, text = await agent.get("/metrics")
    assert status == 200
    families = shape(text)
    assert set(families) == BEFORE_FIRST_CHECK
    for name, (kind, doc, _series) in families.items():
        assert (kind, doc) == EVERY_FAMILY[name][:2], name
    assert families["memory_usage_bytes"][2] == ()


async def test_two_targets_share_one_family_per_name(start_agent) -> None:
    """The per-target collectors read only their target's view: two views give one family per name holding both
    targets' series, each series labelled with its own target."""
    async with Receiver() as receiver:
        agent = await start_every_source_agent(start_agent, receiver.url)
    (first,) = target_views(agent.monitor)
    sample = dataclasses.replace(first.latest.sample, target="cgroup:/other")
    second = dataclasses.replace(first, latest=dataclasses.replace(first.latest, sample=sample))
    families = target_families([first, second])
    names = [family.name for family in families]
    assert len(names) == len(set(names))
    for family in families:
        targets = [sample.labels[TARGET_LABEL] for sample in family.samples]
        assert targets, family.name
        assert targets[: len(targets) // 2] == ["cgroup:/app"] * (len(targets) // 2), family.name
        assert targets[len(targets) // 2 :] == ["cgroup:/other"] * (len(targets) // 2), family.name
