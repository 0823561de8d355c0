"""LogChannel: one structured line per alert on the memmon.alerts logger."""

from __future__ import annotations

import json
import logging

import pytest

from memmon.alerting.channel import Delivery
from memmon.alerting.log import LogChannel
from memmon.kits.logsetup import JsonFormatter
from memmon.model import Level
from tests.alerting.receivers import sample_alert


@pytest.mark.parametrize(
    ("level", "state", "expected"),
    [
        (Level.WARNING, "firing", logging.WARNING),
        (Level.CRITICAL, "firing", logging.ERROR),
        (Level.EMERGENCY, "firing", logging.CRITICAL),
        (Level.EMERGENCY, "resolved", logging.INFO),
    ],
)
async def test_level_per_severity_and_state(
    caplog: pytest.LogCaptureFixture, level: Level, state: str, expected: int
) -> None:
    """warning -> WARNING, critical -> ERROR, emergency -> CRITICAL, any resolution -> INFO."""
    caplog.set_level(logging.DEBUG, logger="memmon.alerts")
    alert = sample_alert(severity=level, state=state)
    receipt = await LogChannel().send(Delivery(alert, "key-1"))
    assert (receipt.status, receipt.detail) == (None, "logged")
    [record] = [r for r in caplog.records if r.name == "memmon.alerts"]
    assert record.levelno == expected
    assert record.getMessage() == alert.message


async def test_extra_fields_identify_the_alert(caplog: pytest.LogCaptureFixture) -> None:
    """The record carries alert_id, fingerprint, severity, component, target, state, idempotency_key."""
    caplog.set_level(logging.INFO, logger="memmon.alerts")
    alert = sample_alert()
    await LogChannel().send(Delivery(alert, "key-2"))
    [record] = caplog.records
    fields = {name: getattr(record, name) for name in (
        "alert_id", "fingerprint", "severity", "component", "target", "state", "idempotency_key"
    )}  # fmt: skip
    assert fields == {
        "alert_id": alert.id,
        "fingerprint": alert.fingerprint,
        "severity": "critical",
        "component": "process_memory",
        "target": "pid:4242",
        "state": "firing",
        "idempotency_key": "key-2",
    }
    line = json.loads(JsonFormatter().format(record))
    assert line["idempotency_key"] == "key-2" and line["logger"] == "memmon.alerts"


def test_write_is_the_synchronous_send(caplog: pytest.LogCaptureFixture) -> None:
    """write() logs the same line without an event loop; a test delivery is marked [TEST]."""
    caplog.set_level(logging.INFO, logger="memmon.alerts")
    receipt = LogChannel().write(Delivery(sample_alert(), "k", test=True))
    assert receipt.detail == "logged"
    assert caplog.records[0].getMessage().startswith("[TEST] CRITICAL: Memory usage")
