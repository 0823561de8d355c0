"""The notification rate limit: one per fingerprint per interval, coalesced, escalations and emergencies first."""

from __future__ import annotations

import itertools

from memmon.alerting.ratelimit import NotificationLimiter
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import Alert, Level
from tests.samples import process_sample

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(values: list[tuple[float, float]]) -> list[Alert]:
    """Transitions of an evaluator fed (time, rss MB) pairs."""
    evaluator = Evaluator(
        ThresholdRule(ThresholdSet({W: 100.0, C: 200.0, E: 400.0}, {}, {}, {})),
        resolve_margin_ratio=0,
        hostname="h",
    )
    out: list[Alert] = []
    for at, rss in values:
        out.extend(evaluator.evaluate(process_sample(rss, at=at)).transitions)
    return out


def test_hovering_is_limited_to_one_notification_per_state_and_interval() -> None:
    """50 up/down crossings within 60 s with a 10 s limit give at most 2 per interval, ending on the true state."""
    clock = Clock()
    limiter = NotificationLimiter(10.0, clock=clock)
    sent: list[Alert] = []
    for index in range(100):  # every 0.6 s, alternately above and below the warning threshold
        clock.now = 1000.0 + index * 0.6
        (alert,) = run_one(index)
        if limiter.offer(alert):
            sent.append(alert)
        sent.extend(limiter.due())
    clock.now += 10.0
    sent.extend(limiter.due())
    # 60 s / 10 s = 6 windows; per window at most one firing and the resolution of a notified firing.
    assert 2 <= len(sent) <= 2 * 7
    assert sent[-1].state == "resolved"  # the last crossing went down: receivers end up told it cleared
    fired = [a.started_at for a in sent if a.state == "firing"]
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(fired))


_HOVER = run([(float(i), 150.0 if i % 2 == 0 else 50.0) for i in range(100)])


def run_one(index: int) -> list[Alert]:
    """The index-th transition of a warning hovering up and down."""
    return [_HOVER[index]]


def test_escalation_and_emergency_are_never_held() -> None:
    """Right after a notified warning, the critical escalation and the emergency go out at once."""
    clock = Clock()
    limiter = NotificationLimiter(300.0, clock=clock)
    warning, warning_resolved, critical, critical_resolved, emergency = run(
        [(1.0, 150.0), (2.0, 250.0), (3.0, 450.0)]
    )
    assert limiter.offer(warning)
    assert limiter.offer(warning_resolved)  # resolution of a notified firing: never held
    assert limiter.offer(critical)  # escalation
    assert limiter.offer(critical_resolved)
    assert limiter.offer(emergency)


def test_repeat_firing_is_held_then_dropped_when_state_is_unchanged() -> None:
    """A firing held back is not sent at the window's end when receivers were last told 'firing' anyway."""
    clock = Clock()
    limiter = NotificationLimiter(10.0, clock=clock)
    first_fire, first_clear, second_fire = run([(1.0, 150.0), (2.0, 50.0), (3.0, 150.0)])
    assert limiter.offer(first_fire)
    assert limiter.offer(first_clear)
    assert not limiter.offer(second_fire)
    assert limiter.next_due_at() == 1010.0
    clock.now = 1010.0
    (late,) = limiter.due()
    assert late.id == second_fire.id  # receivers were told 'resolved', so the new firing must reach them
    assert limiter.next_due_at() is None
