"""AlertmanagerChannel against the real prometheus-alertmanager binary (and the payload shape on its own)."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from datetime import datetime
from typing import Any

import pytest

from memmon.alerting.alertmanager import ALERTNAME, AlertmanagerChannel
from memmon.alerting.channel import Delivery, DeliveryFailed, Receipt
from memmon.model import Level
from tests.alerting.conftest import get_json
from tests.alerting.receivers import Receiver, sample_alert

INSTANCE = "web-1:memmon"


def when(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp as Alertmanager writes it (nanoseconds cut to micro)."""
    head, _, rest = text.partition(".")
    if rest:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alerts_for(base: str, target: str, *, active_only: bool = True) -> list[dict[str, Any]]:
    """Alertmanager's alerts with label target=<target> (GET /api/v2/alerts?filter=...)."""
    query = urllib.parse.urlencode({"filter": f'target="{target}"', "active": str(active_only).lower()})
    result = get_json(f"{base}/api/v2/alerts?{query}")
    assert isinstance(result, list)
    return result


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def unique_target() -> str:
    return f"pid:{uuid.uuid4().hex[:8]}"


async def test_firing_alert_is_active_with_labels_and_annotations(alertmanager: str) -> None:
    """A pushed firing alert is listed active with memmon's labels, annotations and endsAt = now + 4 * repush."""
    target = unique_target()
    alert = sample_alert(target=target, severity=Level.CRITICAL)
    channel = AlertmanagerChannel(alertmanager + "/", instance=INSTANCE, repush_seconds=30)
    before = time.time()
    receipt = await channel.send(Delivery(alert, "key-firing"))
    await channel.close()
    assert (receipt.status, receipt.detail) == (200, "1 alert(s) accepted")
    await wait_until(lambda: len(alerts_for(alertmanager, target)) == 1)
    [listed] = alerts_for(alertmanager, target)
    assert listed["labels"] == {
        "alertname": ALERTNAME,
        "severity": "critical",
        "component": "process_memory",
        "target": target,
        "instance": INSTANCE,
    }
    annotations = listed["annotations"]
    assert annotations["summary"] == alert.message
    assert annotations["memory_usage_mb"] == "2048.5" and annotations["threshold_mb"] == "2048.0"
    assert annotations["percent"] == "85.2" and annotations["idempotency_key"] == "key-firing"
    assert "process_memory of " + target in annotations["description"]
    assert listed["status"]["state"] == "active"
    assert abs(when(listed["startsAt"]) - alert.started_at) < 0.01
    assert before + 120 - 2 <= when(listed["endsAt"]) <= time.time() + 120 + 2


async def test_resolved_push_ends_the_alert(alertmanager: str) -> None:
    """Pushing the resolution (endsAt = resolved_at) removes the alert from the active ones."""
    target = unique_target()
    firing = sample_alert(target=target, severity=Level.WARNING)
    channel = AlertmanagerChannel(alertmanager, instance=INSTANCE)
    await channel.send(Delivery(firing, "k1"))
    await wait_until(lambda: len(alerts_for(alertmanager, target)) == 1)
    resolved = sample_alert(
        target=target, severity=Level.WARNING, state="resolved", started_at=firing.started_at
    )
    await channel.send(Delivery(resolved, "k2"))
    await channel.close()
    await wait_until(lambda: alerts_for(alertmanager, target) == [])


async def test_repush_sends_several_alerts_in_one_request(alertmanager: str) -> None:
    """repush() posts every given alert in a single request; all are active afterwards."""
    target = unique_target()
    alerts = [
        sample_alert(target=target, severity=level, alert_id=f"id{level.value}")
        for level in (Level.WARNING, Level.CRITICAL, Level.EMERGENCY)
    ]
    channel = AlertmanagerChannel(alertmanager, instance=INSTANCE)
    receipt = await channel.repush(alerts)
    await channel.close()
    assert (receipt.status, receipt.detail) == (200, "3 alert(s) accepted")
    await wait_until(lambda: len(alerts_for(alertmanager, target)) == 3)
    severities = sorted(a["labels"]["severity"] for a in alerts_for(alertmanager, target))
    assert severities == ["critical", "emergency", "warning"]


async def test_repush_extends_ends_at_and_keeps_the_key(alertmanager: str) -> None:
    """A re-push moves endsAt forward and keeps the idempotency_key annotation of the firing delivery."""
    target = unique_target()
    alert = sample_alert(target=target)
    channel = AlertmanagerChannel(alertmanager, instance=INSTANCE, repush_seconds=1)
    await channel.send(Delivery(alert, "first-key"))
    await wait_until(lambda: len(alerts_for(alertmanager, target)) == 1)
    first_end = when(alerts_for(alertmanager, target)[0]["endsAt"])
    await asyncio.sleep(0.3)
    await channel.repush([alert])
    await channel.close()
    await wait_until(lambda: when(alerts_for(alertmanager, target)[0]["endsAt"]) > first_end)
    assert alerts_for(alertmanager, target)[0]["annotations"]["idempotency_key"] == "first-key"


async def test_invalid_alert_is_refused_with_400(alertmanager: str) -> None:
    """Alertmanager's 400 for an invalid alert (no labels at all) is a final failure quoting its answer."""
    channel = AlertmanagerChannel(alertmanager, instance=INSTANCE)
    channel.labels = lambda alert: {}  # type: ignore[method-assign]
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(Delivery(sample_alert(target=unique_target()), "k"))
    await channel.close()
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "label" in caught.value.reason


def test_postable_shape() -> None:
    """postable(): labels, string annotations, RFC 3339 times; resolved endsAt never before startsAt."""
    channel = AlertmanagerChannel(
        "http://127.0.0.1:9093", instance="i", repush_seconds=60, generator_url="http://127.0.0.1:8080/health"
    )
    now = 1_700_000_000.0
    firing = channel.postable(sample_alert(started_at=now - 10), idempotency_key="k", now=now)
    assert set(firing) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert firing["startsAt"] == "2023-11-14T22:13:10Z" and firing["endsAt"] == "2023-11-14T22:17:20Z"
    assert all(isinstance(value, str) for value in firing["annotations"].values())
    skewed = sample_alert(state="resolved", started_at=now, resolved_at=now - 5)
    resolved = channel.postable(skewed, now=now)
    assert resolved["endsAt"] == resolved["startsAt"]
    test = channel.postable(sample_alert(), test=True)
    assert test["annotations"]["test"] == "true" and test["annotations"]["summary"].startswith("[TEST] ")


async def test_posts_to_the_v2_path(receiver: Receiver) -> None:
    """The channel POSTs a JSON list to <base>/api/v2/alerts (trailing slash of the base stripped)."""
    channel = AlertmanagerChannel(receiver.url + "/", instance="i")
    await channel.send(Delivery(sample_alert(), "k"))
    assert await channel.repush([]) == Receipt(None, "nothing to re-push")
    await channel.close()
    [request] = receiver.requests
    assert request.path == "/api/v2/alerts" and isinstance(request.json, list) and len(request.json) == 1
