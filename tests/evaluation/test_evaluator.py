"""The alert state machine: thresholds, hysteresis, debounce, transitions and restore."""

from __future__ import annotations

from dataclasses import replace

from memmon.evaluation.evaluator import Evaluator, fingerprint, growth_text
from memmon.evaluation.rules import ThresholdRule, ThresholdSet
from memmon.model import Level
from tests.samples import process_sample

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY
THRESHOLDS = ThresholdSet(
    memory_mb={W: 100.0, C: 200.0, E: 400.0},
    memory_percent={W: 70.0, C: 85.0, E: 95.0},
    system_percent={W: 70.0, C: 85.0, E: 95.0},
    swap_percent={W: 50.0, C: 80.0, E: 95.0},
)


def evaluator(margin: float = 0.05, min_duration: float = 0.0) -> Evaluator:
    return Evaluator(
        ThresholdRule(THRESHOLDS),
        resolve_margin_ratio=margin,
        min_duration_seconds=min_duration,
        hostname="h1",
    )


def levels(ev: Evaluator, rss_values: list[float]) -> list[Level]:
    return [ev.evaluate(process_sample(rss, at=1000.0 + i)).level for i, rss in enumerate(rss_values)]


def test_levels_follow_mb_thresholds_in_order() -> None:
    """RSS crossing each MB threshold raises the level to warning, critical, emergency."""
    assert levels(evaluator(), [50, 100, 150, 200, 399, 400]) == [Level.OK, W, W, C, C, E]


def test_hysteresis_holds_level_until_below_margin() -> None:
    """A level resolves only below threshold * (1 - margin), and then steps down to what still holds."""
    # warning at 100 MB, margin 10 %: holds down to 90 MB, resolves at 89.
    assert levels(evaluator(margin=0.10), [120, 99, 91, 90, 89]) == [W, W, W, W, Level.OK]
    # critical 200: resolves below 180 to warning (still above 90), then ok below 90.
    assert levels(evaluator(margin=0.10), [250, 185, 179, 95, 85]) == [C, C, W, W, Level.OK]


def test_min_duration_debounces_escalation() -> None:
    """With a minimum duration, a level is entered only after it has held that long; a dip resets it."""
    ev = evaluator(min_duration=10.0)
    seen = [
        ev.evaluate(process_sample(rss, at=t)).level
        for t, rss in [(0, 150), (5, 150), (9, 50), (12, 150), (21, 150), (22, 150)]
    ]
    assert seen == [Level.OK, Level.OK, Level.OK, Level.OK, Level.OK, W]


def test_escalation_resolves_old_alert_and_fires_new_one() -> None:
    """warning -> critical yields a resolved warning alert and a firing critical alert with the guide's fields."""
    ev = evaluator()
    first = ev.evaluate(process_sample(150, at=10.0))
    (warning,) = first.transitions
    assert (warning.state, warning.severity, warning.component) == ("firing", W, "process_memory")
    assert warning.threshold == 100.0 and warning.memory_usage == 150.0
    assert warning.message.startswith("WARNING: Memory usage 150.0 MiB exceeds warning threshold")
    second = ev.evaluate(process_sample(250, at=20.0))
    resolved, critical = second.transitions
    assert (resolved.id, resolved.state, resolved.resolved_at) == (warning.id, "resolved", 20.0)
    assert (critical.state, critical.severity, critical.started_at) == ("firing", C, 20.0)
    assert critical.fingerprint == fingerprint("process_memory", "pid:42", C) != warning.fingerprint
    assert [a.id for a in second.active_alerts] == [critical.id]
    assert critical.metadata["host"] == "h1" and critical.metadata["previous_level"] == "warning"
    assert critical.message.startswith("CRITICAL (warning -> critical): Memory usage 250.0 MiB exceeds")
    assert resolved.metadata["replaced_by"] == "critical"
    assert resolved.message.startswith("RESOLVED: process_memory warning replaced by critical")


