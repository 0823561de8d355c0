"""What the per-target collectors read of one target, and where the monitor's targets are listed for them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from memmon.exposition.metrics.families import TargetSeries
from memmon.exposition.source import MonitorView
from memmon.model import Degradation, Evaluation, LimitPrediction
from memmon.telemetry import LabeledCounter


@dataclass(frozen=True, slots=True)
class TargetView:
    """One target's latest check and what was derived from it: everything a per-target collector may read (a
    collector never reaches into the monitor, so that one monitor can hand over several targets)."""

    latest: Evaluation
    prediction: LimitPrediction | None
    degraded: tuple[Degradation, ...]
    """The sources that failed for this target, and the agent-wide ones (store, kernel watches, channels)."""
    alerts_fired: LabeledCounter
    """Alerts fired, by ``(severity, component)``."""
    alerts_resolved: LabeledCounter
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels after ``target`` on its series (node mode: namespace, pod, container)."""
    actions: LabeledCounter | None = None
    """This target's actions by ``(action, outcome)``; None for a single target (``memmon_actions_total`` is it)."""
    shares_agent_series: bool = True
    """This target's series include what every target shares (host memory and swap, the store's and the alert
    channels' degradation): the one target of a single-target agent; with several, those appear once, apart."""

    @property
    def name(self) -> str:
        """The ``target`` label's value: the sample's target (``self``, ``pid:42``, ``cgroup:/app``...)."""
        return self.latest.sample.target

    @property
    def series(self) -> TargetSeries:
        """The builder of this target's families."""
        return TargetSeries(self.name, self.labels)


def target_views(monitor: MonitorView) -> tuple[TargetView, ...]:
    """The targets to expose, worst first: each target once it has been checked (a target forgotten by the agent
    is no longer listed, so its series leave /metrics)."""
    telemetry = monitor.telemetry
    watches = monitor.ordered_watches()
    single = len(watches) == 1
    # Grouped once per scrape: slicing the per-target counters target by target would be O(targets²).
    fired = {} if single else telemetry.target_alerts_fired.by_first_label()
    resolved = {} if single else telemetry.target_alerts_resolved.by_first_label()
    actions = {} if single else telemetry.target_actions.by_first_label()
    empty = LabeledCounter(telemetry.alerts_fired.label_names)
    views = []
    for watch in watches:
        latest = watch.latest
        if latest is None:
            continue
        name = latest.sample.target
        views.append(
            TargetView(
                latest=latest,
                prediction=watch.prediction,
                # One target: the agent-wide degradations too, as always; several: each its own.
                degraded=monitor.degraded if single else watch.degraded,
                alerts_fired=telemetry.alerts_fired if single else fired.get(name, empty),
                alerts_resolved=telemetry.alerts_resolved if single else resolved.get(name, empty),
                labels=watch.labels,
                actions=None if single else actions.get(name, LabeledCounter(telemetry.actions.label_names)),
                shares_agent_series=single,
            )
        )
    return tuple(views)
