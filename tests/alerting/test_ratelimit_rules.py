"""The rate limit's rules at their edges: the whole interval is held, and an emergency is never held.

Each test pins a rule that a one-line change could break without the other tests seeing it: a hold that ends
early (at 0.8 of the interval, in the limiter or in how the agent builds it), and the emergency bypass inverted
(an emergency that is not an escalation, fired again from ok, must still go out at once).
"""

from __future__ import annotations

from typing import Any

from memmon.alerting.ratelimit import NotificationLimiter
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import Alert, Level
from tests.samples import process_sample

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY


class Clock:
    """Epoch seconds the test sets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def transitions(rss_values: list[float]) -> list[Alert]:
    """The alert transitions of an evaluator fed one RSS value (MiB) per second."""
    evaluator = Evaluator(
        ThresholdRule(ThresholdSet({W: 100.0, C: 200.0, E: 400.0}, {}, {}, {})),
        resolve_margin_ratio=0,
        hostname="h",
    )
    out: list[Alert] = []
    for index, rss in enumerate(rss_values):
        out.extend(evaluator.evaluate(process_sample(rss, at=1.0 + index)).transitions)
    return out


def hold_edges(limiter: NotificationLimiter, clock: Clock, interval: float) -> None:
    """A warning fired and cleared (both notified at 1000) fires again: held at 0.85 and 0.99 of the interval,
    not due before the interval ends, sent by ``due()`` once it has."""
    fired, cleared, fired_again = transitions([150, 50, 150])
    clock.now = 1000.0
    assert limiter.offer(fired)
    assert limiter.offer(cleared)  # the resolution of a notified firing is never held
    clock.now = 1000.0 + 0.85 * interval
    assert not limiter.offer(fired_again), "a repeat firing within the interval must be held"
    assert limiter.next_due_at() == 1000.0 + interval
    clock.now = 1000.0 + 0.99 * interval
    assert limiter.due() == [], "a held firing is not sent before the interval has passed"
    clock.now = 1000.0 + interval
    assert [alert.id for alert in limiter.due()] == [fired_again.id]


def test_a_repeat_firing_is_held_for_the_whole_interval() -> None:
    """Held at 0.85 and 0.99 of the interval, sent by due() exactly when the interval has passed."""
    clock = Clock()
    hold_edges(NotificationLimiter(100.0, clock=clock), clock, 100.0)


def test_an_offer_after_the_interval_goes_out_and_one_just_before_does_not() -> None:
    """offer() lets a repeat through once the interval has passed since the last notification, not before."""
    clock = Clock()
    limiter = NotificationLimiter(100.0, clock=clock)
    fired, cleared, fired_again, cleared_again, fired_third = transitions([150, 50, 150, 50, 150])
    assert limiter.offer(fired) and limiter.offer(cleared)
    clock.now = 1099.0
    assert not limiter.offer(fired_again)
    assert not limiter.offer(cleared_again)  # receivers were last told "resolved": nothing to correct
    clock.now = 1100.0
    assert limiter.offer(fired_third)


def test_an_emergency_fired_again_from_ok_is_never_held() -> None:
    """With send_immediate_alert (the default) an emergency that is no escalation, fired again right after
    clearing, goes out at once; with it off, it is held like any repeat."""
    first, cleared, again = transitions([450, 50, 450])
    assert first.metadata["previous_level"] == "ok" and again.metadata["previous_level"] == "ok"
    for immediate, expected in ((True, True), (False, False)):
        clock = Clock()
        limiter = NotificationLimiter(300.0, immediate_emergency=immediate, clock=clock)
        assert limiter.offer(first) and limiter.offer(cleared)
        clock.now += 1.0
        assert limiter.offer(again) is expected, f"immediate_emergency={immediate}"


def test_a_repeat_warning_is_held_whatever_the_emergency_setting() -> None:
    """The emergency bypass is for emergencies only: a warning fired again right after clearing is held."""
    first, cleared, again = transitions([150, 50, 150])
    for immediate in (True, False):
        clock = Clock()
        limiter = NotificationLimiter(300.0, immediate_emergency=immediate, clock=clock)
        assert limiter.offer(first) and limiter.offer(cleared)
        clock.now += 1.0
        assert not limiter.offer(again), f"immediate_emergency={immediate}"


def test_the_agent_limits_by_the_configured_interval(make_monitor: Any) -> None:
    """The agent's limiter holds a repeat firing for the whole alerting.rate_limit_seconds of its config."""
    clock = Clock()
    monitor = make_monitor({"alerting": {"rate_limit_seconds": 100}}, clock=clock)
    hold_edges(monitor.dispatcher.limiter, clock, 100.0)


def test_the_agent_sends_emergencies_at_once_as_configured(make_monitor: Any) -> None:
    """The agent's limiter lets a repeated emergency through with send_immediate_alert on, holds it when off."""
    first, cleared, again = transitions([450, 50, 450])
    for immediate in (True, False):
        clock = Clock()
        monitor = make_monitor(
            {"auto_response": {"emergency_actions": {"send_immediate_alert": immediate}}}, clock=clock
        )
        limiter = monitor.dispatcher.limiter
        assert limiter.offer(first) and limiter.offer(cleared)
        clock.now += 1.0
        assert limiter.offer(again) is immediate, f"send_immediate_alert={immediate}"
