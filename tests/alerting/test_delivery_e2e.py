"""Alert delivery end to end: a real monitor (or a real memmon process) and real receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memmon.model import MemorySample
from tests.alerting.conftest import get_json
from tests.alerting.receivers import Receiver
from tests.samples import process_sample
from tests.test_cli import clean_env, free_port, memmon, stop, wait_ready
from tests.waiting import wait_until


class ScriptedSampler:
    """Stands in for the samplers: the target's RSS follows ``values`` (MB), cycling; everything else is fixed."""

    process = None
    cgroup = None
    target_label = "pid:42"

    def __init__(self, values: list[float]) -> None:
        self.values: Iterator[float] = itertools.cycle(values)

    def sample(self) -> MemorySample:
        return process_sample(next(self.values), at=time.time())


THRESHOLDS = {"memory_warning_mb": 100, "memory_critical_mb": 200, "memory_emergency_mb": 400,
              "resolve_margin_ratio": 0}  # fmt: skip


def webhook_overrides(receiver: Receiver, **alerting: Any) -> dict[str, Any]:
    return {
        "thresholds": THRESHOLDS,
        "alerting": {
            "webhook_url": receiver.url + "/hook",
            "delivery": {"timeout_seconds": 0.5, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
            **alerting,
        },
    }


async def test_hovering_memory_is_rate_limited_end_to_end(make_monitor, receiver: Receiver) -> None:
    """Memory crossing warning up and down 50 times gives the webhook at most one firing and one resolution per
    rate-limit interval, and its last notification says what is true at the end."""
    monitor = make_monitor(
        webhook_overrides(receiver, rate_limit_seconds=1.0), sampler=ScriptedSampler([150, 50])
    )
    await monitor.start_monitoring()
    started = time.monotonic()
    try:
        for _ in range(100):  # 50 crossings up and 50 down, over about 3 s
            await monitor.check_now()
            await asyncio.sleep(0.03)
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.2)  # let the last held transition out
        await wait_until(lambda: monitor.alert_channels()["webhook"].pending == 0)
    finally:
        await monitor.stop_monitoring()
    windows = int(elapsed / 1.0) + 2
    assert 2 <= receiver.accepted <= 2 * windows
    assert receiver.bodies[-1]["state"] == "resolved"
    # Every crossing raised (and stored) an alert; the loop also checks on its own, hence ">=".
    assert monitor.telemetry.alerts_fired.value("warning", "process_memory") >= 50


async def test_checks_keep_their_cadence_while_the_receiver_hangs(make_monitor, receiver: Receiver) -> None:
    """A receiver that hangs every attempt past the timeout never delays a check: no overrun, loop stays live."""
    receiver.default = receiver.default.__class__(delay=5.0)
    monitor = make_monitor(webhook_overrides(receiver), sampler=ScriptedSampler([150]))
    await monitor.start_monitoring()
    try:
        await wait_until(lambda: len(receiver.requests) >= 3)
        checks_before = monitor.telemetry.checks.total()
        await asyncio.sleep(0.5)
        assert monitor.telemetry.checks.total() > checks_before  # 0.05 s interval: the loop kept going
        assert monitor.is_live()
        assert monitor.telemetry.check_overruns.total() == 0
        assert monitor.alert_channels()["webhook"].pending == 1
    finally:
        await monitor.stop_monitoring()


async def test_alertmanager_sees_the_alert_fire_and_resolve(make_monitor, alertmanager: str) -> None:
    """Pushed to a real Alertmanager, the alert is active with memmon's labels, then resolved when memory drops."""
    sampler = ScriptedSampler([250])
    monitor = make_monitor(
        {"thresholds": THRESHOLDS, "alerting": {"alertmanager_url": alertmanager, "instance": "test-pod"}},
        sampler=sampler,
    )
    await monitor.start_monitoring()
    try:
        await wait_until(
            lambda: monitor.alert_channels()["alertmanager"].pending == 0 and monitor.latest is not None
        )

        def active() -> list[dict[str, Any]]:
            return [a for a in get_json(f"{alertmanager}/api/v2/alerts") if a["status"]["state"] == "active"]

        await wait_until(lambda: len(active()) == 1)
        (alert,) = active()
        assert alert["labels"] == {
            "alertname": "MemmonMemoryLevel",
            "severity": "critical",
            "component": "process_memory",
            "target": "pid:42",
            "instance": "test-pod",
        }
        assert alert["annotations"]["summary"].startswith("CRITICAL: Memory usage 250.0 MiB")
        sampler.values = itertools.cycle([50])
        await wait_until(lambda: active() == [], within=15)
    finally:
        await monitor.stop_monitoring()


