"""A target's verdict: the alerts it fired and resolved, its overall and per-component level, the alerts firing
now."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from memmon.exposition.metrics.families import seen_by_known
from memmon.exposition.metrics.view import TargetView
from memmon.model import ALERT_LEVELS
from memmon.telemetry import ACTION_OUTCOMES


def alert_families(target: TargetView) -> Iterator[Metric]:
    """``memmon_alerts`` and ``memmon_alerts_resolved``: every severity of every judged component at 0 from the
    first check on, and whatever else was counted (the finding components such as ``memory_prediction``)."""
    series = target.series
    known = [(level.label, status.component) for level in ALERT_LEVELS for status in target.latest.components]
    yield series.counter("memmon_alerts", "Alerts fired.", target.alerts_fired, known)
    yield series.counter("memmon_alerts_resolved", "Alerts resolved.", target.alerts_resolved, known)
    if target.actions is not None:
        seen = seen_by_known(target.actions, ACTION_OUTCOMES)
        yield series.counter(
            "memmon_target_actions", "Actions run on this target, by outcome.", target.actions, seen
        )


def level_families(target: TargetView) -> Iterator[Metric]:
    """``memmon_memory_level``, ``memmon_component_level`` and ``memmon_active_alerts`` (each severity)."""
    series = target.series
    latest = target.latest
    yield from series.gauge(
        "memmon_memory_level", "Overall level: 0 ok, 1 warning, 2 critical, 3 emergency.", int(latest.level)
    )
    yield series.gauges(
        "memmon_component_level",
        "Level per component (0-3).",
        ["component"],
        [([status.component], int(status.level)) for status in latest.components],
    )
    firing = latest.active_alerts
    yield series.gauges(
        "memmon_active_alerts",
        "Alerts firing now.",
        ["severity"],
        [([level.label], sum(1 for a in firing if a.severity is level)) for level in ALERT_LEVELS],
    )