def test_percent_threshold_converted_to_mb_with_the_limit() -> None:
    """A percent threshold of a cgroup limit is reported in MB of that limit, and the limit source is named."""
    ev = evaluator()
    result = ev.evaluate(process_sample(90, cgroup_limit_mb=100))  # 90 % of a 100 MB cgroup limit
    severities = {a.component: a for a in result.transitions}
    alert = severities["process_memory"]
    assert alert.severity == C  # 90 % >= 85 % critical, although 90 MB < the 100 MB warning
    assert alert.threshold == 85.0
    assert alert.metadata["limit_source"] == "cgroup" and alert.metadata["threshold_kind"] == "memory_percent"
    assert "cgroup_memory" in severities  # the cgroup's own working set against its limit


def test_system_memory_component_judges_host_percent() -> None:
    """Host used percent is its own component, judged by the system thresholds."""
    result = evaluator().evaluate(process_sample(10, host_percent=90.0))
    (alert,) = result.transitions
    assert (alert.component, alert.severity) == ("system_memory", C)
    assert result.level == C


def test_missing_source_keeps_component_state() -> None:
    """A check without process data (source degraded) neither resolves nor changes the process alert."""
    ev = evaluator()
    ev.evaluate(process_sample(150, at=1.0))
    blind = replace(process_sample(150, at=2.0), target_bytes=None, process=None)
    result = ev.evaluate(blind)
    assert result.transitions == () and result.level == W


def test_restore_resumes_firing_alerts_without_refiring() -> None:
    """Alerts still firing in the store are restored: the same level fires nothing new; a drop resolves them."""
    first = evaluator()
    (alert,) = first.evaluate(process_sample(250, at=1.0)).transitions
    resumed = evaluator()
    assert resumed.restore([alert], "pid:42", now=1.5) == []
    assert resumed.level == C
    assert resumed.evaluate(process_sample(250, at=2.0)).transitions == ()
    (resolved,) = resumed.evaluate(process_sample(10, at=3.0)).transitions
    assert (resolved.id, resolved.state) == (alert.id, "resolved")


def test_restore_resolves_alerts_of_a_target_no_longer_watched() -> None:
    """After a restart with another target, the old target's firing alerts are resolved, not resumed."""
    (alert,) = evaluator().evaluate(process_sample(250, at=1.0)).transitions
    resumed = evaluator()
    (stale,) = resumed.restore([alert], "cgroup:/other", now=5.0)
    assert (stale.id, stale.state, stale.resolved_at) == (alert.id, "resolved", 5.0)
    assert "no longer watched" in stale.message
    assert resumed.level == Level.OK and resumed.active_alerts() == ()


def test_annotate_adds_metadata_that_the_resolution_keeps() -> None:
    """annotate() merges into the firing alert's metadata (what a restart answered), the active alert shows it,
    its resolution keeps it, and an alert that no longer fires is not annotated."""
    ev = evaluator()
    (alert,) = ev.evaluate(process_sample(450, at=10.0)).transitions
    annotated = ev.annotate(alert.id, {"restart": {"outcome": "oom_killed"}})
    assert annotated is not None and annotated.metadata["restart"] == {"outcome": "oom_killed"}
    assert annotated.metadata["host"] == "h1" and ev.active_alerts()[0].metadata["restart"]
    (resolved,) = ev.evaluate(process_sample(10, at=20.0)).transitions
    assert resolved.state == "resolved" and resolved.metadata["restart"] == {"outcome": "oom_killed"}
    assert ev.annotate(alert.id, {"x": 1}) is None


def test_de_escalation_marks_the_replaced_alert_and_names_both_levels() -> None:
    """emergency -> critical resolves the emergency alert marked replaced_by critical and fires a critical alert
    whose message says "emergency -> critical"; dropping to ok is a plain resolution without the mark."""
    ev = evaluator(margin=0.0)
    (emergency,) = ev.evaluate(process_sample(450, at=1.0)).transitions
    resolved, critical = ev.evaluate(process_sample(250, at=2.0)).transitions
    assert (resolved.id, resolved.state, resolved.metadata["replaced_by"]) == (
        emergency.id,
        "resolved",
        "critical",
    )
    assert critical.message.startswith(
        "CRITICAL (emergency -> critical): Memory usage 250.0 MiB exceeds critical"
    )
    assert "shrinking 200 MiB/s" in critical.message
    (cleared,) = ev.evaluate(process_sample(10, at=3.0)).transitions
    assert cleared.id == critical.id and "replaced_by" not in cleared.metadata
    assert cleared.message.startswith("RESOLVED: process_memory critical cleared (usage 10.0 MiB")


