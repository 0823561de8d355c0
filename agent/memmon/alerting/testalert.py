"""Test alerts: one synthetic alert sent straight through one channel, answering with the receiver's reply.

What the guide's troubleshooting section does by hand with curl, for every channel: ``memmon test-alert
--channel slack`` and ``POST /health/actions/test-alert``. Not spooled and not rate-limited: the point is to see
the receiver's answer now.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping

from memmon.alerting.channel import Channel, Delivery, DeliveryFailed, Receipt
from memmon.alerting.log import LogChannel
from memmon.alerting.redaction import send_redacted
from memmon.alerting.routing import build_channels
from memmon.config.alerting import AlertingSettings
from memmon.evaluation.evaluator import fingerprint
from memmon.model import Alert, Level, frozen_mapping


def make_test_alert(
    target: str, severity: Level = Level.WARNING, *, clock: Callable[[], float] = time.time
) -> Alert:
    """A firing alert of component ``test`` that says plainly that it is a test."""
    now = clock()
    return Alert(
        id=f"test-{uuid.uuid4().hex}",
        fingerprint=fingerprint("test", target, severity),
        severity=severity,
        component="test",
        target=target,
        state="firing",
        started_at=now,
        resolved_at=None,
        memory_usage=0.0,
        threshold=0.0,
        message=f"{severity.label.upper()}: memmon test alert from {socket.gethostname()} (no action needed)",
        metadata=frozen_mapping({"test": True, "host": socket.gethostname()}),
    )


def not_configured(name: str, channels: Mapping[str, Channel]) -> str:
    """The message for a channel name that is not configured."""
    return f"channel {name!r} is not configured (configured: {', '.join(['log', *channels])})"


async def send_test_alert(channel: Channel, alert: Alert, within: float) -> Receipt:
    """One attempt through ``channel``; ``DeliveryFailed`` (or ``TimeoutError``) when not accepted. Reasons and
    the receipt's detail are scrubbed of credentials (:mod:`memmon.alerting.redaction`)."""
    async with asyncio.timeout(within):
        return await send_redacted(channel, Delivery(alert, f"{alert.id}:test", test=True))


async def run_test_alert(alerting: AlertingSettings, name: str, severity: str) -> int:
    """The ``memmon test-alert`` command: prints the receiver's answer; returns the exit code."""
    channels = build_channels(alerting)
    channel: Channel | None = LogChannel() if name == "log" else channels.get(name)
    if channel is None:
        print(f"memmon: {not_configured(name, channels)}", file=sys.stderr)
        return 2
    alert = make_test_alert("test", Level.parse(severity))
    try:
        receipt = await send_test_alert(channel, alert, alerting.delivery.timeout_seconds + 5)
    except DeliveryFailed as exc:
        retry = "a retry may succeed" if exc.retryable else "a retry will not help"
        print(f"{name}: not accepted: {exc.reason} ({retry})")
        return 1
    except TimeoutError:
        print(f"{name}: not accepted: no answer in time")
        return 1
    finally:
        for each in channels.values():
            await each.close()
    status = "" if receipt.status is None else f"{receipt.status} "
    print(f"{name}: accepted: {status}{receipt.detail}".rstrip())
    return 0
