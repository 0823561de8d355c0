"""Redirect answers to an alert POST, against real aiohttp receivers on 127.0.0.1 (RFC 9110 §15.4)."""

from __future__ import annotations

import base64

import pytest

from memmon.alerting.alertmanager import AlertmanagerChannel
from memmon.alerting.channel import Delivery, DeliveryFailed
from memmon.alerting.webhook import WebhookChannel
from memmon.kits.redaction import Redactor
from memmon.kits.redirects import RedirectRefused, next_hop
from tests.alerting.receivers import Answer, Receiver, sample_alert
from tests.waiting import wait_until

KEY = "0123456789abcdef0123456789abcdef:firing"


def moved(status: int, location: str) -> Answer:
    """A redirect answer to ``location``."""
    return Answer(status=status, body="moved", headers={"Location": location})


async def deliver(url: str) -> object:
    channel = WebhookChannel(url, timeout=5)
    try:
        return await channel.send(Delivery(sample_alert(), KEY))
    finally:
        await channel.close()


@pytest.mark.parametrize("status", [307, 308])
async def test_307_and_308_resend_the_same_post_to_the_location(receiver: Receiver, status: int) -> None:
    """A 307/308 is followed with the same method, body and Idempotency-Key, and the delivery is accepted."""
    receiver.script = [moved(status, "/moved?x=1")]
    receipt = await deliver(receiver.url + "/hook")
    assert receipt.status == 200  # type: ignore[attr-defined]
    first, second = receiver.requests
    assert (second.method, second.path, second.query) == ("POST", "/moved", {"x": "1"})
    assert second.body == first.body and second.headers["Idempotency-Key"] == KEY


async def test_credentials_go_to_the_same_origin_only(receiver: Receiver) -> None:
    """Basic credentials of the URL follow a same-origin redirect, never one to another host:port."""
    async with Receiver() as other:
        receiver.script = [moved(307, "/api/v2/alerts-moved"), moved(308, other.url + "/elsewhere")]
        channel = AlertmanagerChannel(
            f"http://am:s3cret-pw@127.0.0.1:{receiver.port}", instance="i", timeout=5
        )
        try:
            await channel.send(Delivery(sample_alert(), KEY))
        finally:
            await channel.close()
        basic = "Basic " + base64.b64encode(b"am:s3cret-pw").decode()
        assert [r.headers.get("Authorization") for r in receiver.requests] == [basic, basic]
        [elsewhere] = other.requests
        assert elsewhere.path == "/elsewhere" and "Authorization" not in elsewhere.headers
        assert elsewhere.json == receiver.requests[0].json


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_301_302_303_are_a_final_error_naming_the_location(receiver: Receiver, status: int) -> None:
    """301/302/303 are not followed (a POST could become a GET): a final error that names the new URL."""
    receiver.script = [moved(status, "/new-hook")]
    with pytest.raises(DeliveryFailed) as caught:
        await deliver(receiver.url + "/hook")
    failure = caught.value
    assert not failure.retryable and failure.status == status
    assert f"HTTP {status}" in failure.reason and "/new-hook" in failure.reason
    assert "configuration" in failure.reason
    assert len(receiver.requests) == 1


async def test_a_redirect_loop_ends_after_five_hops(receiver: Receiver) -> None:
    """A receiver redirecting to itself forever gets 1 + 5 POSTs, then a final 'more than 5 redirects'."""
    receiver.default = moved(307, "/again")
    with pytest.raises(DeliveryFailed) as caught:
        await deliver(receiver.url + "/hook")
    assert not caught.value.retryable and "more than 5 redirects" in caught.value.reason
    assert len(receiver.requests) == 6


def test_https_to_http_and_odd_schemes_are_not_followed() -> None:
    """A Location downgrading https to http, or to a non-http scheme, is a final error; none is followed."""
    redact = Redactor()
    for current, location in (("https://h:443/a", "http://h/b"), ("http://h/a", "ftp://h/b")):
        with pytest.raises(RedirectRefused) as caught:
            next_hop(current, 307, location, {}, where="x", hops=0, redact=redact)
        assert not caught.value.retryable
    url, headers = next_hop("http://h/a", 308, "https://other/b", {"Authorization": "t", "X": "1"}, where="x",
                            hops=0, redact=redact)  # fmt: skip
    assert (url, headers) == ("https://other/b", {"X": "1"})


async def test_agent_delivers_through_a_307_and_shows_a_rejecting_channel_failing(
    start_agent, receiver: Receiver
) -> None:
    """A webhook answering 307 gets the alert at the Location; one answering 301 shows the channel failing
    (not ok) with the Location in last_error until a delivery succeeds."""
    receiver.script = [moved(307, "/moved")]
    agent = await start_agent(
        {
            "thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 100_000, "memory_emergency_mb": 200_000},
            "alerting": {"webhook_url": receiver.url + "/hook",
                         "delivery": {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2}},
        }
    )  # fmt: skip
    await wait_until(lambda: receiver.accepted == 1)
    assert [r.path for r in receiver.requests] == ["/hook", "/moved"]
    await wait_until(lambda: agent.monitor.alert_channels()["webhook"].pending == 0)
    assert agent.monitor.alert_channels()["webhook"].state == "ok"

    receiver.default = moved(301, "/new-hook")
    status, answer = await agent.post("/health/actions/test-alert?channel=webhook")
    assert status == 502 and "/new-hook" in answer["reason"] and answer["retryable"] is False
    dispatcher = agent.monitor.dispatcher
    dispatcher.submit([sample_alert(alert_id="b" * 32, target="pid:7")])
    await wait_until(lambda: agent.monitor.alert_channels()["webhook"].state == "failing")
    _, health = await agent.get("/health")
    channel = health["alert_channels"]["webhook"]
    assert channel["state"] == "failing" and "HTTP 301" in channel["last_error"]
    assert "alerting.webhook" in health["degraded"]

    receiver.default = Answer()
    dispatcher.submit([sample_alert(alert_id="c" * 32, target="pid:8")])  # another fingerprint: no rate limit
    await wait_until(lambda: agent.monitor.alert_channels()["webhook"].state == "ok")
