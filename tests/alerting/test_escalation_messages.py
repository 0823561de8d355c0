"""An escalation (or de-escalation) is one message per human channel, while Alertmanager and the alert log still
see the replaced alert end: a real monitor, real receivers on 127.0.0.1 and a real Alertmanager."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from memmon.alerting.kinds import is_silent, replaced_by
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import Alert, Level
from tests.alerting.conftest import SmtpFactory, get_json
from tests.alerting.receivers import Receiver
from tests.alerting.test_delivery_e2e import THRESHOLDS, ScriptedSampler
from tests.samples import process_sample
from tests.waiting import wait_until

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY


def transitions(values: list[float]) -> list[Alert]:
    """The transitions of an evaluator (warning 100, critical 200, emergency 400 MiB, no margin) fed ``values``."""
    evaluator = Evaluator(
        ThresholdRule(ThresholdSet({W: 100.0, C: 200.0, E: 400.0}, {}, {}, {})),
        resolve_margin_ratio=0,
        hostname="h",
    )
    out: list[Alert] = []
    for index, rss in enumerate(values):
        out.extend(evaluator.evaluate(process_sample(rss, at=1000.0 + index)).transitions)
    return out


async def test_each_level_change_is_one_message_on_every_human_channel(
    make_monitor, receiver: Receiver, smtp_server: SmtpFactory, alertmanager: str, caplog
) -> None:
    """critical -> emergency -> critical -> ok reaches the webhook, Slack, email and the log as four messages
    (no "RESOLVED" next to a level change), Alertmanager ends the replaced alert at once, and the alert log keeps
    every record with the replaced ones marked."""
    slack = Receiver()
    await slack.start()
    smtp = smtp_server(mode="plain")
    sampler = ScriptedSampler([250])
    alerting: dict[str, Any] = {
        "webhook_url": receiver.url + "/hook",
        "slack_webhook": slack.url + "/services/T/B/X",
        "email": ["ops@example.org"],
        "smtp": {"host": smtp.host, "port": smtp.port, "security": "none"},
        "alertmanager_url": alertmanager,
        "instance": "escalation-test",
        "delivery": {"timeout_seconds": 2, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
    }
    monitor = make_monitor({"thresholds": THRESHOLDS, "alerting": alerting}, sampler=sampler)

    def am_active() -> list[dict[str, Any]]:
        alerts = get_json(f"{alertmanager}/api/v2/alerts")
        return [
            a
            for a in alerts
            if a["status"]["state"] == "active" and a["labels"].get("instance") == "escalation-test"
        ]

    async def settle() -> None:
        await wait_until(lambda: all(report.pending == 0 for report in monitor.alert_channels().values()))

    caplog.set_level(logging.INFO, logger="memmon.alerts")
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        await settle()
        await wait_until(lambda: [a["labels"]["severity"] for a in am_active()] == ["critical"])
        sampler.values = itertools.cycle([450])
        await monitor.check_now()
        await settle()
        # The critical alert ended in Alertmanager as the emergency one began.
        await wait_until(lambda: [a["labels"]["severity"] for a in am_active()] == ["emergency"])
        sampler.values = itertools.cycle([250])
        await monitor.check_now()
        await settle()
        await wait_until(lambda: [a["labels"]["severity"] for a in am_active()] == ["critical"])
        sampler.values = itertools.cycle([50])
        await monitor.check_now()
        await settle()
        await wait_until(lambda: am_active() == [], within=15)
        records = await monitor.alerts_since(0.0)
    finally:
        await monitor.stop_monitoring()
        await slack.close()

    expected = [
        ("critical", "firing", "CRITICAL: Memory usage 250.0 MiB"),
        ("emergency", "firing", "EMERGENCY (critical -> emergency): Memory usage 450.0 MiB"),
        ("critical", "firing", "CRITICAL (emergency -> critical): Memory usage 250.0 MiB"),
        ("critical", "resolved", "RESOLVED: process_memory critical cleared"),
    ]
    webhook = [(b["severity"], b["state"], b["message"]) for b in receiver.bodies]
    assert [(s, st) for s, st, _ in webhook] == [(s, st) for s, st, _ in expected]
    assert all(
        message.startswith(prefix) for (_, _, message), (_, _, prefix) in zip(webhook, expected, strict=True)
    )
    slack_texts = [body["text"] for body in slack.bodies]
    assert len(slack_texts) == 4 and "critical -&gt; emergency" in slack_texts[1]
    assert not any("replaced" in text for text in slack_texts)
    subjects = [str(message["Subject"]) for message in smtp.messages]
    assert len(subjects) == 4 and subjects[-1].startswith("[memmon] RESOLVED critical")
    logged = [r.getMessage() for r in caplog.records if r.name == "memmon.alerts"]
    assert len(logged) == 4 and not any("replaced by" in line for line in logged)
    # The alert log: three alerts fired (critical, emergency, critical again), all resolved; two were replaced.
    assert sorted((a.severity.label, a.state, str(a.metadata.get("replaced_by"))) for a in records) == [
        ("critical", "resolved", "None"),
        ("critical", "resolved", "emergency"),
        ("emergency", "resolved", "critical"),
    ]


def test_replaced_resolutions_are_silent_and_others_are_not() -> None:
    """Only a resolution replaced by another level is silent: warning -> critical -> ok gives one silent
    resolution (the warning's), and the final resolution is a message."""
    warning, warning_replaced, critical, critical_cleared = transitions([150, 250, 10])
    assert [is_silent(a) for a in (warning, warning_replaced, critical, critical_cleared)] == [
        False,
        True,
        False,
        False,
    ]
    assert replaced_by(warning_replaced) == "critical" and replaced_by(critical_cleared) is None


@pytest.mark.parametrize("immediate_emergency", [True, False])
def test_de_escalation_firing_is_not_held_after_a_notified_alert_was_replaced(
    immediate_emergency: bool,
) -> None:
    """emergency -> critical within the rate-limit interval of a notified critical: the replaced emergency's
    resolution is no message, so the new critical firing goes out at once instead of leaving people believing
    the emergency goes on."""
    limiter = NotificationLimiter(300.0, immediate_emergency=immediate_emergency, clock=lambda: 1000.0)
    sent = [a for a in transitions([250, 450, 250]) if limiter.offer(a)]
    assert [(a.severity.label, a.state) for a in sent] == [
        ("critical", "firing"),
        ("critical", "resolved"),  # silent: Alertmanager only
        ("emergency", "firing"),
        ("emergency", "resolved"),  # silent: Alertmanager only
        ("critical", "firing"),
    ]


def test_firing_after_a_replaced_alert_never_notified_is_rate_limited() -> None:
    """When the replaced alert's firing was held back (never told), its replacement gets no bypass: a warning
    hovering back within the interval stays held."""
    clock = [1000.0]
    limiter = NotificationLimiter(300.0, clock=lambda: clock[0])
    w1, w1_cleared, w2, w2_replaced, critical, critical_replaced, w3 = transitions([150, 10, 150, 250, 150])
    assert limiter.offer(w1) and limiter.offer(w1_cleared)
    assert not limiter.offer(w2)  # same fingerprint within the interval: held
    assert not limiter.offer(w2_replaced)  # never told it fired: nothing to end
    assert limiter.offer(critical)  # escalation
    assert limiter.offer(critical_replaced)  # its firing was told: ended (silently)
    assert limiter.offer(w3)  # ... and the warning that took over is told at once
    clock[0] += 300.0
    assert limiter.due() == []
