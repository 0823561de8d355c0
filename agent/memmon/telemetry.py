"""memmon's own counters: what every stage counts about itself, read by the metrics collector.

Plain objects instead of prometheus_client metrics so that the stages stay free of the exposition library and
several monitors (tests, a library embedded twice) never collide in a global registry.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable

LabelValues = tuple[str, ...]

CHECK_DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Seconds; a full check is aimed at well under 1 ms, so the fine buckets are at the low end."""

# The label values known before anything happens. The metrics collector exposes a 0 series for each of them, because
# a series that appears only on its first increment reads as "No data" on a dashboard, and rate() and increase()
# never see that first increment (Prometheus docs, instrumentation practices: "Avoid missing metrics"). Add a value
# here when the code starts counting a new one (tests/exposition/test_metrics_scrape.py checks the literals used).
DELIVERY_OUTCOMES: tuple[str, ...] = ("delivered", "failed", "rejected", "dropped", "spool_error")
"""``deliveries`` outcomes of every spooled channel: failed is retried later; rejected, dropped, spool_error are
lost."""
REPUSH_OUTCOMES: tuple[str, ...] = ("repushed", "repush_failed")
"""``deliveries`` outcomes of the Alertmanager channel's periodic re-push of firing alerts."""
ACTION_OUTCOMES: tuple[str, ...] = ("success", "failure", "dry_run", "skipped", "oom_killed", "rate_limited")
"""``actions`` outcomes (``memmon.actions.runner.action_outcome`` plus the manual gc's rate limit)."""
MEMORY_EVENT_KINDS: tuple[str, ...] = ("usage", "oom", "pressure", "memory.events", "psi")
"""``memory_events`` kinds: the first word of the reasons the kernel watchers give (``memmon.sampling.events``,
``memmon.sampling.usage_watch``)."""
STORE_OPERATIONS: tuple[str, ...] = ("samples", "alerts", "prune", "close", "dropped_samples")
"""``store_errors`` operations of the recorder."""


class LabeledCounter:
    """A monotonically increasing count per label tuple; safe to bump from any thread."""

    def __init__(self, label_names: Iterable[str]) -> None:
        self.label_names: tuple[str, ...] = tuple(label_names)
        self._counts: dict[LabelValues, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels`` (one value per label name)."""
        if len(labels) != len(self.label_names):
            raise ValueError(f"expected labels {self.label_names}, got {labels}")
        if amount < 0:
            raise ValueError("counters only go up")
        with self._lock:
            self._counts[labels] = self._counts.get(labels, 0.0) + amount

    def items(self, expected: Iterable[LabelValues] = ()) -> list[tuple[LabelValues, float]]:
        """A consistent copy of every series, plus a 0 for each ``expected`` label tuple never bumped."""
        with self._lock:
            counts = dict(self._counts)
        for labels in expected:
            counts.setdefault(labels, 0.0)
        return list(counts.items())

    def value(self, *labels: str) -> float:
        """The current count of one series (0 when never bumped)."""
        with self._lock:
            return self._counts.get(labels, 0.0)

    def by_first_label(self) -> dict[str, LabeledCounter]:
        """Copies of the series grouped by their first label, without it (each target's counts of a counter kept
        per target), in one pass."""
        parts: dict[str, LabeledCounter] = {}
        for labels, value in self.items():
            part = parts.get(labels[0])
            if part is None:
                part = parts[labels[0]] = LabeledCounter(self.label_names[1:])
            part._counts[labels[1:]] = value
        return parts

    def total(self) -> float:
        """Sum over every series."""
        with self._lock:
            return sum(self._counts.values())


class DurationHistogram:
    """Cumulative-bucket histogram of durations in seconds, in Prometheus' shape."""

    def __init__(self, buckets: Iterable[float] = CHECK_DURATION_BUCKETS) -> None:
        self.buckets: tuple[float, ...] = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        index = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[str, int]], float, int]:
        """(cumulative buckets as (le, count) including "+Inf", sum, count)."""
        with self._lock:
            counts = list(self._counts)
            total_sum = self._sum
        cumulative: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(repr, self.buckets), "+Inf"), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, total_sum, running


class Telemetry:
    """Every counter memmon keeps about itself; one instance per monitor."""

    def __init__(self) -> None:
        self.checks = LabeledCounter(())
        self.check_overruns = LabeledCounter(())
        self.check_failures = LabeledCounter(())
        self.check_duration = DurationHistogram()
        self.alerts_fired = LabeledCounter(("severity", "component"))
        """Firing alerts raised (every one, rate-limited or not)."""
        self.alerts_resolved = LabeledCounter(("severity", "component"))
        self.target_alerts_fired = LabeledCounter(("target", "severity", "component"))
        """``alerts_fired`` per target (the ``target`` label of ``memmon_alerts_total``)."""
        self.target_alerts_resolved = LabeledCounter(("target", "severity", "component"))
        self.alerts_notified = LabeledCounter(("severity",))
        """Firing alerts notified after rate limiting: the guide's ``memory_alerts_sent_total{severity}``."""
        self.deliveries = LabeledCounter(("channel", "outcome"))
        """Delivery attempts by outcome: delivered, failed (will retry), rejected, dropped, ..."""
        self.handler_errors = LabeledCounter(("handler",))
        self.actions = LabeledCounter(("action", "outcome"))
        self.target_actions = LabeledCounter(("target", "action", "outcome"))
        """``actions`` per target (``memmon_target_actions_total``)."""
        self.node_pods: dict[str, int] = {}
        """Node mode: pods by state (watched, excluded, unknown), as of the latest roster view."""
        self.kube_watch: dict[str, int] = {}
        """Node mode: the pod watch's counters (lists, watches, events, bookmarks, relists, failures, bytes)."""
        self.cleanup_operations = LabeledCounter(())
        self.leaks_detected = LabeledCounter(())
        self.store_errors = LabeledCounter(("operation",))
        self.memory_events = LabeledCounter(("kind",))
        """Kernel memory notifications received (usage thresholds, oom, pressure) that triggered a check."""
