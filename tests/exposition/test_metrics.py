"""/metrics: the guide's compatibility family and the conventional memmon_* family."""

from __future__ import annotations

import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from memmon.exposition.server import MemoryHealthServer


def parse(text: str) -> dict[str, list]:
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


async def test_metrics_have_both_families_with_values(start_agent) -> None:
    """Every guide metric is present (rss_mb in MB), and memmon_* carries base units and a target label."""
    agent = await start_agent()
    status, text = await agent.get("/metrics")
    assert status == 200
    families = parse(text)
    usage = {s.labels["component"]: s.value for s in families["memory_usage_bytes"]}
    assert set(usage) == {"rss_mb", "vms_mb", "percent", "available_mb", "swap_percent"}
    rss_bytes = next(s.value for s in families["memmon_process_resident_memory_bytes"])
    assert abs(usage["rss_mb"] - rss_bytes / 2**20) < 50  # same process, sampled moments apart
    assert {s.labels["severity"] for s in families["memory_alerts_sent"]} == {
        "warning",
        "critical",
        "emergency",
    }
    assert any(
        s.name == "memory_check_duration_seconds_bucket" for s in families["memory_check_duration_seconds"]
    )
    assert "memory_cleanup_operations" in families and "memory_leaks_detected" in families
    level = families["memmon_memory_level"][0]
    assert level.value == 0 and level.labels["target"] == "self"
    limit = families["memmon_effective_limit_bytes"][0]
    assert limit.value > 2**20 and limit.labels["source"] in ("host", "cgroup")
    checks = next(s.value for s in families["memmon_checks"] if s.name == "memmon_checks_total")
    assert checks >= 1
    assert 0 < families["memmon_memory_usage_ratio"][0].value < 1


async def test_alert_counters_follow_alerts(start_agent) -> None:
    """A fired critical alert shows in memory_alerts_sent_total and memmon_alerts_total."""
    agent = await start_agent(
        {"thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 100_000}}
    )
    families = parse((await agent.get("/metrics"))[1])
    sent = {
        s.labels["severity"]: s.value for s in families["memory_alerts_sent"] if s.name.endswith("_total")
    }
    assert sent == {"warning": 0, "critical": 1, "emergency": 0}
    fired = [s for s in families["memmon_alerts"] if s.name == "memmon_alerts_total" and s.value]
    assert [(s.labels["severity"], s.labels["component"], s.value) for s in fired] == [
        ("critical", "process_memory", 1)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_separate_prometheus_port_serves_only_metrics(make_monitor) -> None:
    """The Prometheus port answers /metrics and 404s the health API."""
    monitor = make_monitor()
    port = free_port()
    server = MemoryHealthServer(monitor, port=0, host="127.0.0.1", prometheus_port=port)
    await monitor.start_monitoring()
    await monitor.check_now()
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert "memory_usage_bytes" in await response.text()
            async with session.get(f"http://127.0.0.1:{port}/health") as response:
                assert response.status == 404
    finally:
        await server.stop_server()
        await monitor.stop_monitoring()
