"""The health API over a real socket on 127.0.0.1, watching this process on real /proc."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from memmon.exposition.requests import is_loopback, require_token

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def assert_iso_utc(text: str) -> None:
    assert ISO_UTC.match(text), text
    datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_health_has_the_guide_fields(start_agent) -> None:
    """GET /health answers 200 with the guide's fields, the level in status, and the judged memory."""
    agent = await start_agent()
    status, body = await agent.get("/health")
    assert status == 200
    assert body["status"] == "healthy" and body["level"] == "ok"
    assert {
        "timestamp",
        "uptime_seconds",
        "monitoring_active",
        "memory_usage_mb",
        "memory_percentage",
        "active_alerts",
    } <= set(body)
    assert_iso_utc(body["timestamp"])
    assert body["monitoring_active"] is True
    assert 1 < body["memory_usage_mb"] < 1024  # this test process's RSS
    assert body["target"] == "self"


async def test_memory_detail_has_guide_fields_and_says_which_limit(start_agent) -> None:
    """GET /health/memory has rss/vms/percent/available/swap/gc fields and names the effective limit used."""
    agent = await start_agent()
    status, body = await agent.get("/health/memory")
    assert status == 200
    for key in (
        "rss_mb",
        "vms_mb",
        "percent",
        "available_mb",
        "swap_percent",
        "gc_collections",
        "gc_objects",
    ):
        assert body[key] is not None, key
    assert body["limit_source"] in ("host", "cgroup")
    assert body["effective_limit_mb"] > body["rss_mb"] > 0
    assert body["percent"] == pytest.approx(
        100 * body["memory_usage_mb"] / body["effective_limit_mb"], abs=0.05
    )
    assert {c["component"] for c in body["components"]} >= {"process_memory", "system_memory"}
    assert body["processes"][0]["pid"] > 0


async def test_gc_objects_can_be_counted_on_request(start_agent) -> None:
    """?gc_objects=now counts tracked objects at request time; other values are a 400 naming the parameter."""
    agent = await start_agent()
    keep = [object() for _ in range(20_000)]
    status, body = await agent.get("/health/memory?gc_objects=now")
    assert status == 200 and body["gc_objects"] > 20_000
    status, body = await agent.get("/health/memory?gc_objects=sometimes")
    assert status == 400 and body["parameter"] == "gc_objects"
    del keep


@pytest.mark.parametrize("path", ["/health/alerts", "/health/metrics/history"])
@pytest.mark.parametrize("value", ["abc", "-1", "0", "1e9", "nan", "inf"])
async def test_bad_hours_is_a_400_naming_the_parameter(start_agent, path: str, value: str) -> None:
    """hours that is not a finite number in (0, retention] is rejected with a JSON 400 naming 'hours'."""
    agent = await start_agent()
    status, body = await agent.get(f"{path}?hours={value}")
    assert status == 400
    assert body["parameter"] == "hours" and "hours must be" in body["message"]


async def test_unknown_path_and_wrong_method_are_json(start_agent) -> None:
    """Unknown paths get a JSON 404 and a GET on an action a JSON 405 with Allow."""
    agent = await start_agent()
    status, body = await agent.get("/nope")
    assert status == 404 and body["error"] == "not found"
    async with agent.session.get(agent.base + "/health/actions/gc") as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
        assert (await response.json())["error"] == "method not allowed"


async def test_history_serves_recent_samples(start_agent) -> None:
    """/health/metrics/history returns the samples of the window with ISO timestamps and levels."""
    agent = await start_agent()
    for _ in range(3):
        await agent.monitor.check_now()
    status, body = await agent.get("/health/metrics/history?hours=1")
    assert status == 200 and body["count"] >= 4
    sample = body["samples"][-1]
    assert_iso_utc(sample["timestamp"])
    assert sample["level"] == "ok" and sample["rss_mb"] > 0
    status, body = await agent.get("/health/metrics/history?hours=1&max_points=2")
    assert status == 200 and body["count"] == 2 and body["total"] >= 4


