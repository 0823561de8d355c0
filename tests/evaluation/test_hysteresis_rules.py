"""Hysteresis on the way down: a level falls to the highest level that still holds, not to the raw level.

The raw level (thresholds alone) can be below a level that still holds within the resolve margin: at 195 MiB with
critical at 200 MiB and a 10 % margin, the raw level is warning but critical holds down to 180 MiB.
"""

from __future__ import annotations

from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import Level
from tests.samples import process_sample

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY
MB_ONLY = ThresholdSet({W: 100.0, C: 200.0, E: 400.0}, {}, {}, {})


def margin_10() -> Evaluator:
    return Evaluator(ThresholdRule(MB_ONLY), resolve_margin_ratio=0.10, hostname="h1")


def test_emergency_steps_down_to_critical_that_still_holds_not_to_the_raw_warning() -> None:
    """Emergency -> 195 MiB (raw warning, critical holds to 180): critical; then 179 warning, 89 ok."""
    ev = margin_10()
    seen = [
        ev.evaluate(process_sample(rss, at=1000.0 + i)).level
        for i, rss in enumerate([450, 195, 185, 179, 89])
    ]
    assert seen == [E, C, C, W, Level.OK]


def test_the_held_level_fires_as_back_down_within_the_margin() -> None:
    """The step down to a level held by the margin fires that level's alert saying so, replacing the emergency."""
    ev = margin_10()
    ev.evaluate(process_sample(450, at=1000.0))
    transitions = ev.evaluate(process_sample(195, at=1001.0)).transitions
    resolved, fired = transitions
    assert (
        resolved.severity is E
        and resolved.state == "resolved"
        and resolved.metadata["replaced_by"] == "critical"
    )
    assert fired.severity is C and fired.state == "firing"
    assert fired.message.startswith(
        "CRITICAL (emergency -> critical): Memory usage 195.0 MiB back down to critical"
    )
    assert "within the resolve margin" in fired.message


def test_the_percent_measure_holds_a_level_the_mb_measure_never_reached() -> None:
    """Any measure that still holds keeps the level: critical held by percent of the limit, not by MB."""
    thresholds = ThresholdSet({W: 100.0, C: 1000.0, E: 2000.0}, {W: 50.0, C: 80.0, E: 95.0}, {}, {})
    ev = Evaluator(ThresholdRule(thresholds), resolve_margin_ratio=0.10, hostname="h1")
    # A 250 MiB cgroup limit: 240 MiB is 96 % (emergency); 195 MiB is 78 %, raw warning by both measures, and
    # critical holds by percent (78 >= 80 * 0.9); 175 MiB is 70 %: warning.
    levels = [
        ev.evaluate(process_sample(rss, at=1000.0 + i, cgroup_limit_mb=250.0)).level
        for i, rss in enumerate([240, 195, 175])
    ]
    assert levels == [E, C, W]
