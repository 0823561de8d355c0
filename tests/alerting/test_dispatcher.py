"""Delivery through the dispatcher against a real HTTP receiver on 127.0.0.1: retries, backoff, Retry-After,
timeouts, rejections, the spool written before the first attempt, routing and degraded channels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from memmon.alerting.channel import Channel
from memmon.alerting.channelworker import Backoff
from memmon.alerting.dispatcher import AlertDispatcher
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.spool import AlertSpool
from memmon.alerting.webhook import WebhookChannel
from memmon.model import Level
from memmon.telemetry import Telemetry
from tests.alerting.receivers import Receiver, sample_alert
from tests.waiting import wait_until

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY
Factory = Callable[..., AlertDispatcher]


@pytest.fixture
async def make_dispatcher(tmp_path: Path) -> AsyncIterator[Factory]:
    """Builds started dispatchers with fast backoff over the given channels; closes them after the test."""
    started: list[AlertDispatcher] = []

    async def build(channels: dict[str, Channel], **kwargs: Any) -> AlertDispatcher:
        routes = kwargs.pop("routes", {level: tuple(channels) for level in (W, C, E)})
        dispatcher = AlertDispatcher(
            channels,
            routes,
            AlertSpool(tmp_path / "spool.db"),
            kwargs.pop("telemetry", Telemetry()),
            limiter=NotificationLimiter(0.0),
            backoff=Backoff(0.05, 0.2),
            degraded_after=kwargs.pop("degraded_after", 3),
            attempt_timeout=kwargs.pop("attempt_timeout", 2.0),
            **kwargs,
        )
        await dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield build  # type: ignore[misc]
    for dispatcher in started:
        await dispatcher.close(0.1)


async def test_receiver_down_then_up_gets_each_alert_once(make_dispatcher, receiver: Receiver) -> None:
    """A receiver refusing connections for several attempts gets every alert exactly once when it comes back;
    the channel is degraded meanwhile and healthy after."""
    telemetry = Telemetry()
    dispatcher = await make_dispatcher({"webhook": WebhookChannel(receiver.url + "/hook", timeout=1)},
                                       telemetry=telemetry)  # fmt: skip
    await receiver.down()
    alerts = [sample_alert(alert_id=f"a{i}", severity=W) for i in range(3)]
    dispatcher.submit(alerts)
    await wait_until(lambda: telemetry.deliveries.value("webhook", "failed") >= 4)
    assert dispatcher.degraded()["webhook"].startswith(("4 failed", "5 failed", "6 failed"))
    assert dispatcher.report()["webhook"].pending == 3
    await receiver.up()
    await wait_until(lambda: receiver.accepted == 3)
    await wait_until(lambda: dispatcher.report()["webhook"].pending == 0)
    assert receiver.duplicates == 0
    assert dispatcher.degraded() == {}
    assert telemetry.deliveries.value("webhook", "delivered") == 3


@pytest.mark.parametrize(
    "script", [["500", "500", "200"], ["503", "200"], ["429:0", "200"]], ids=["500x2", "503", "429"]
)
async def test_server_errors_are_retried_until_accepted(make_dispatcher, receiver: Receiver, script) -> None:
    """5xx and 429 answers are retried; the alert is accepted exactly once."""
    receiver.script = list(script)
    dispatcher = await make_dispatcher({"webhook": WebhookChannel(receiver.url + "/hook", timeout=1)})
    dispatcher.submit([sample_alert(severity=C)])
    await wait_until(lambda: receiver.accepted == 1)
    await wait_until(lambda: dispatcher.report()["webhook"].pending == 0)
    assert len(receiver.requests) == len(script)


async def test_retry_after_is_honoured(make_dispatcher, receiver: Receiver) -> None:
    """After a 429 with Retry-After: 1 the next attempt waits at least that long (backoff alone is 0.05 s)."""
    receiver.script = ["429:1", "200"]
    dispatcher = await make_dispatcher({"webhook": WebhookChannel(receiver.url + "/hook", timeout=1)})
    dispatcher.submit([sample_alert()])
    await wait_until(lambda: receiver.accepted == 1)
    first, second = receiver.requests
    assert second.at - first.at >= 0.95


async def test_a_hanging_receiver_times_out_and_is_retried(make_dispatcher, receiver: Receiver) -> None:
    """An attempt hanging past the timeout is abandoned and retried; a deduplicating receiver accepts it once."""
    receiver.script = ["hang:1.5", "200"]
    dispatcher = await make_dispatcher({"webhook": WebhookChannel(receiver.url + "/hook", timeout=0.3)})
    dispatcher.submit([sample_alert()])
    await wait_until(lambda: len(receiver.requests) >= 2)
    await wait_until(lambda: dispatcher.report()["webhook"].pending == 0)
    assert receiver.accepted == 1
    keys = {request.headers["Idempotency-Key"] for request in receiver.requests}
    assert len(keys) == 1


async def test_permanent_rejection_is_dropped_and_counted(
    make_dispatcher, receiver: Receiver, caplog
) -> None:
    """A 400 answer is not retried: the entry leaves the spool, counted as rejected and logged."""
    receiver.script = ["400 invalid_payload"]
    telemetry = Telemetry()
    dispatcher = await make_dispatcher({"webhook": WebhookChannel(receiver.url + "/hook", timeout=1)},
                                       telemetry=telemetry)  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="memmon.delivery"):
        dispatcher.submit([sample_alert()])
        await wait_until(lambda: telemetry.deliveries.value("webhook", "rejected") == 1)
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1
    assert dispatcher.report()["webhook"].pending == 0
    assert "rejected alert" in caplog.text


async def test_spool_holds_the_alert_before_the_first_attempt(make_dispatcher, receiver: Receiver,
                                                              tmp_path: Path) -> None:  # fmt: skip
    """While the receiver is still answering the first attempt, the alert is already in the spool file."""
    receiver.script = ["hang:1", "200"]
    dispatcher = await make_dispatcher({"webhook": WebhookChannel(receiver.url + "/hook", timeout=5)})
    alert = sample_alert()
    dispatcher.submit([alert])
    await receiver.wait_for_requests(1)
    reader = AlertSpool(tmp_path / "spool.db")
    reader.open()
    try:
        assert [entry.alert.id for entry in reader.entries("webhook")] == [alert.id]
    finally:
        reader.close()
    await wait_until(lambda: dispatcher.report()["webhook"].pending == 0)


async def test_routes_and_send_resolved(make_dispatcher) -> None:
    """Each level goes to its routed channels only, and a channel with send_resolved off gets no resolutions."""
    async with Receiver() as slack, Receiver() as hook:
        channels = {
            "slack": WebhookChannel(slack.url + "/s", timeout=1),
            "webhook": WebhookChannel(hook.url + "/w", timeout=1),
        }
        dispatcher = await make_dispatcher(
            channels,
            routes={W: ("webhook",), C: ("slack", "webhook"), E: ("slack", "webhook")},
            send_resolved={"webhook": False},
        )
        warning = sample_alert(alert_id="w1", severity=W)
        critical = sample_alert(alert_id="c1", severity=C)
        critical_resolved = sample_alert(alert_id="c1", severity=C, state="resolved")
        dispatcher.submit([warning, critical, critical_resolved])
        await wait_until(lambda: slack.accepted == 2 and hook.accepted == 2)
        await asyncio.sleep(0.2)
        assert sorted(body["idempotency_key"] for body in slack.bodies) == ["c1:firing", "c1:resolved"]
        assert sorted(body["idempotency_key"] for body in hook.bodies) == ["c1:firing", "w1:firing"]
