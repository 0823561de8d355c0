"""Custom alert handlers: the guide's monitor.alert_manager.add_handler(fn)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from memmon.alerting.manager import AlertManager
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import Alert, Level
from memmon.telemetry import Telemetry
from tests.samples import process_sample

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY


def transitions(*rss_values: float) -> list[Alert]:
    thresholds = {W: 100.0, C: 200.0, E: 400.0}
    ev = Evaluator(ThresholdRule(ThresholdSet(thresholds, {}, {}, {})), hostname="h")
    out: list[Alert] = []
    for i, rss in enumerate(rss_values):
        out.extend(ev.evaluate(process_sample(rss, at=float(i))).transitions)
    return out


async def test_async_and_plain_handlers_receive_every_transition_in_order() -> None:
    """Async and plain callables both get every firing and resolved alert, in publication order."""
    manager = AlertManager(Telemetry())
    got_async: list[tuple[str, str]] = []
    got_plain: list[tuple[str, str]] = []

    async def record(alert: Alert) -> None:
        await asyncio.sleep(0.01)
        got_async.append((alert.severity.label, alert.state))

    manager.add_handler(record)
    manager.add_handler(lambda alert: got_plain.append((alert.severity.label, alert.state)))
    alerts = transitions(150, 250, 10)
    manager.publish(alerts[:1])
    manager.publish(alerts[1:])
    assert await manager.drain(wait_seconds=2) == 0
    expected = [
        ("warning", "firing"),
        ("warning", "resolved"),
        ("critical", "firing"),
        ("critical", "resolved"),
    ]
    assert got_async == expected and got_plain == expected


async def test_failing_and_slow_handlers_are_contained_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A raising or timed-out handler is logged and counted; publish() returns at once and others still run."""
    telemetry = Telemetry()
    manager = AlertManager(telemetry, handler_timeout=0.05)
    delivered: list[str] = []

    async def broken(alert: Alert) -> None:
        raise RuntimeError("receiver down")

    async def slow(alert: Alert) -> None:
        await asyncio.sleep(5)

    manager.add_handler(broken)
    manager.add_handler(slow)
    manager.add_handler(lambda alert: delivered.append(alert.id))
    (alert,) = transitions(150)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.ERROR, logger="memmon.alerts"):
        manager.publish([alert])
        assert loop.time() - started < 0.05
        await manager.drain(wait_seconds=2)
    assert delivered == [alert.id]
    assert (
        telemetry.handler_errors.value(
            "test_failing_and_slow_handlers_are_contained_and_counted.<locals>.broken"
        )
        == 1
    )
    assert "receiver down" in caplog.text and "timed out" in caplog.text


async def test_publish_counts_fired_alerts_per_severity() -> None:
    """Every firing alert is counted per severity and component; resolutions are counted apart."""
    telemetry = Telemetry()
    manager = AlertManager(telemetry)
    manager.publish(transitions(150, 250, 450, 10))
    assert sorted(telemetry.alerts_fired.items()) == [
        (("critical", "process_memory"), 1),
        (("emergency", "process_memory"), 1),
        (("warning", "process_memory"), 1),
    ]
    assert telemetry.alerts_resolved.total() == 3


def test_add_handler_rejects_non_callables() -> None:
    """Registering something that cannot be called fails at once with a clear TypeError."""
    with pytest.raises(TypeError, match="callable"):
        AlertManager(Telemetry()).add_handler("https://example.invalid")  # type: ignore[arg-type]
