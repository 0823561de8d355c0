"""The actions memmon ran (gc, cache clearing, signals, restarts...), by outcome."""

from __future__ import annotations

from prometheus_client.core import Metric

from memmon.exposition.metrics.families import counter, seen_by_known
from memmon.telemetry import ACTION_OUTCOMES, LabeledCounter


def action_family(actions: LabeledCounter) -> Metric:
    """``memmon_actions_total{action, outcome}``. Which actions a configuration runs is decided inside the action
    runner, so an action's series start at 0 (every known outcome) from its first run on."""
    seen = seen_by_known(actions, ACTION_OUTCOMES)
    return counter("memmon_actions", "Actions run, by outcome.", actions, expected=seen)
