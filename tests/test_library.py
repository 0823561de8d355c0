"""Library mode with the guide's own call shapes and config file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from memmon import MemoryHealthServer, ProductionMemoryMonitor
from memmon.config import ConfigError
from memmon.model import Alert
from tests.alerting.receivers import Receiver

GUIDE_CONFIG = Path(__file__).resolve().parent / "fixtures" / "config" / "guide-full.json"


async def test_guide_call_shapes_work_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's library calls work as written; a custom handler and the guide's webhook and Slack channels
    (pointed at local receivers) get the alert."""
    slack, hook = Receiver(), Receiver()
    await slack.start()
    await hook.start()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("MEMMON_THRESHOLDS__MEMORY_WARNING_MB", "1")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url + "/services/T0/B0/x")
    monkeypatch.setenv("MEMMON_ALERTING__WEBHOOK_URL", hook.url + "/alerts")
    monitor = ProductionMemoryMonitor(str(GUIDE_CONFIG))
    assert monitor.settings.monitoring.check_interval == 30
    received: list[Alert] = []

    async def custom_alert_handler(alert: Alert) -> None:
        received.append(alert)

    monitor.alert_manager.add_handler(custom_alert_handler)
    await monitor.start_monitoring()
    health_server = MemoryHealthServer(monitor, port=0, prometheus_port=0)
    await health_server.start_server()
    try:
        for _ in range(250):
            if received and slack.requests and hook.requests:
                break
            await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{health_server.port}/health"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body = await response.json()
    finally:
        await health_server.stop_server()
        await monitor.stop_monitoring()
        await slack.close()
        await hook.close()
    assert [(a.severity.label, a.component) for a in received] == [("warning", "process_memory")]
    # The guide routes critical and emergency explicitly; warning is not listed, so it goes to every channel.
    assert hook.bodies[0]["severity"] == "warning" and hook.bodies[0]["component"] == "process_memory"
    assert "WARNING" in slack.bodies[0]["text"]
    assert body["status"] == "warning"
    assert (tmp_path / "memmon" / "memmon.db").is_file()
    assert not monitor.monitoring_active


def test_bad_config_raises_config_error_in_library_mode(tmp_path: Path) -> None:
    """A library user gets ConfigError listing the problems (no sys.exit inside their service)."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"thresholds": {"memory_percent_warning": 150}}')
    with pytest.raises(ConfigError) as caught:
        ProductionMemoryMonitor(bad)
    assert "thresholds.memory_percent_warning" in str(caught.value)


async def test_stop_monitoring_is_idempotent_and_flushes(make_monitor) -> None:
    """stop_monitoring twice is harmless and every check before it is in the store."""
    monitor = make_monitor({"storage": {"flush_interval_seconds": 3600}})
    await monitor.start_monitoring()
    for _ in range(3):
        await monitor.check_now()
    await monitor.stop_monitoring()
    await monitor.stop_monitoring()
    monitor.store.open()
    try:
        assert len(monitor.store.history(0)) >= 3
    finally:
        monitor.store.close()


async def test_monitor_can_be_stopped_and_started_again(make_monitor) -> None:
    """stop_monitoring then start_monitoring resumes checks on the same store, and the usage watcher."""
    monitor = make_monitor()
    await monitor.start_monitoring()
    await monitor.check_now()
    await monitor.stop_monitoring()
    await monitor.start_monitoring()
    try:
        evaluation = await monitor.check_now()
        assert evaluation.sample.process is not None and monitor.monitoring_active
        watcher = monitor.kernel.usage_watcher
        assert watcher is not None
        reads = watcher.reads
        deadline = time.monotonic() + 5
        while watcher.reads == reads:  # the usage watcher runs again too
            assert time.monotonic() < deadline, "the usage watcher did not restart"
            await asyncio.sleep(0.05)
        timestamps = [point.timestamp for point in await monitor.history_since(0)]
        assert len(timestamps) >= 2 and len(set(timestamps)) == len(timestamps)
    finally:
        await monitor.stop_monitoring()
