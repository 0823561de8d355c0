"""EmailChannel against real aiosmtpd servers on 127.0.0.1: plain, STARTTLS, implicit TLS, AUTH, refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from memmon.alerting.channel import Delivery, DeliveryFailed
from memmon.alerting.email import EmailChannel, message_id
from memmon.model import Level
from tests.alerting.receivers import SmtpServer, free_port, sample_alert

SmtpFactory = Callable[..., SmtpServer]
KEY = "0123456789abcdef0123456789abcdef:firing"
USER, PASSWORD = "alerts@example.org", "Pa55-w0rd-never-shown"


def channel_for(server: SmtpServer, **kwargs: Any) -> EmailChannel:
    options: dict[str, Any] = {"host": server.host, "port": server.port, "timeout": 5.0}
    if server.mode == "plain":
        options["security"] = "none"
    else:
        options["security"] = server.mode
        options["ca_file"] = str(server.cert_file)
    options.update(kwargs)
    recipients = options.pop("recipients", ["oncall@example.org"])
    return EmailChannel(recipients, **options)


async def test_plain_delivery_builds_text_and_html_parts(smtp_server: SmtpFactory) -> None:
    """A plain SMTP send delivers one mail with subject, text and HTML parts, and the key headers."""
    server = smtp_server(mode="plain")
    channel = channel_for(server, from_address="memmon@web-1.example.org")
    receipt = await channel.send(Delivery(sample_alert(), KEY))
    assert (receipt.status, receipt.detail) == (250, "accepted for 1 recipients")
    [mail] = server.messages
    assert mail["Subject"] == "[memmon] CRITICAL: process_memory on web-1"
    assert mail["From"] == "memmon@web-1.example.org" and mail["To"] == "oncall@example.org"
    assert mail["Message-ID"] == message_id(KEY)
    assert mail["X-Memmon-Idempotency-Key"] == KEY
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    rich = mail.get_body(("html",))
    assert text is not None and rich is not None
    assert "CRITICAL: Memory usage 2048.5 MiB exceeds critical threshold" in text.get_content()
    assert "pid:4242" in text.get_content() and "85.2%" in text.get_content()
    assert "<table>" in rich.get_content() and "web-1" in rich.get_content()
    assert server.handler.envelopes == [("memmon@web-1.example.org", ["oncall@example.org"])]


def test_message_id_is_stable_and_valid() -> None:
    """Message-ID derives from the idempotency key: equal keys give equal ids, distinct keys distinct ids."""
    assert message_id(KEY) == message_id(KEY)
    assert message_id(KEY) != message_id(KEY.replace("firing", "resolved"))
    assert message_id("plain-token") == "<plain-token@memmon>"
    assert ":" not in message_id(KEY) and message_id(KEY).startswith("<0123456789abcdef")


def test_html_part_escapes_everything() -> None:
    """Alert text with HTML in it is escaped in the HTML part."""
    alert = sample_alert(message="CRITICAL: <script>alert(1)</script>", target="cgroup:/a&b")
    channel = EmailChannel(["a@example.org"], host="127.0.0.1", port=25, security="none")
    rich = channel.build_message(Delivery(alert, KEY)).get_body(("html",))
    assert rich is not None
    content = rich.get_content()
    assert "<script>" not in content and "&lt;script&gt;" in content and "cgroup:/a&amp;b" in content


def test_subjects_for_resolved_and_test() -> None:
    """Resolved and test deliveries say so in the subject; a test mail has X-Memmon-Test."""
    channel = EmailChannel(["a@example.org"], host="127.0.0.1", port=25, security="none")
    resolved = Delivery(sample_alert(severity=Level.EMERGENCY, state="resolved"), KEY)
    assert channel.subject(resolved) == "[memmon] RESOLVED emergency: process_memory on web-1"
    test = channel.build_message(Delivery(sample_alert(severity=Level.WARNING), KEY, test=True))
    assert test["Subject"] == "[memmon] TEST WARNING: process_memory on web-1"
    assert test["X-Memmon-Test"] == "yes"


async def test_starttls_with_the_self_signed_ca(smtp_server: SmtpFactory) -> None:
    """STARTTLS verifies the server against ca_file and delivers."""
    server = smtp_server(mode="starttls")
    receipt = await channel_for(server).send(Delivery(sample_alert(), KEY))
    assert receipt.status == 250 and len(server.messages) == 1


async def test_starttls_with_an_untrusted_cert_is_final(smtp_server: SmtpFactory) -> None:
    """Without the CA the certificate fails verification: a final, clearly named failure."""
    server = smtp_server(mode="starttls")
    with pytest.raises(DeliveryFailed) as caught:
        await channel_for(server, ca_file=None).send(Delivery(sample_alert(), KEY))
    assert not caught.value.retryable and "certificate verification failed" in caught.value.reason
    assert server.messages == []


async def test_starttls_unverified_when_asked(smtp_server: SmtpFactory) -> None:
    """verify_tls=False accepts the self-signed certificate without a CA file."""
    server = smtp_server(mode="starttls")
    receipt = await channel_for(server, ca_file=None, verify_tls=False).send(Delivery(sample_alert(), KEY))
    assert receipt.status == 250


async def test_implicit_tls(smtp_server: SmtpFactory) -> None:
    """security='ssl' talks TLS from the first byte (SMTP_SSL) and delivers."""
    server = smtp_server(mode="ssl")
    receipt = await channel_for(server).send(Delivery(sample_alert(), KEY))
    assert receipt.status == 250 and len(server.messages) == 1


async def test_auth_success_over_starttls(smtp_server: SmtpFactory) -> None:
    """With a username the channel logs in after STARTTLS, and the mail is accepted."""
    server = smtp_server(mode="starttls", auth=(USER, PASSWORD))
    channel = channel_for(server, username=USER, password=PASSWORD)
    assert (await channel.send(Delivery(sample_alert(), KEY))).status == 250
    assert [ok for _, ok in server.auth_attempts] == [True]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_auth_success_on_plain_connection(smtp_server: SmtpFactory) -> None:
    """AUTH also works on an unencrypted connection when the server allows it."""
    server = smtp_server(mode="plain", auth=(USER, PASSWORD))
    channel = channel_for(server, username=USER, password=PASSWORD)
    assert (await channel.send(Delivery(sample_alert(), KEY))).status == 250


async def test_auth_failure_is_final_and_hides_the_password(smtp_server: SmtpFactory) -> None:
    """A wrong password is a final 535 failure whose reason never contains the password."""
    server = smtp_server(mode="starttls", auth=(USER, PASSWORD))
    wrong = "Wr0ng-" + PASSWORD
    channel = channel_for(server, username=USER, password=wrong)
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(Delivery(sample_alert(), KEY))
    failed = caught.value
    assert (failed.retryable, failed.status) == (False, 535)
    assert "authentication failed" in failed.reason
    assert wrong not in failed.reason and PASSWORD not in failed.reason
    assert wrong not in repr(channel) and server.messages == []


async def test_auth_required_but_not_configured_is_final(smtp_server: SmtpFactory) -> None:
    """A server requiring AUTH refuses MAIL from an unauthenticated client with a 5xx: final."""
    server = smtp_server(mode="starttls", auth=(USER, PASSWORD))
    with pytest.raises(DeliveryFailed) as caught:
        await channel_for(server).send(Delivery(sample_alert(), KEY))
    assert not caught.value.retryable and caught.value.status == 530


async def test_refused_recipient_is_final(smtp_server: SmtpFactory) -> None:
    """Every recipient refused with 550 is a final failure naming the refusal."""
    server = smtp_server(mode="plain", refuse=["ghost@example.org"])
    with pytest.raises(DeliveryFailed) as caught:
        await channel_for(server, recipients=["ghost@example.org"]).send(Delivery(sample_alert(), KEY))
    assert (caught.value.retryable, caught.value.status) == (False, 550)
    assert "no such user" in caught.value.reason and server.messages == []


async def test_partly_refused_recipients_still_deliver(smtp_server: SmtpFactory) -> None:
    """One refused recipient among two: delivered to the other, and the receipt says who was refused."""
    server = smtp_server(mode="plain", refuse=["ghost@example.org"])
    channel = channel_for(server, recipients=["oncall@example.org", "ghost@example.org"])
    receipt = await channel.send(Delivery(sample_alert(), KEY))
    assert receipt.status == 250
    assert receipt.detail.startswith("accepted for 1 recipients; refused: ghost@example.org (550")
    assert server.handler.envelopes[0][1] == ["oncall@example.org"]


async def test_server_down_is_retryable() -> None:
    """Nobody listening on the port: a retryable 'connection refused'."""
    channel = EmailChannel(
        ["a@example.org"],
        host="127.0.0.1",
        port=free_port(),
        security="none",
        password=PASSWORD,
        username=USER,
    )
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(Delivery(sample_alert(), KEY))
    assert caught.value.retryable and "connection refused" in caught.value.reason
    assert PASSWORD not in caught.value.reason


async def test_starttls_against_a_server_without_it_is_final(smtp_server: SmtpFactory) -> None:
    """security='starttls' against a server that does not offer STARTTLS is a final configuration error."""
    server = smtp_server(mode="plain")
    with pytest.raises(DeliveryFailed) as caught:
        await channel_for(server, security="starttls").send(Delivery(sample_alert(), KEY))
    assert not caught.value.retryable and "STARTTLS" in caught.value.reason.upper()


def test_four_xx_and_five_xx_classification() -> None:
    """4xx SMTP replies are retryable (greylisting, busy), 5xx final; both for recipients and for data."""
    import smtplib

    channel = EmailChannel(["a@example.org"], host="127.0.0.1", port=25, security="none")
    greylisted = smtplib.SMTPRecipientsRefused({"a@example.org": (451, b"4.7.1 greylisted, try later")})
    assert channel._failure(greylisted).retryable
    assert channel._failure(smtplib.SMTPDataError(452, b"insufficient storage")).retryable
    assert not channel._failure(smtplib.SMTPDataError(554, b"spam")).retryable
    assert not channel._failure(smtplib.SMTPSenderRefused(553, b"bad sender", "x@y")).retryable
    assert channel._failure(smtplib.SMTPServerDisconnected("gone")).retryable
    assert channel._failure(TimeoutError()).reason.endswith("timed out after 10s")


def test_rejects_bad_configuration() -> None:
    """No recipients or an unknown security mode is a ValueError at construction."""
    with pytest.raises(ValueError, match="recipient"):
        EmailChannel([], host="127.0.0.1", port=25)
    with pytest.raises(ValueError, match="security"):
        EmailChannel(["a@example.org"], host="127.0.0.1", port=25, security="tls")  # type: ignore[arg-type]
