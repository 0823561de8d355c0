"""MemorySpool: the bounded in-memory stand-in for the spool while the spool cannot be written."""

from __future__ import annotations

from memmon.alerting.fallback import MemorySpool
from memmon.model import Level
from tests.alerting.receivers import sample_alert


def test_bound_drops_lowest_severity_oldest_first_and_never_an_emergency() -> None:
    """Beyond the bound the oldest warning goes first, then criticals; emergencies are kept beyond it."""
    memory = MemorySpool(2, clock=lambda: 100.0)
    w1 = memory.add("webhook", "w1", sample_alert(alert_id="w1", severity=Level.WARNING))[0]
    memory.add("webhook", "c1", sample_alert(alert_id="c1", severity=Level.CRITICAL))
    _, dropped = memory.add("webhook", "e1", sample_alert(alert_id="e1", severity=Level.EMERGENCY))
    assert [entry.id for entry in dropped] == [w1]
    memory.add("webhook", "e2", sample_alert(alert_id="e2", severity=Level.EMERGENCY))
    memory.add("webhook", "e3", sample_alert(alert_id="e3", severity=Level.EMERGENCY))
    assert [e.idempotency_key for e in memory.entries("webhook")] == ["e1", "e2", "e3"]
    new_id, dropped = memory.add("webhook", "w2", sample_alert(alert_id="w2", severity=Level.WARNING))
    assert new_id == 0 and dropped == []  # the new warning itself had to go


def test_due_order_retry_and_dedupe() -> None:
    """Due entries come highest severity first; a failed one waits; the same key is held once."""
    memory = MemorySpool(clock=lambda: 100.0)
    memory.add("slack", "w", sample_alert(alert_id="w", severity=Level.WARNING))
    crit, _ = memory.add("slack", "c", sample_alert(alert_id="c", severity=Level.CRITICAL))
    assert memory.add("slack", "c", sample_alert(alert_id="c"))[0] == crit
    assert [e.idempotency_key for e in memory.due("slack", 100.0, 10)] == ["c", "w"]
    memory.failed(crit, next_attempt_at=150.0, error="HTTP 500")
    assert [e.idempotency_key for e in memory.due("slack", 100.0, 10)] == ["w"]
    assert memory.next_due_at("slack") == 100.0 and memory.count("slack") == 2
    memory.delete(crit)
    assert len(memory) == 1 and memory.next_due_at("webhook") is None