async def test_levels_fire_alerts_and_readiness_sheds_load(start_agent) -> None:
    """Thresholds below our RSS raise critical: /health says so, ready turns 503, the alert is listed."""
    agent = await start_agent(
        {"thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 100_000}}
    )
    status, body = await agent.get("/health")
    assert (status, body["status"], body["active_alerts"]) == (200, "critical", 1)
    status, body = await agent.get("/health/ready")
    assert status == 503 and body["ready"] is False and body["level"] == "critical"
    status, body = await agent.get("/health/alerts?hours=24")
    assert status == 200
    assert (body["total_alerts"], body["active_alerts"], body["resolved_alerts"]) == (1, 1, 0)
    assert body["by_severity"] == {"critical": 1} and body["by_component"] == {"process_memory": 1}
    alert = body["alerts"][0]
    for key in ("timestamp", "severity", "component", "memory_usage", "threshold", "message", "metadata"):
        assert key in alert
    assert alert["threshold"] == 2.0 and alert["message"].startswith("CRITICAL: Memory usage")


async def test_probes_before_first_check_and_when_loop_is_stuck(start_agent) -> None:
    """Ready is 503 before the first sample; live turns 503 when no check completes within the stale time."""
    agent = await start_agent({"server": {"live_stale_seconds": 0.3}}, first_check=False)
    status, body = await agent.get("/health/ready")
    assert status == 503 and body["status"] == "starting"
    assert (await agent.get("/health"))[1]["status"] == "starting"
    await agent.monitor.start_monitoring()
    await agent.monitor.check_now()
    assert (await agent.get("/health/live"))[0] == 200
    original = agent.monitor.sampler.sample

    def stuck():
        import time

        time.sleep(1.0)
        return original()

    agent.monitor.sampler.sample = stuck  # type: ignore[method-assign]
    await asyncio.sleep(0.7)
    status, body = await agent.get("/health/live")
    assert status == 503 and body["live"] is False
    agent.monitor.sampler.sample = original  # type: ignore[method-assign]
    await asyncio.sleep(1.0)
    assert (await agent.get("/health/live"))[0] == 200


async def test_gc_action_from_loopback_without_token(start_agent) -> None:
    """POST /health/actions/gc from loopback (no token configured) collects and reports the guide's fields."""
    agent = await start_agent()
    status, body = await agent.post("/health/actions/gc")
    assert status == 200 and body["success"] is True
    assert body["before_objects"] >= body["after_objects"] >= 0
    assert body["collected_objects"] >= 0
    assert_iso_utc(body["timestamp"])
    status, body = await agent.post("/health/actions/gc")
    assert status == 429 and body["error"] == "rate limited"


async def test_gc_action_requires_the_bearer_token_when_set(start_agent) -> None:
    """With an API token, an action without or with a wrong bearer token is 401; the right one is accepted."""
    agent = await start_agent({"server": {"api_token": "s3cret-token"}})
    status, body = await agent.post("/health/actions/gc")
    assert status == 401 and "s3cret" not in str(body)
    status, _ = await agent.post("/health/actions/gc", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, body = await agent.post("/health/actions/gc", headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200 and body["success"] is True
    status, body = await agent.get("/health")
    assert "s3cret" not in str(body)


def test_actions_refused_from_non_loopback_without_token() -> None:
    """Without a token, a client outside 127.0.0.0/8 and ::1 is refused with 403."""
    assert is_loopback("127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.1.2.3") and not is_loopback("::ffff:10.0.0.1") and not is_loopback(None)

    class Transport:
        def __init__(self, peer: str) -> None:
            self.peer = peer

        def get_extra_info(self, name: str, default=None):
            return (self.peer, 40000) if name == "peername" else default

    remote = make_mocked_request("POST", "/health/actions/gc", transport=Transport("192.0.2.7"))
    with pytest.raises(web.HTTPForbidden):
        require_token(remote, None)
    local = make_mocked_request("POST", "/health/actions/gc", transport=Transport("127.0.0.1"))
    require_token(local, None)
