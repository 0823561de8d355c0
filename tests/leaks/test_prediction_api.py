"""Predictive alerting through the running monitor: the estimate in /health/memory, the metric, the alert."""

from __future__ import annotations

import re

from memmon.model import MemorySample
from tests.samples import process_sample


class LinearLeakSampler:
    """The target grows 10 MB per (simulated) second from 300 MB inside a 1000 MB limit."""

    process = None
    cgroup = None
    target_label = "pid:42"

    def __init__(self) -> None:
        self.seconds = 0

    def sample(self) -> MemorySample:
        self.seconds += 1
        return process_sample(300 + 10 * self.seconds, at=1_000_000.0 + self.seconds, cgroup_limit_mb=1000)


async def test_linear_leak_is_predicted_within_20_percent(start_agent) -> None:
    """After 35 s of a 10 MB/s leak at 650 MB of 1000, the predicted time to the limit is within 20 % of the true
    35 s, exported as memmon_predicted_seconds_to_limit, and a memory_prediction alert says the estimate."""
    sampler = LinearLeakSampler()
    agent = await start_agent(
        {"experimental": {"predictive_alerting": True, "prediction_window": 60, "trend_threshold": 0.05}},
        first_check=False,
        sampler=sampler,
    )
    monitor = agent.monitor
    await monitor.start_monitoring()
    monitor._loop.stop()
    while sampler.seconds < 35:
        await monitor.check_now()
    _, memory = await agent.get("/health/memory")
    prediction = memory["prediction"]
    true_seconds = (1000 - (300 + 10 * sampler.seconds)) / 10
    assert prediction["confident"] is True
    assert abs(prediction["seconds_to_limit"] - true_seconds) <= 0.2 * true_seconds, (
        prediction,
        true_seconds,
    )
    _, metrics = await agent.get("/metrics")
    value = float(re.search(r'memmon_predicted_seconds_to_limit\{target="pid:42"\} (\S+)', metrics).group(1))
    assert abs(value - true_seconds) <= 0.2 * true_seconds
    _, alerts = await agent.get("/health/alerts?hours=1")
    (alert,) = [a for a in alerts["alerts"] if a["component"] == "memory_prediction"]
    assert alert["state"] == "firing"
    assert re.search(r"at this rate the limit \(1000 MB\) is reached in ~\d+ s", alert["message"]), alert[
        "message"
    ]
