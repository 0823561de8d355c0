"""Predictive alerting's estimate of a target's time to its limit (leak detection's count is in the guide's
``memory_leaks_detected``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from memmon.exposition.metrics.view import TargetView


def prediction_families(target: TargetView) -> Iterator[Metric]:
    """``memmon_predicted_seconds_to_limit``: only while predictive alerting has an estimate and the target grows
    (``seconds_to_limit`` set), whether or not the estimate is confident."""
    if target.prediction is not None:
        yield from target.series.gauge(
            "memmon_predicted_seconds_to_limit",
            "Seconds until the effective limit at the current trend (predictive alerting).",
            target.prediction.seconds_to_limit,
        )