def test_sigkill_mid_delivery_then_restart_delivers_the_pending_alert(tmp_path: Path) -> None:
    """An agent SIGKILLed while its receiver is down delivers the spooled alert after restart, exactly once."""
    port, receiver_port = free_port(), free_port()
    state = tmp_path / "state"
    args = ["--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(state),
            "--check-interval", "0.2"]  # fmt: skip
    env = clean_env(
        MEMMON_THRESHOLDS__MEMORY_WARNING_MB="1",
        MEMMON_THRESHOLDS__MEMORY_CRITICAL_MB="100000",
        MEMMON_THRESHOLDS__MEMORY_EMERGENCY_MB="200000",
        MEMMON_ALERTING__WEBHOOK_URL=f"http://127.0.0.1:{receiver_port}/hook",
        MEMMON_ALERTING__DELIVERY__BACKOFF_INITIAL_SECONDS="0.1",
        MEMMON_ALERTING__DELIVERY__BACKOFF_MAX_SECONDS="0.5",
    )
    first = memmon(*args, env=env)
    try:
        wait_ready(port, first)
        deadline = time.monotonic() + 15
        while (
            get_json(f"http://127.0.0.1:{port}/health")["alert_channels"]["webhook"]["consecutive_failures"]
            < 2
        ):
            assert time.monotonic() < deadline, "no failed delivery attempt seen"
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    with sqlite3.connect(state / "spool.db") as spool:
        (pending,) = spool.execute("SELECT COUNT(*) FROM spool").fetchone()
    assert pending == 1

    async def receive() -> tuple[int, list[Any]]:
        async with Receiver() as receiver:
            await receiver.down()
            receiver.port = receiver_port
            await receiver.up()
            second = memmon(*args, env=env)
            try:
                await asyncio.to_thread(wait_ready, port, second)
                await wait_until(lambda: receiver.accepted >= 1, within=15)
                await asyncio.sleep(0.5)  # a duplicate would arrive now
            finally:
                assert stop(second)[0] == 0
            return receiver.accepted, receiver.bodies

    accepted, bodies = asyncio.run(receive())
    assert accepted == 1 and len(bodies) == 1
    assert bodies[0]["severity"] == "warning" and bodies[0]["idempotency_key"].endswith(":firing")


def test_test_alert_command_reports_the_receivers_answer(tmp_path: Path) -> None:
    """memmon test-alert prints the receiver's answer: 0 when accepted, 1 when refused, 2 when not configured."""

    async def scenario() -> list[tuple[int, str]]:
        async with Receiver() as receiver:
            receiver.script = ["200", "500"]
            results = []
            for channel, url in (("webhook", receiver.url + "/hook"), ("webhook", receiver.url + "/hook"),
                                 ("slack", "")):  # fmt: skip
                env = clean_env(MEMMON_ALERTING__WEBHOOK_URL=url) if url else clean_env()
                proc = await asyncio.create_subprocess_exec(
                    *memmon_argv("test-alert", "--channel", channel), env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
                out, err = await proc.communicate()
                results.append((proc.returncode or 0, (out + err).decode()))
            assert json.loads(receiver.requests[0].body)["component"] == "test"
            return results

    (ok, ok_text), (refused, refused_text), (missing, missing_text) = asyncio.run(scenario())
    assert ok == 0 and "webhook: accepted: 200 ok" in ok_text
    assert refused == 1 and "not accepted" in refused_text and "500" in refused_text
    assert missing == 2 and "'slack' is not configured" in missing_text


def memmon_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "memmon", *args]


async def test_test_alert_endpoint(start_agent, receiver: Receiver) -> None:
    """POST /health/actions/test-alert sends through the named channel and answers with the receiver's reply."""
    agent = await start_agent(
        {"alerting": {"webhook_url": receiver.url + "/hook"}, "server": {"api_token": "tok"}}
    )
    auth = {"Authorization": "Bearer tok"}
    status, body = await agent.post("/health/actions/test-alert?channel=webhook", headers=auth)
    assert (status, body["accepted"], body["status"]) == (200, True, 200)
    assert receiver.bodies[0]["message"].startswith("WARNING: memmon test alert")
    receiver.script = ["503"]
    status, body = await agent.post(
        "/health/actions/test-alert?channel=webhook&severity=critical", headers=auth
    )
    assert status == 502 and body["accepted"] is False and body["retryable"] is True
    status, body = await agent.post("/health/actions/test-alert?channel=email", headers=auth)
    assert status == 400 and body["parameter"] == "channel"
    status, _ = await agent.post("/health/actions/test-alert?channel=webhook")
    assert status == 401


async def test_failing_channel_is_degraded_in_health_and_metrics(start_agent, receiver: Receiver) -> None:
    """A receiver that keeps refusing marks its channel degraded in /health and in the metrics, with counts."""
    await receiver.down()
    overrides = webhook_overrides(receiver)
    overrides["thresholds"] = {
        "memory_warning_mb": 1,
        "memory_critical_mb": 100_000,
        "memory_emergency_mb": 200_000,
    }
    agent = await start_agent(overrides)
    await wait_until(lambda: agent.monitor.alert_channels()["webhook"].degraded)
    status, health = await agent.get("/health")
    assert status == 200 and "alerting.webhook" in health["degraded"]
    channel = health["alert_channels"]["webhook"]
    assert channel["state"] == "degraded" and channel["pending"] == 1
    assert "connection refused" in channel["last_error"]
    _, metrics = await agent.get("/metrics")
    assert 'memmon_alert_channel_degraded{channel="webhook"} 1.0' in metrics
    assert 'memmon_alert_spool_pending{channel="webhook"} 1.0' in metrics
    assert 'memmon_alert_deliveries_total{channel="webhook",outcome="failed"}' in metrics
    assert 'memory_alerts_sent_total{severity="warning"} 1.0' in metrics
    await receiver.up()
    await wait_until(lambda: receiver.accepted == 1)
    await wait_until(lambda: not agent.monitor.alert_channels()["webhook"].degraded)
