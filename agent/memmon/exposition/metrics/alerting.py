"""The alerting side: custom handler failures, deliveries per channel and outcome, and each channel's spool and
state."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

from memmon.alerting.channelhealth import ChannelReport
from memmon.exposition.metrics.families import counter
from memmon.telemetry import DELIVERY_OUTCOMES, REPUSH_OUTCOMES, Telemetry


def alerting_families(telemetry: Telemetry, channels: Mapping[str, ChannelReport]) -> Iterator[Metric]:
    """``memmon_alert_handler_errors``, ``memmon_alert_deliveries`` (every configured channel's known outcomes at 0
    from the start), ``memmon_alert_spool_pending`` and ``memmon_alert_channel_degraded`` per channel."""
    yield counter("memmon_alert_handler_errors", "Custom alert handler failures.", telemetry.handler_errors)
    deliveries = {(name, outcome) for name in channels for outcome in DELIVERY_OUTCOMES}
    deliveries.add(("log", "delivered"))  # the log channel cannot fail
    if "alertmanager" in channels:
        deliveries.update(("alertmanager", outcome) for outcome in REPUSH_OUTCOMES)
    yield counter(
        "memmon_alert_deliveries",
        "Alert deliveries by channel and outcome.",
        telemetry.deliveries,
        expected=deliveries,
    )
    pending = GaugeMetricFamily("memmon_alert_spool_pending", "Deliveries waiting.", labels=["channel"])
    degraded = GaugeMetricFamily(
        "memmon_alert_channel_degraded", "1 while a channel keeps failing.", labels=["channel"]
    )
    for name, report in sorted(channels.items()):
        pending.add_metric([name], report.pending)
        degraded.add_metric([name], 1 if report.degraded else 0)
    yield pending
    yield degraded
