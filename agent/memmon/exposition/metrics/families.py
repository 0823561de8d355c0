"""Builders of metric families shared by the collectors: counters and histograms over memmon's telemetry, the
families of one target's series, and the merge of several targets' families into one family per name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from memmon.telemetry import DurationHistogram, LabeledCounter

TARGET_LABEL = "target"


def histogram(name: str, doc: str, durations: DurationHistogram) -> HistogramMetricFamily:
    """A histogram family from a snapshot of ``durations`` (cumulative buckets and their sum)."""
    buckets, total, _count = durations.snapshot()
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


def counter(
    name: str,
    doc: str,
    counts: LabeledCounter,
    extra: Mapping[str, str] | None = None,
    expected: Iterable[tuple[str, ...]] = (),
) -> Metric:
    """A counter family; ``expected`` label tuples (and the unlabelled series) are exposed at 0 until counted.
    ``extra`` labels come first, with the same value on every series."""
    extra = extra or {}
    family = CounterMetricFamily(name, doc, labels=[*extra, *counts.label_names])
    items = counts.items(expected=[()] if not counts.label_names else expected)
    for labels, value in sorted(items):
        family.add_metric([*extra.values(), *labels], value)
    return family


def seen_by_known(counts: LabeledCounter, seconds: Iterable[str]) -> set[tuple[str, str]]:
    """Every first label already counted, paired with each of the known second labels."""
    known = tuple(seconds)
    return {(labels[0], second) for labels, _value in counts.items() for second in known}


class TargetSeries:
    """The families of one target's series: each gets the ``target`` label first, valued with the target's name.

    The one place that makes a series per target: a family built here carries ``target``, one built elsewhere
    does not.
    """

    def __init__(self, target: str, labels: Mapping[str, str] | None = None) -> None:
        """``labels`` (node mode: namespace, pod, container) follow ``target`` on every series of this target."""
        self.target = target
        self.extra: dict[str, str] = {TARGET_LABEL: target, **(labels or {})}

    def gauges(
        self, name: str, doc: str, labels: Sequence[str], series: Iterable[tuple[Sequence[str], float]]
    ) -> GaugeMetricFamily:
        """A gauge family with one series per ``(label values, value)`` (none at all is a valid family)."""
        family = GaugeMetricFamily(name, doc, labels=[*self.extra, *labels])
        for values, value in series:
            family.add_metric([*self.extra.values(), *values], value)
        return family

    def gauge(self, name: str, doc: str, value: float | None, **labels: str) -> Iterator[Metric]:
        """One gauge series; no family when ``value`` is None (a source that was not read)."""
        if value is not None:
            yield self.gauges(name, doc, list(labels), [(list(labels.values()), value)])

    def count(self, name: str, doc: str, value: float | None) -> Iterator[Metric]:
        """One counter series read from the kernel or the runtime; no family when ``value`` is None."""
        if value is not None:
            family = CounterMetricFamily(name, doc, labels=list(self.extra))
            family.add_metric(list(self.extra.values()), value)
            yield family

    def counter(
        self, name: str, doc: str, counts: LabeledCounter, expected: Iterable[tuple[str, ...]] = ()
    ) -> Metric:
        """:func:`counter` with the target's label in front."""
        return counter(name, doc, counts, self.extra, expected)


def merged(families: Iterable[Metric]) -> list[Metric]:
    """One family per name, in first-seen order, holding the series of every family of that name: several targets
    each build their own family of a name, and the text format allows a name's HELP and TYPE once."""
    by_name: dict[str, Metric] = {}
    for family in families:
        first = by_name.setdefault(family.name, family)
        if first is not family:
            first.samples.extend(family.samples)
    return list(by_name.values())
