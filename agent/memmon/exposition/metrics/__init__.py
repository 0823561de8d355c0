"""Prometheus metrics from a custom collector over the latest check (nothing is updated in the hot path).

Two families:

- The guide's names, kept exactly as a *compatibility family* because users' queries and dashboards use them
  (:mod:`.compat`).
- ``memmon_*``, following Prometheus conventions: base units (bytes, seconds, ratios 0-1), ``_total`` counters,
  a ``target`` label on every memory series.

One collector per source, each a function of what it reads: memmon's own telemetry (:mod:`.agent`), the actions
(:mod:`.actions`), the alerting side (:mod:`.alerting`), and per target, given a :class:`~.view.TargetView` and
nothing else: its verdict (:mod:`.levels`), its sample per source (:mod:`.samples`) and its prediction
(:mod:`.prediction`). :func:`target_families` runs the per-target collectors over every target and merges their
families into one per name.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import gzip_accepted
from prometheus_client.registry import Collector

from memmon.exposition.metrics.actions import action_family
from memmon.exposition.metrics.agent import agent_families, node_families
from memmon.exposition.metrics.alerting import alerting_families
from memmon.exposition.metrics.compat import compatibility_families
from memmon.exposition.metrics.families import merged
from memmon.exposition.metrics.levels import alert_families, level_families
from memmon.exposition.metrics.prediction import prediction_families
from memmon.exposition.metrics.samples import (
    SOURCES,
    cgroup_families,
    degraded_families,
    host_families,
    judged_families,
    pressure_families,
    process_families,
    shared_families,
)
from memmon.exposition.metrics.view import TargetView, target_views
from memmon.exposition.source import MonitorView
from memmon.model import Degradation

__all__ = ["PER_TARGET", "SOURCES", "MemmonCollector", "build_registry", "render", "target_families"]

PER_TARGET: tuple[Callable[[TargetView], Iterator[Metric]], ...] = (
    alert_families,
    level_families,
    judged_families,
    prediction_families,
    process_families,
    cgroup_families,
    host_families,
    pressure_families,
    degraded_families,
)
"""The per-target collectors, in the order their families appear."""


def target_families(targets: Sequence[TargetView], degraded: Iterable[Degradation] = ()) -> list[Metric]:
    """Every per-target family of every target, one family per name (a target adds its series to it), and with
    several targets the series they share, once (``degraded``: the monitor's degradations)."""
    own = (family for target in targets for collect in PER_TARGET for family in collect(target))
    return merged(itertools.chain(own, shared_families(targets, degraded)))


class MemmonCollector(Collector):
    """Yields both metric families from a monitor's latest evaluation and telemetry."""

    def __init__(self, monitor: MonitorView) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        monitor = self.monitor
        telemetry = monitor.telemetry
        targets = target_views(monitor)
        yield from compatibility_families(telemetry, targets[0] if targets else None)
        yield from agent_families(telemetry, monitor.started_at)
        yield from node_families(telemetry)
        yield action_family(telemetry.actions)
        yield from alerting_families(telemetry, monitor.alert_channels())
        yield from target_families(targets, monitor.degraded)


def build_registry(monitor: MonitorView) -> CollectorRegistry:
    """A private registry (never the global one: a library user may have their own metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MemmonCollector(monitor))
    return registry


def render(registry: CollectorRegistry, accept_encoding: str = "") -> tuple[bytes, dict[str, str]]:
    """The text exposition format of every metric and its headers; gzipped when ``accept_encoding`` (the request's
    ``Accept-Encoding``) names gzip, as prometheus_client's own servers decide (``gzip_accepted``)."""
    body = generate_latest(registry)
    # The body depends on Accept-Encoding, so caches must key on it (RFC 9110 section 12.5.5).
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    if gzip_accepted(accept_encoding):
        # zlib's default level: nearly all of level 9's gain for a fraction of its time.
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return body, headers
