"""WebhookChannel and JsonPoster against a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

import memmon
from memmon.alerting.channel import Delivery, DeliveryFailed
from memmon.alerting.http import JsonPoster
from memmon.alerting.payload import alert_payload
from memmon.alerting.webhook import WebhookChannel
from memmon.kits.redaction import redact_url
from memmon.kits.retryafter import parse_retry_after
from memmon.model import Level
from tests.alerting.receivers import Receiver, free_port, sample_alert

KEY = "0123456789abcdef0123456789abcdef:firing"
SECRET_PATH = "/services/T0123ABCD/B0456EFGH/s3cr3tT0k3nAbCdEfGhIjKl"
SECRET_QUERY = "token=hunter2-very-secret"


async def send(url: str, *, limit: float = 5.0, key: str = KEY) -> object:
    channel = WebhookChannel(url, timeout=limit)
    try:
        return await channel.send(Delivery(sample_alert(), key))
    finally:
        await channel.close()


async def failure(url: str, *, limit: float = 5.0) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        await send(url, limit=limit)
    return caught.value


async def test_body_is_the_guide_payload_plus_idempotency_key(receiver: Receiver) -> None:
    """The POSTed JSON is exactly alert_payload(alert) plus a top-level idempotency_key."""
    alert = sample_alert(severity=Level.EMERGENCY)
    channel = WebhookChannel(receiver.url + "/alerts")
    receipt = await channel.send(Delivery(alert, KEY))
    await channel.close()
    assert (receipt.status, receipt.detail) == (200, "ok")
    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/alerts"
    assert request.json == {**alert_payload(alert), "idempotency_key": KEY}
    guide_fields = {"timestamp", "severity", "component", "memory_usage", "threshold", "message", "metadata"}
    assert guide_fields <= set(request.json)
    assert request.json["severity"] == "emergency" and request.json["metadata"]["percent"] == 85.2


async def test_headers_carry_key_content_type_and_user_agent(receiver: Receiver) -> None:
    """Idempotency-Key, Content-Type: application/json and User-Agent: memmon/<version> are sent."""
    await send(receiver.url + "/hook")
    headers = receiver.requests[0].headers
    assert headers["Idempotency-Key"] == KEY
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"memmon/{memmon.__version__}"


async def test_same_key_on_retry_lets_a_receiver_dedupe(receiver: Receiver) -> None:
    """Two attempts of one transition carry one key: a deduplicating receiver accepts it once."""
    await send(receiver.url)
    await send(receiver.url)
    assert len(receiver.requests) == 2
    assert (receiver.accepted, receiver.duplicates) == (1, 1)


async def test_500_is_retryable_with_status(receiver: Receiver) -> None:
    """HTTP 500 raises DeliveryFailed(retryable=True, status=500) quoting the answer."""
    receiver.script = ["500 database on fire"]
    failed = await failure(receiver.url)
    assert (failed.retryable, failed.status, failed.retry_after) == (True, 500, None)
    assert "HTTP 500" in failed.reason and "database on fire" in failed.reason


async def test_408_and_503_are_retryable(receiver: Receiver) -> None:
    """408 Request Timeout and 503 are retryable."""
    receiver.script = ["408", "503"]
    assert (await failure(receiver.url)).retryable
    assert (await failure(receiver.url)).retryable


async def test_429_retry_after_seconds(receiver: Receiver) -> None:
    """429 with Retry-After: 2 gives retryable, status 429, retry_after 2.0."""
    receiver.script = ["429:2"]
    failed = await failure(receiver.url)
    assert (failed.retryable, failed.status, failed.retry_after) == (True, 429, 2.0)


async def test_429_retry_after_http_date(receiver: Receiver) -> None:
    """429 with an HTTP-date Retry-After gives the seconds from now until that date."""
    receiver.script = [f"429:{formatdate(time.time() + 30, usegmt=True)}"]
    failed = await failure(receiver.url)
    assert failed.status == 429 and failed.retry_after is not None
    assert 27 <= failed.retry_after <= 31


async def test_429_without_usable_retry_after(receiver: Receiver) -> None:
    """429 without Retry-After, or with garbage in it, is retryable with retry_after None."""
    receiver.script = ["429 slow down", "429:soon-ish"]
    for _ in range(2):
        failed = await failure(receiver.url)
        assert (failed.retryable, failed.status, failed.retry_after) == (True, 429, None)


def test_parse_retry_after_forms() -> None:
    """Retry-After parsing: seconds, HTTP-date (past -> 0), absent/garbage -> None."""
    now = 1_700_000_000.0
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now=now) == pytest.approx(90, abs=1)
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now=now) == 0.0
    for garbage in (None, "", "soon", "nan", "inf", "Tue, 99 Foo 2024"):
        assert parse_retry_after(garbage, now=now) is None


async def test_400_is_final(receiver: Receiver) -> None:
    """HTTP 400 (and other 4xx) is not retryable."""
    receiver.script = ["400 invalid_payload", "404 no_service"]
    first, second = await failure(receiver.url), await failure(receiver.url)
    assert (first.retryable, first.status) == (False, 400) and "invalid_payload" in first.reason
    assert (second.retryable, second.status) == (False, 404)


async def test_redirect_is_not_followed(receiver: Receiver) -> None:
    """A 3xx answer is not followed (the payload must not wander elsewhere) and is final."""
    receiver.script = ["301 moved"]
    failed = await failure(receiver.url)
    assert (failed.retryable, failed.status) == (False, 301)
    assert len(receiver.requests) == 1


async def test_hang_past_timeout_is_retryable(receiver: Receiver) -> None:
    """A receiver slower than the timeout gives a retryable 'timed out after 0.3s' quickly."""
    receiver.script = ["hang:5"]
    started = time.monotonic()
    failed = await failure(receiver.url, limit=0.3)
    assert time.monotonic() - started < 2
    assert failed.retryable and failed.status is None
    assert "timed out after 0.3s" in failed.reason


async def test_connection_refused_is_retryable_and_up_again_works(receiver: Receiver) -> None:
    """A receiver that is down gives a retryable 'connection refused'; once up, delivery succeeds."""
    await receiver.down()
    failed = await failure(receiver.url)
    assert failed.retryable and "connection refused" in failed.reason
    await receiver.up()
    assert (await send(receiver.url)).status == 200  # type: ignore[attr-defined]


async def test_secret_parts_of_the_url_never_appear_in_reasons(receiver: Receiver) -> None:
    """Path, query and credentials of the URL are absent from every reason, even when the receiver echoes them."""
    url = f"http://user:pa55word@127.0.0.1:{receiver.port}{SECRET_PATH}?{SECRET_QUERY}"
    receiver.script = [f"404 no hook at {SECRET_PATH}?{SECRET_QUERY}", "500", "hang:5"]
    reasons = [
        (await failure(url)).reason,
        (await failure(url)).reason,
        (await failure(url, limit=0.2)).reason,
    ]
    await receiver.down()
    reasons.append((await failure(url)).reason)
    for reason in reasons:
        assert f"127.0.0.1:{receiver.port}" in reason
        for secret in ("s3cr3tT0k3n", "T0123ABCD", "B0456EFGH", "hunter2", "pa55word", "user:"):
            assert secret not in reason, reason


def test_redact_url_keeps_scheme_host_port_only() -> None:
    """redact_url drops user, password, path, query and fragment, and fills in the default port."""
    assert redact_url("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com:443"
    assert redact_url("http://u:p@127.0.0.1:8080/a/b?token=x#f") == "http://127.0.0.1:8080"
    assert redact_url("http://[::1]:9093/api") == "http://[::1]:9093"
    assert redact_url("not a url") == "<invalid url>"


async def test_poster_is_shared_and_reopens_after_close(receiver: Receiver) -> None:
    """One JsonPoster serves several channels; close() is idempotent and a later post opens a new session."""
    poster = JsonPoster()
    first = WebhookChannel(receiver.url + "/a", poster=poster)
    second = WebhookChannel(receiver.url + "/b", poster=poster)
    await first.send(Delivery(sample_alert(), "k1"))
    await first.close()  # not the owner: the shared session stays open
    await second.send(Delivery(sample_alert(), "k2"))
    await poster.close()
    await poster.close()
    receipt = await poster.post_json(receiver.url + "/c", {"x": 1}, timeout=5)
    await poster.close()
    assert receipt.status == 200
    assert [request.path for request in receiver.requests] == ["/a", "/b", "/c"]


async def test_unserialisable_metadata_is_sent_as_text(receiver: Receiver) -> None:
    """Metadata JSON cannot encode is sent as str() instead of failing the delivery."""
    alert = sample_alert(metadata={"when": time, "host": "web-1"})
    channel = WebhookChannel(receiver.url)
    await channel.send(Delivery(alert, KEY))
    await channel.close()
    assert "module 'time'" in receiver.requests[0].json["metadata"]["when"]


async def test_refused_port_never_opened() -> None:
    """A port nobody listens on gives a retryable failure naming host:port only."""
    port = free_port()
    failed = await failure(f"http://127.0.0.1:{port}/x/secretsegment123")
    assert failed.retryable and "connection refused" in failed.reason
    assert "secretsegment123" not in failed.reason
