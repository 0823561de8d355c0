"""SlackChannel: the incoming-webhook message shape, and Slack's answers mapped through JsonPoster."""

from __future__ import annotations

from typing import Any

import pytest

from memmon.alerting.channel import Delivery, DeliveryFailed
from memmon.alerting.slack import SlackChannel
from memmon.model import Level
from tests.alerting.receivers import Receiver, sample_alert

HOOK_PATH = "/services/T0123ABCD/B0456EFGH/s3cr3tT0k3nAbCdEfGhIjKl"


def fields_of(message: dict[str, Any]) -> dict[str, str]:
    """The attachment's section fields as {title: value}."""
    [attachment] = message["attachments"]
    section = next(block for block in attachment["blocks"] if "fields" in block)
    out = {}
    for field in section["fields"]:
        assert field["type"] == "mrkdwn"
        title, _, value = field["text"].partition("\n")
        out[title.strip("*")] = value
    return out


async def post(receiver: Receiver, delivery: Delivery) -> dict[str, Any]:
    channel = SlackChannel(receiver.url + HOOK_PATH)
    receipt = await channel.send(delivery)
    await channel.close()
    assert (receipt.status, receipt.detail) == (200, "ok")
    body = receiver.requests[-1].json
    assert isinstance(body, dict)
    return body


async def test_firing_message_has_text_fallback_colour_and_fields(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A critical alert posts text with 🔴, a #E01E5A attachment and target/usage/threshold/percent/host/pod fields."""
    monkeypatch.setenv("POD_NAME", "api-7d9f-abcde")
    body = await post(receiver, Delivery(sample_alert(severity=Level.CRITICAL), "k"))
    assert receiver.requests[-1].path == HOOK_PATH
    assert body["text"].startswith("🔴 ")
    assert "CRITICAL" in body["text"] and "process_memory on web-1" in body["text"]
    assert "Memory usage 2048.5 MiB exceeds critical threshold" in body["text"]
    [attachment] = body["attachments"]
    assert attachment["color"] == "#E01E5A"
    assert attachment["fallback"]
    fields = fields_of(body)
    assert fields["Target"] == "`pid:4242`"
    assert fields["Component"] == "process_memory"
    assert fields["Usage"] == "2048.5 MiB"
    assert fields["Threshold"] == "2048.0 MiB (critical)"
    assert fields["Percent"] == "85.2% of the host limit (4096.0 MiB)"
    assert fields["Host"] == "web-1"
    assert fields["Pod"] == "api-7d9f-abcde"
    assert "TEST" not in body["text"]


@pytest.mark.parametrize(
    ("level", "emoji", "colour"),
    [(Level.WARNING, "🟡", "#F2C744"), (Level.CRITICAL, "🔴", "#E01E5A"), (Level.EMERGENCY, "🚨", "#8B0000")],
)
def test_emoji_and_colour_per_level(level: Level, emoji: str, colour: str) -> None:
    """Each firing level has its emoji in the text and its colour on the attachment."""
    message = SlackChannel("http://127.0.0.1:9/x").message(Delivery(sample_alert(severity=level), "k"))
    assert message["text"].startswith(emoji + " ")
    assert level.label.upper() in message["text"]
    assert message["attachments"][0]["color"] == colour


def test_resolved_is_green_with_check_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolved alert is ✅ / #2EB67D, says RESOLVED and shows when it resolved."""
    monkeypatch.delenv("POD_NAME", raising=False)
    alert = sample_alert(severity=Level.EMERGENCY, state="resolved")
    message = SlackChannel("http://127.0.0.1:9/x").message(Delivery(alert, "k"))
    assert message["text"].startswith("✅ ")
    assert "RESOLVED emergency" in message["text"]
    assert message["attachments"][0]["color"] == "#2EB67D"
    fields = fields_of(message)
    assert "Resolved" in fields and "Pod" not in fields


def test_test_delivery_is_marked() -> None:
    """A delivery.test message says TEST in the text and in the context line."""
    message = SlackChannel("http://127.0.0.1:9/x").message(Delivery(sample_alert(), "k", test=True))
    assert "TEST" in message["text"]
    context = message["attachments"][0]["blocks"][-1]
    assert context["type"] == "context" and "TEST" in context["elements"][0]["text"]


def test_mrkdwn_control_characters_are_escaped() -> None:
    """<, > and & in alert text are escaped so Slack cannot read them as links or mentions."""
    alert = sample_alert(message="CRITICAL: <!channel> & <http://evil|click>", target="cgroup:/a<b>")
    message = SlackChannel("http://127.0.0.1:9/x").message(Delivery(alert, "k"))
    assert "<!channel>" not in message["text"] and "&lt;!channel&gt; &amp;" in message["text"]
    assert fields_of(message)["Target"] == "`cgroup:/a&lt;b&gt;`"


def test_percent_field_absent_when_unknown() -> None:
    """No percent in the metadata means no Percent field (and no crash)."""
    alert = sample_alert(metadata={"host": "h"})
    fields = fields_of(SlackChannel("http://127.0.0.1:9/x").message(Delivery(alert, "k")))
    assert "Percent" not in fields and fields["Host"] == "h"


async def test_slack_error_answers_map_to_the_contract(receiver: Receiver) -> None:
    """Slack's 400 invalid_payload / 404 no_service are final, 429 with Retry-After is retryable."""
    receiver.script = ["400 invalid_payload", "404 no_service", "429:30"]
    channel = SlackChannel(receiver.url + HOOK_PATH)
    outcomes = []
    for _ in range(3):
        with pytest.raises(DeliveryFailed) as caught:
            await channel.send(Delivery(sample_alert(), "k"))
        outcomes.append((caught.value.status, caught.value.retryable, caught.value.retry_after))
        assert "s3cr3t" not in caught.value.reason and HOOK_PATH not in caught.value.reason
    await channel.close()
    assert outcomes == [(400, False, None), (404, False, None), (429, True, 30.0)]


def test_repr_hides_the_webhook_path() -> None:
    """The channel's repr shows only scheme://host:port of the webhook URL."""
    assert (
        repr(SlackChannel("https://hooks.slack.com" + HOOK_PATH))
        == "SlackChannel('https://hooks.slack.com:443')"
    )
