"""The runner's rules for a pre-fork server: recycling goes on while the emergency lasts, failures (and only
failures) count against the hourly cap, and the cap's end says that restarts cannot keep up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from memmon.sampling.prefork import children_of
from tests.waiting import wait_until

MASTER = """
import os, signal, sys, time
for _ in range({workers}):
    if os.fork() == 0:
        if {stubborn}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
        os._exit(0)
print("ready", flush=True)
time.sleep(120)
"""

RESPAWNING = """
import os, time
def spawn():
    if os.fork() == 0:
        held = b"\\x01" * (4 << 20)  # 4 MiB of its own (unique) memory
        time.sleep(120)
        os._exit(0)
for _ in range(3):
    spawn()
print("ready", flush=True)
while True:
    os.wait()
    spawn()
"""


@pytest.fixture
def stubborn_server() -> Iterator[int]:
    """A master with two workers that ignore SIGTERM (never replaced); yields the master's pid."""
    master = subprocess.Popen(
        [sys.executable, "-c", MASTER.format(workers=2, stubborn=True)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert master.stdout is not None and master.stdout.readline().strip() == "ready"
    try:
        yield master.pid
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()


async def test_failed_recycles_hit_the_hourly_cap_and_say_restarts_cannot_keep_up(
    make_monitor, stubborn_server: int
) -> None:
    """Workers that do not exit: each recycle fails after grace_seconds and counts; after max_restarts_per_hour
    failures memmon stops and records "restarts cannot keep up" (cannot_keep_up in the result)."""
    monitor = make_monitor(
        {
            "target": {"server": "generic", "pids": [stubborn_server]},
            "thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 3},
            "auto_response": {
                "emergency_actions": {"graceful_restart": {"grace_seconds": 0.2, "max_restarts_per_hour": 2}}
            },
        }
    )
    assert monitor.actions.restarts.strategy is not None
    assert monitor.actions.restarts.strategy.name == "recycle:worker"
    await monitor.start_monitoring()
    try:
        await wait_until(
            lambda: any(r.detail.get("cannot_keep_up") for r in monitor.recent_actions()), within=20
        )
    finally:
        await monitor.stop_monitoring()
    recycles = [r for r in monitor.recent_actions() if r.action == "recycle:worker"]
    failed = [r for r in recycles if not r.detail.get("skipped") and not r.detail.get("cannot_keep_up")]
    assert len(failed) == 2 and all("still running after 0.2s" in (r.error or "") for r in failed)
    capped = next(r for r in recycles if r.detail.get("cannot_keep_up"))
    assert "restarts cannot keep up: 2 failed" in (capped.error or "")
    assert len(children_of(stubborn_server)) == 2  # nothing was killed: kill_after_grace is off


@pytest.fixture
def respawning_server() -> Iterator[int]:
    """A master that forks a new worker whenever one exits (three at a time); yields the master's pid."""
    master = subprocess.Popen(
        [sys.executable, "-c", RESPAWNING], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert master.stdout is not None and master.stdout.readline().strip() == "ready"
    try:
        yield master.pid
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()


async def test_recycling_goes_on_while_the_emergency_lasts(make_monitor, respawning_server: int) -> None:
    """At emergency one worker after another is recycled in one episode (the emergency never ends here: the
    test process itself is over the 3 MiB line), until every worker has had its turn; then "cannot keep up"
    is reported and recycling continues."""
    monitor = make_monitor(
        {
            "target": {"server": "generic", "pids": [respawning_server]},
            "thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 3},
            "auto_response": {"emergency_actions": {"graceful_restart": {"grace_seconds": 2}}},
        }
    )
    await monitor.start_monitoring()
    try:
        await wait_until(
            lambda: any(r.detail.get("cannot_keep_up") for r in monitor.recent_actions()), within=20
        )
    finally:
        await monitor.stop_monitoring()
    recycles = [r for r in monitor.recent_actions() if r.action == "recycle:worker" and "pid" in r.detail]
    assert len({r.detail["pid"] for r in recycles}) >= 3
    # At emergency the next worker goes as soon as the previous exited: its replacement is not awaited.
    assert all(r.success and r.detail["replaced_by"] is None for r in recycles[:3])
    note = next(r for r in monitor.recent_actions() if r.detail.get("cannot_keep_up"))
    assert "still emergency after recycling 3 worker(s)" in (note.error or "")
    assert not note.detail["skipped"]


async def test_one_check_recycles_every_worker_over_its_budget_one_at_a_time(
    make_monitor, respawning_server: int
) -> None:
    """A single check that finds workers over their budget recycles them one after another (each once the
    previous one's replacement is up), reading their RSS afresh, without waiting for the next check."""
    quiet = {"check_interval": 3600, "kernel_events": False, "usage_watch": {"enabled": False}}
    monitor = make_monitor(
        {
            "target": {"server": "generic", "pids": [respawning_server], "worker_budget_mb": 1},
            "thresholds": {
                "memory_warning_mb": 100_000,
                "memory_critical_mb": 200_000,
                "memory_emergency_mb": 300_000,
            },
            "monitoring": quiet,
        }
    )
    await monitor.start_monitoring()
    try:
        await wait_until(
            lambda: sum(r.action == "recycle:worker" for r in monitor.recent_actions()) >= 3, within=20
        )
        assert monitor.telemetry.checks.value() == 1
    finally:
        await monitor.stop_monitoring()
    recycles = [r for r in monitor.recent_actions() if r.action == "recycle:worker"]
    assert len(recycles) == 3 and all(r.success and r.detail["replaced_by"] for r in recycles)
    assert all("over its budget of 1 MiB" in str(r.detail["reason"]) for r in recycles)
    assert len({r.detail["pid"] for r in recycles}) == 3