def test_first_firing_has_no_level_change_in_its_message() -> None:
    """A firing from ok says only its own level ("EMERGENCY: Memory usage ..."), not a level change."""
    (alert,) = evaluator().evaluate(process_sample(450, at=1.0)).transitions
    assert alert.message.startswith("EMERGENCY: Memory usage 450.0 MiB exceeds emergency threshold")
    assert alert.metadata["previous_level"] == "ok"


def test_human_text_says_mib_never_mb() -> None:
    """Messages, reasons and resolutions write sizes as MiB (the guide's MB are 2**20 bytes)."""
    ev = evaluator()
    first = ev.evaluate(process_sample(90, at=1.0, cgroup_limit_mb=100))
    second = ev.evaluate(process_sample(10, at=2.0, cgroup_limit_mb=100))
    texts = [a.message for a in first.transitions + second.transitions]
    texts += [c.reason for c in first.components + second.components]
    assert texts and all("MB" not in text for text in texts), texts
    assert any("(85.0 MiB)" in text for text in texts)


def test_growth_rate_and_fattest_process_in_message_and_metadata() -> None:
    """A firing alert names the growth of the judged number (MiB/s over the recent checks) and the largest
    watched process, in its message and in metadata growth_mib_per_second / fattest_process."""
    ev = evaluator()
    ev.evaluate(process_sample(50, at=100.0))
    ev.evaluate(process_sample(70, at=110.0))
    (alert,) = ev.evaluate(process_sample(150, at=120.0)).transitions
    assert alert.metadata["growth_mib_per_second"] == 5.0  # (150 - 50) MiB in 20 s
    assert alert.metadata["fattest_process"] == {"pid": 42, "name": "app", "rss_mb": 150.0}
    assert alert.message.endswith("; growing 5 MiB/s; largest process pid 42 (app, 150.0 MiB)")


def test_growth_rate_spans_the_window_only() -> None:
    """Checks older than growth_window_seconds no longer count: the rate is that of the recent checks."""
    ev = Evaluator(ThresholdRule(THRESHOLDS), hostname="h1", growth_window_seconds=30.0)
    for t, rss in [(0.0, 10.0), (40.0, 90.0), (50.0, 90.0), (60.0, 90.0)]:
        ev.evaluate(process_sample(rss, at=t))
    (alert,) = ev.evaluate(process_sample(120, at=70.0)).transitions
    assert alert.metadata["growth_mib_per_second"] == 1.0  # (120 - 90) over 30 s, not (120 - 10) over 70 s
    assert "growing 1 MiB/s" in alert.message


def test_first_check_has_no_growth_rate() -> None:
    """With a single check the rate is unknown: no growth key, no growth words in the message."""
    (alert,) = evaluator().evaluate(process_sample(150, at=1.0)).transitions
    assert "growth_mib_per_second" not in alert.metadata
    assert "growing" not in alert.message and "steady" not in alert.message


def test_without_process_data_no_fattest_process() -> None:
    """A sample without the process list (a cgroup target without pids) fires without fattest_process."""
    sample = replace(process_sample(150, at=1.0), process=None)
    (alert,) = evaluator().evaluate(sample).transitions
    assert "fattest_process" not in alert.metadata and "largest process" not in alert.message


def test_growth_text_never_uses_an_exponent() -> None:
    """Rates read as plain numbers with three significant digits (whole MiB/s from 100 up); tiny ones are steady."""
    assert growth_text(3906.25) == "growing 3906 MiB/s"
    assert growth_text(-98.24) == "shrinking 98.2 MiB/s"
    assert growth_text(0.0123) == "growing 0.0123 MiB/s"
    assert growth_text(0.0004) == "steady"
