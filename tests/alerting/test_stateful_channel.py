"""The dispatcher asks a channel whether it keeps alert state (the StatefulChannel protocol), never its name:
any such channel gets the silent resolutions and periodic re-pushes; Alertmanager is one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from memmon.alerting.alertmanager import AlertmanagerChannel
from memmon.alerting.channel import Delivery, Receipt, StatefulChannel
from memmon.alerting.channelworker import Backoff
from memmon.alerting.dispatcher import AlertDispatcher
from memmon.alerting.kinds import REPLACED_BY, tracks_state
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.spool import AlertSpool
from memmon.alerting.webhook import WebhookChannel
from memmon.model import Alert, Level
from memmon.telemetry import Telemetry
from tests.alerting.receivers import sample_alert
from tests.waiting import wait_until


class Recording:
    """A channel that records what it is sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Alert] = []

    async def send(self, delivery: Delivery) -> Receipt:
        self.sent.append(delivery.alert)
        return Receipt(200, "ok")

    async def close(self) -> None:
        return None


class StateKeeper(Recording):
    """A state-keeping receiver that is not Alertmanager (another name, its own class)."""

    repush_seconds = 0.05

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.repushed: list[Sequence[Alert]] = []

    async def repush(self, alerts: Sequence[Alert]) -> Receipt:
        self.repushed.append(list(alerts))
        return Receipt(200, f"{len(alerts)} re-pushed")


def test_stateful_channels_are_recognised_by_what_they_do() -> None:
    """Alertmanager and any channel with repush/repush_seconds keep state; the webhook and a plain one do not."""
    assert isinstance(AlertmanagerChannel("http://127.0.0.1:9093", instance="i"), StatefulChannel)
    assert tracks_state(StateKeeper("keeper"))
    assert not tracks_state(WebhookChannel("http://127.0.0.1:1/x"))
    assert not tracks_state(Recording("plain"))
    assert not tracks_state(None)


async def test_a_state_keeper_by_any_name_is_re_pushed_and_sees_silent_resolutions(tmp_path: Path) -> None:
    """A StatefulChannel named 'keeper' gets the firing alerts re-pushed every repush_seconds and the resolution
    of a replaced alert, which a plain channel is spared; before, only a channel named alertmanager was."""
    keeper, plain = StateKeeper("keeper"), Recording("plain")
    firing = sample_alert(severity=Level.CRITICAL)
    telemetry = Telemetry()
    dispatcher = AlertDispatcher(
        {"keeper": keeper, "plain": plain},
        {level: ("keeper", "plain") for level in (Level.WARNING, Level.CRITICAL, Level.EMERGENCY)},
        AlertSpool(tmp_path / "spool.db"),
        telemetry,
        limiter=NotificationLimiter(0.0),
        backoff=Backoff(0.05, 0.2),
        active_alerts=lambda: (firing,),
    )
    await dispatcher.start()
    try:
        await wait_until(lambda: len(keeper.repushed) >= 2)
        assert keeper.repushed[0] == [firing]
        assert telemetry.deliveries.value("keeper", "repushed") >= 2
        replaced = sample_alert(
            severity=Level.WARNING, state="resolved", alert_id="f" * 32, metadata={REPLACED_BY: "critical"}
        )
        dispatcher.submit([replaced])
        await wait_until(lambda: any(alert.id == replaced.id for alert in keeper.sent))
        assert all(alert.id != replaced.id for alert in plain.sent)
    finally:
        await dispatcher.close(0.1)
