"""The graceful restart's safety rules, each pinned on a real agent restarting a real process by signal.

The target is a child that survives SIGTERM (it prints ``term`` for each one it gets), so every restart fails
after ``grace_seconds`` and counts against ``max_restarts_per_hour``, and the child's output says how many
restarts signalled it. Checks are driven by the test (the loop's interval is an hour, kernel events and the usage
watcher are off); the level is moved by swapping the evaluator's thresholds.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from memmon.evaluation.rules import ThresholdSet
from memmon.model import ActionResult, Level
from tests.waiting import wait_until

NO_THRESHOLDS = ThresholdSet({}, {}, {}, {})
"""Swapped in to bring the running agent back to ok."""

QUIET = {"check_interval": 3600, "kernel_events": False, "usage_watch": {"enabled": False}}
"""No check but the loop's first one and those the test runs."""

STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('term', flush=True))\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


class ShiftedClock:
    """Wall time plus an offset the test moves forward (an hour passing, a check growing old)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def stubborn() -> Iterator[subprocess.Popen[str]]:
    """A child that prints ``term`` on each SIGTERM and keeps running; killed after the test."""
    child = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def terms_received(child: subprocess.Popen[str]) -> int:
    """How many SIGTERMs the child has reported so far (reads what it has printed, without blocking)."""
    assert child.stdout is not None
    fd = child.stdout.fileno()
    os.set_blocking(fd, False)
    count = getattr(child, "_terms", 0)
    with contextlib.suppress(BlockingIOError):
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 4096)
            if not data:
                break
            count += data.decode().split().count("term")
    child._terms = count  # type: ignore[attr-defined]
    return count


def agent_settings(pid: int, **restart: Any) -> dict[str, Any]:
    """An agent watching ``pid`` at emergency from 3 MiB, restarting it by SIGTERM without a cool-down."""
    return {
        "target": {"pids": [pid]},
        "monitoring": QUIET,
        "thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 3},
        "auto_response": {
            "cooldown_seconds": 0.01,
            "emergency_actions": {
                "graceful_restart": {
                    "strategy": "signal",
                    "grace_seconds": 0.2,
                    "cooldown_seconds": 0,
                    **restart,
                }
            },
        },
    }


def restarts(monitor: Any) -> list[ActionResult]:
    return [r for r in monitor.recent_actions() if r.action == "restart:signal"]


async def test_failed_restarts_stop_at_the_hourly_maximum_until_the_hour_has_passed(
    make_monitor: Any, stubborn: subprocess.Popen[str]
) -> None:
    """Two failed restarts with max_restarts_per_hour 2: the third emergency restarts nothing and says restarts
    cannot keep up (once, not at every check); an hour later the agent restarts again."""
    clock = ShiftedClock()
    monitor = make_monitor(agent_settings(stubborn.pid, max_restarts_per_hour=2), clock=clock)
    emergency = monitor.evaluator.rule.thresholds
    await monitor.start_monitoring()  # the loop's first check enters emergency: restart 1
    try:
        await wait_until(lambda: len(restarts(monitor)) == 1)
        for count in (2, 3):  # back to ok, emergency again: restart 2, then the capped one
            monitor.evaluator.rule.thresholds = NO_THRESHOLDS
            assert (await monitor.check_now()).level == Level.OK
            monitor.evaluator.rule.thresholds = emergency
            assert (await monitor.check_now()).level == Level.EMERGENCY
            await wait_until(lambda: len(restarts(monitor)) == count)  # noqa: B023 - awaited in this iteration
        for _ in range(3):  # the same emergency goes on: nothing more is restarted or said
            await monitor.check_now()
        await wait_until(lambda: monitor.actions.restarts._idle)
        assert len(restarts(monitor)) == 3 and terms_received(stubborn) == 2
        clock.offset += 3601.0  # the failures are more than an hour old
        await monitor.check_now()
        await wait_until(lambda: len(restarts(monitor)) == 4)
    finally:
        await monitor.stop_monitoring()
    first, second, capped, after_an_hour = restarts(monitor)
    for failed in (first, second, after_an_hour):
        assert not failed.success and failed.detail["signalled"] == [stubborn.pid]
        assert "still running" in (failed.error or "")
    assert capped.detail["skipped"] and capped.detail["cannot_keep_up"]
    assert "restarts cannot keep up: 2 failed or freed nothing in the last hour" in (capped.error or "")
    assert terms_received(stubborn) == 3


async def test_restart_stands_down_when_the_reread_finds_the_emergency_over(
    make_monitor: Any, stubborn: subprocess.Popen[str]
) -> None:
    """A restart whose emergency check is older than FRESH_SECONDS re-reads memory first; memory back under the
    line by then: no signal, the restart is skipped naming the re-read."""
    clock = ShiftedClock()
    monitor = make_monitor(agent_settings(stubborn.pid), clock=clock)
    emergency = monitor.evaluator.rule.thresholds
    monitor.evaluator.rule.thresholds = NO_THRESHOLDS
    await monitor.start_monitoring()
    try:
        await wait_until(lambda: monitor.latest is not None)
        monitor.evaluator.rule.thresholds = emergency
        assert (await monitor.check_now()).level == Level.EMERGENCY
        # check_now has scheduled the restart, which has not run yet: before it does, the emergency ends and
        # the check that saw it becomes a second old (far over FRESH_SECONDS, 0.1 s).
        monitor.evaluator.rule.thresholds = NO_THRESHOLDS
        clock.offset += 1.0
        await wait_until(lambda: len(restarts(monitor)) == 1)
    finally:
        await monitor.stop_monitoring()
    (skipped,) = restarts(monitor)
    assert skipped.detail["skipped"] and not skipped.success
    assert "memory re-read before acting: now ok" in (skipped.error or "")
    assert terms_received(stubborn) == 0


async def test_the_reread_agreeing_with_the_emergency_lets_the_restart_go_on(
    make_monitor: Any, stubborn: subprocess.Popen[str]
) -> None:
    """The re-read of a stale emergency check that still finds emergency restarts (the re-read is no veto)."""
    clock = ShiftedClock()
    monitor = make_monitor(agent_settings(stubborn.pid), clock=clock)
    emergency = monitor.evaluator.rule.thresholds
    monitor.evaluator.rule.thresholds = NO_THRESHOLDS
    await monitor.start_monitoring()
    try:
        await wait_until(lambda: monitor.latest is not None)
        monitor.evaluator.rule.thresholds = emergency
        assert (await monitor.check_now()).level == Level.EMERGENCY
        clock.offset += 1.0
        await wait_until(lambda: len(restarts(monitor)) == 1)
    finally:
        await monitor.stop_monitoring()
    (attempt,) = restarts(monitor)
    assert attempt.detail["signalled"] == [stubborn.pid] and terms_received(stubborn) == 1


async def test_only_one_restart_runs_at_a_time(make_monitor: Any, stubborn: subprocess.Popen[str]) -> None:
    """Checks at emergency while a restart waits out its grace time start no second restart: one SIGTERM, one
    result."""
    monitor = make_monitor(agent_settings(stubborn.pid, grace_seconds=3))
    await monitor.start_monitoring()  # the loop's first check enters emergency: the restart begins
    try:
        await wait_until(lambda: terms_received(stubborn) == 1)
        for _ in range(3):
            assert (await monitor.check_now()).level == Level.EMERGENCY
        assert restarts(monitor) == [], "the first restart must still be waiting for its grace time here"
        await wait_until(lambda: len(restarts(monitor)) >= 1)
    finally:
        await monitor.stop_monitoring()
    assert len(restarts(monitor)) == 1
    assert terms_received(stubborn) == 1


class HeldBack:
    """A strategy whose every restart is held back before it runs (as node mode's gate does)."""

    name = "restart:held"

    def __init__(self) -> None:
        self.calls = 0

    async def restart(self, reason: str) -> ActionResult:
        self.calls += 1
        return ActionResult(
            self.name, False, time.time(), 0.0, {"skipped": True}, error="held back: pod busy"
        )


async def test_restarts_held_back_before_running_do_not_count_against_the_hourly_maximum(
    make_monitor: Any, stubborn: subprocess.Popen[str]
) -> None:
    """With max_restarts_per_hour 1, two held-back restarts are both tried and reported skipped: a hold-back
    tried nothing, so it never makes restarts "cannot keep up"."""
    monitor = make_monitor(agent_settings(stubborn.pid, max_restarts_per_hour=1))
    held = HeldBack()
    monitor.actions.restarts.strategy = held
    emergency = monitor.evaluator.rule.thresholds
    await monitor.start_monitoring()  # the first check enters emergency: held back once
    try:
        await wait_until(lambda: held.calls == 1)
        monitor.evaluator.rule.thresholds = NO_THRESHOLDS
        await monitor.check_now()
        monitor.evaluator.rule.thresholds = emergency
        await monitor.check_now()
        await wait_until(lambda: held.calls == 2)
        await wait_until(lambda: monitor.actions.restarts._idle)
    finally:
        await monitor.stop_monitoring()
    results = [r for r in monitor.recent_actions() if r.action == "restart:held"]
    assert len(results) == 2 and all(r.detail["skipped"] for r in results)
    assert not any(r.detail.get("cannot_keep_up") for r in monitor.recent_actions())
    assert terms_received(stubborn) == 0
