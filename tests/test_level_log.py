"""The "memory level a -> b" line is rate-limited per transition pair when memory hovers at a threshold."""

from __future__ import annotations

import logging

import pytest

from memmon.levellog import LevelChangeLog
from memmon.model import Level
from tests.test_target_presence import HOST_QUIET, Holder


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory level ")]


def test_each_pair_is_logged_once_per_interval_and_the_next_line_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per pair one line per interval; the next line logged says how many changes were suppressed meanwhile."""
    caplog.set_level(logging.INFO, logger="test.levels")
    clock = Clock()
    levels = LevelChangeLog(logging.getLogger("test.levels"), interval=60, monotonic=clock)
    for _ in range(5):
        levels.changed(Level.OK, Level.WARNING, "up")
        clock.now += 1
        levels.changed(Level.WARNING, Level.OK, "down")
        clock.now += 1
    assert messages(caplog) == ["memory level ok -> warning: up", "memory level warning -> ok: down"]
    assert levels.suppressed == 8
    levels.changed(Level.WARNING, Level.CRITICAL, "higher")  # a pair not seen yet is never held back
    assert messages(caplog)[-1] == "memory level warning -> critical: higher (8 changes suppressed)"
    assert levels.suppressed == 0
    clock.now += 60
    levels.changed(Level.OK, Level.WARNING, "up again")
    assert messages(caplog)[-1] == "memory level ok -> warning: up again"


def test_the_last_state_is_logged_once_the_interval_has_passed(caplog: pytest.LogCaptureFixture) -> None:
    """When the last changes were suppressed, a check after the interval logs the level that holds now."""
    caplog.set_level(logging.INFO, logger="test.levels")
    clock = Clock()
    levels = LevelChangeLog(logging.getLogger("test.levels"), interval=60, monotonic=clock)
    levels.changed(Level.OK, Level.WARNING, "up")
    levels.changed(Level.WARNING, Level.OK, "down")
    levels.changed(Level.OK, Level.WARNING, "up")  # suppressed: the log's last line says "ok"
    levels.checked(Level.WARNING)
    assert len(messages(caplog)) == 2  # within the interval: nothing yet
    clock.now += 60
    levels.checked(Level.WARNING)
    assert messages(caplog)[-1] == "memory level now warning (1 changes suppressed)"
    assert caplog.records[-1].levelno == logging.WARNING
    clock.now += 600
    levels.checked(Level.WARNING)
    assert len(messages(caplog)) == 3  # nothing pending: no more lines


async def test_real_process_hovering_at_warning_logs_two_lines(
    start_agent, caplog: pytest.LogCaptureFixture
) -> None:
    """A real process swinging across the warning line changes level at every check, but logs one line per pair."""
    caplog.set_level(logging.INFO, logger="memmon.monitor")
    holder = Holder()
    try:
        holder.hold(8)
        quiet = {"check_interval": 3600, "kernel_events": False, "usage_watch": {"enabled": False}}
        agent = await start_agent(
            {
                "target": {"pids": [holder.pid]},
                "thresholds": {"memory_warning_mb": 48, **HOST_QUIET},
                "monitoring": quiet,
            },
        )
        monitor = agent.monitor
        changes: list[Level] = []  # the loop's first check may run too: count every check's change
        monitor.add_check_listener(
            lambda evaluation: (
                changes.append(evaluation.level) if evaluation.level != evaluation.previous_level else None
            )
        )
        for step in range(10):
            holder.hold(96 if step % 2 == 0 else 8)
            await monitor.check_now()
        assert len(changes) == 10  # the source really hovers: every swing changed the level
        lines = messages(caplog)
        assert lines[0].startswith("memory level ok -> warning: process_memory")
        assert lines[1].startswith("memory level warning -> ok: ")
        assert len(lines) == 2, lines
        assert monitor.level_log.suppressed == 8
    finally:
        holder.kill()
