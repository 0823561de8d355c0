"""The time-to-limit prediction travels as a frozen record and is serialised only at the edges, to the same JSON."""

from __future__ import annotations

import dataclasses

import pytest

from memmon.model import LimitPrediction
from tests.leaks.test_prediction_api import LinearLeakSampler

KEYS = [
    "seconds_to_limit",
    "seconds_to_critical",
    "slope_bytes_per_second",
    "confident",
    "accelerating",
    "r2",
    "points",
]
"""The ``prediction`` object's keys, in the order the API has always written them."""


async def test_prediction_is_a_frozen_record_shown_as_the_same_json_everywhere(start_agent) -> None:
    """``monitor.prediction`` is a frozen LimitPrediction; /health/memory and /health/leaks show it as the JSON object
    the API always had (its keys in order, rounded values), and the memory_prediction alert's metadata has the same
    keys (as of the check that fired it; the alert log sorts them)."""
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
    prediction = monitor.prediction
    assert isinstance(prediction, LimitPrediction)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prediction.seconds_to_limit = 0.0  # type: ignore[misc]
    _, memory = await agent.get("/health/memory")
    _, leaks = await agent.get("/health/leaks")
    _, alerts = await agent.get("/health/alerts?hours=1")
    (alert,) = [a for a in alerts["alerts"] if a["component"] == "memory_prediction"]
    assert list(memory["prediction"]) == list(leaks["prediction"]) == KEYS
    assert sorted(alert["metadata"]["prediction"]) == sorted(KEYS)  # the alert log stores metadata key-sorted
    assert memory["prediction"] == leaks["prediction"] == dataclasses.asdict(prediction)
    assert alert["metadata"]["prediction"]["confident"] is True  # the estimate of the check that fired it
    assert prediction.confident is True and prediction.points == 35
    assert prediction.seconds_to_limit == round(
        prediction.seconds_to_limit, 1
    )  # rounded to 0.1 s as reported
    assert prediction.r2 == round(prediction.r2, 3)


async def test_no_prediction_is_null_in_the_api(start_agent) -> None:
    """With predictive alerting off, the monitor holds no prediction and both endpoints say null."""
    agent = await start_agent()
    assert agent.monitor.prediction is None
    _, memory = await agent.get("/health/memory")
    _, leaks = await agent.get("/health/leaks")
    assert memory["prediction"] is None and leaks["prediction"] is None
