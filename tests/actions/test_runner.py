"""The automated response: what runs at each level, in library and agent mode, and the safety rules."""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from memmon.actions import restarting
from memmon.actions.signals import SignalRestart
from memmon.actions.targets import TargetProcesses
from memmon.evaluation.rules import ThresholdSet
from memmon.model import Level
from tests.waiting import wait_until

LOW = {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 100_000}
"""Thresholds under any process's RSS: this test process is critical, never emergency."""
NO_THRESHOLDS = ThresholdSet({}, {}, {}, {})
"""Swapped in to bring a running monitor back to ok."""


async def test_library_mode_critical_runs_gc_caches_and_throttle(start_agent) -> None:
    """Entering critical in library mode runs gc cycles, clears registered caches and shrinks the throttle;
    the alert carries the results, /health lists them and the counters count them."""
    agent = await start_agent({"thresholds": LOW}, first_check=False)
    monitor = agent.monitor

    @functools.cache
    def square(x: int) -> int:
        return x * x

    for i in range(100):
        square(i)
    plain_cache = {i: str(i) for i in range(50)}
    monitor.register_cache("square", square)
    monitor.register_cache("plain", plain_cache)
    await monitor.start_monitoring()
    evaluation = await monitor.check_now()
    assert evaluation.level == Level.CRITICAL
    assert square.cache_info().currsize == 0 and plain_cache == {}
    assert monitor.throttle.limit == monitor.throttle.capacity // 2
    actions = {result.action for result in monitor.recent_actions()}
    assert {"gc_cycles", "clear_caches", "throttle"} <= actions
    _, summary = await agent.get("/health/alerts?hours=1")
    (alert,) = summary["alerts"]
    assert {a["action"] for a in alert["metadata"]["actions"]} == {"gc_cycles", "clear_caches", "throttle"}
    _, health = await agent.get("/health")
    assert {a["action"] for a in health["recent_actions"]} >= {"gc_cycles", "clear_caches", "throttle"}
    _, metrics = await agent.get("/metrics")
    assert 'memmon_actions_total{action="clear_caches",outcome="success"} 1.0' in metrics
    assert "memory_cleanup_operations_total 2.0" in metrics  # gc cycles + cache clearing


async def test_throttle_recovers_when_the_level_clears(make_monitor) -> None:
    """The throttle shrinks at critical and is back to full capacity once memory is ok again."""
    monitor = make_monitor({"thresholds": LOW})
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        assert monitor.throttle.limit < monitor.throttle.capacity
        monitor.evaluator.rule.thresholds = NO_THRESHOLDS
        await monitor.check_now()
        assert monitor.level == Level.OK
        assert monitor.throttle.limit == monitor.throttle.capacity
    finally:
        await monitor.stop_monitoring()


async def test_dry_run_decides_and_does_nothing(make_monitor) -> None:
    """With dry_run, the actions are logged and recorded as dry runs; caches stay untouched."""
    monitor = make_monitor({"thresholds": LOW, "auto_response": {"dry_run": True}})
    cache = {"k": "v"}
    monitor.register_cache("c", cache)
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
    finally:
        await monitor.stop_monitoring()
    assert cache == {"k": "v"} and monitor.throttle.limit == monitor.throttle.capacity
    assert all(r.detail.get("dry_run") for r in monitor.recent_actions())


async def test_emergency_stops_nonessential_workers_cooperatively(make_monitor) -> None:
    """At emergency a registered worker's stop function is called and the worker thread exits by itself."""
    stop = threading.Event()
    worker = threading.Thread(target=lambda: stop.wait(30), daemon=True)
    worker.start()
    monitor = make_monitor(
        {"thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 3}}
    )
    monitor.register_nonessential("reporter", stop.set)
    await monitor.start_monitoring()
    try:
        assert (await monitor.check_now()).level == Level.EMERGENCY
        await wait_until(lambda: any(r.action == "stop_nonessential" for r in monitor.recent_actions()))
    finally:
        await monitor.stop_monitoring()
    worker.join(5)
    assert not worker.is_alive()


def graceful_child(ignore_term: bool = False) -> subprocess.Popen[str]:
    """A child that exits on SIGTERM (or ignores it) and says when it is ready."""
    code = (
        "import signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


async def test_signal_restart_waits_for_a_graceful_exit() -> None:
    """The signal strategy sends SIGTERM and reports success once the process has exited by itself."""
    child = graceful_child()
    restart = SignalRestart(TargetProcesses(pids=lambda: (child.pid,)), grace_seconds=10)
    waiter = asyncio.get_running_loop().run_in_executor(None, child.wait)
    result = await restart.restart("test")
    await waiter
    assert result.success and result.detail["signalled"] == [child.pid] and result.detail["killed"] == []
    assert child.returncode == -signal.SIGTERM


async def test_signal_restart_kills_only_when_configured() -> None:
    """A process ignoring SIGTERM is reported still running; with kill_after_grace it gets SIGKILL."""
    stubborn = graceful_child(ignore_term=True)
    try:
        reaped = asyncio.get_running_loop().run_in_executor(None, stubborn.wait)
        spared = await SignalRestart(
            TargetProcesses(pids=lambda: (stubborn.pid,)), grace_seconds=0.3
        ).restart("t")
        assert not spared.success and spared.detail["still_running"] == [stubborn.pid]
        assert stubborn.poll() is None
        killed = await SignalRestart(
            TargetProcesses(pids=lambda: (stubborn.pid,)), grace_seconds=0.3, kill_after_grace=True
        ).restart("t")
        await reaped
        assert killed.detail["killed"] == [stubborn.pid] and stubborn.returncode == -signal.SIGKILL
    finally:
        stubborn.kill()


def test_targets_never_include_memmon_itself_in_agent_mode(tmp_path: Path) -> None:
    """Agent mode drops memmon's own pid from the targets; a cgroup target means its members, read fresh."""
    import os

    assert TargetProcesses(pids=lambda: (1, os.getpid())).resolve()[0] == (1,)
    assert TargetProcesses(pids=lambda: (os.getpid(),), own_target=True).resolve()[0] == (os.getpid(),)
    (tmp_path / "cgroup.procs").write_text(f"10\n{os.getpid()}\n12\n")
    pids, source = TargetProcesses(pids=lambda: (), cgroup_dir=lambda: tmp_path).resolve()
    assert pids == (10, 12) and str(tmp_path) in source


def restart_settings(**restart: Any) -> dict[str, Any]:
    return {
        "thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 3},
        "auto_response": {"cooldown_seconds": 0.01, "emergency_actions": {"graceful_restart": restart}},
    }


async def test_restart_cooldown(make_monitor) -> None:
    """A second whole-target restart within the cool-down is skipped, naming the cool-down."""
    child = graceful_child()
    monitor = make_monitor(
        restart_settings(strategy="signal", grace_seconds=5, cooldown_seconds=3600, max_restarts_per_hour=5),
    )
    monitor.actions.restarts.strategy = SignalRestart(
        TargetProcesses(pids=lambda: (child.pid,)), grace_seconds=5
    )
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        await wait_until(lambda: any(r.action == "restart:signal" for r in monitor.recent_actions()))
        child.wait(5)
        emergency = monitor.evaluator.rule.thresholds
        monitor.evaluator.rule.thresholds = NO_THRESHOLDS
        assert (await monitor.check_now()).level == Level.OK
        await asyncio.sleep(0.05)  # past the level cool-down, far inside the restart cool-down
        monitor.evaluator.rule.thresholds = emergency
        assert (await monitor.check_now()).level == Level.EMERGENCY
        await wait_until(lambda: sum(r.action == "restart:signal" for r in monitor.recent_actions()) == 2)
    finally:
        await monitor.stop_monitoring()
    first, second = [r for r in monitor.recent_actions() if r.action == "restart:signal"]
    assert first.success and first.detail["signalled"] == [child.pid]
    assert not second.success and "cool-down" in (second.error or "")


async def test_restart_rereads_memory_unless_the_check_is_fresh(make_monitor, monkeypatch) -> None:
    """A check younger than FRESH_SECONDS is the re-read before a restart (one read only, after acting); an
    older one is re-read, and the restart stands down when the emergency is over by then."""
    child = graceful_child()
    quiet = {
        "check_interval": 3600,
        "kernel_events": False,
        "usage_watch": {"enabled": False},
    }  # no other check
    monitor = make_monitor(
        {**restart_settings(strategy="signal", grace_seconds=5, cooldown_seconds=0), "monitoring": quiet}
    )
    monitor.actions.restarts.strategy = SignalRestart(
        TargetProcesses(pids=lambda: (child.pid,)), grace_seconds=5
    )
    reads = []
    recheck = monitor.actions.restarts.recheck

    async def counted() -> Any:
        reads.append(1)
        return await recheck()

    monitor.actions.restarts.recheck = counted
    # Freshness by the setting, not by this machine's speed (a first check that counts a big heap's gc objects
    # can take over 100 ms in the whole suite).
    monkeypatch.setattr(restarting, "FRESH_SECONDS", 3600.0)
    await monitor.start_monitoring()  # the loop's first check enters emergency and starts the restart
    try:
        # No check of the test's own here: at emergency again once that restart is over, it would start a second.
        await wait_until(lambda: any(r.action == "restart:signal" for r in monitor.recent_actions()))
        child.wait(5)
        assert len(reads) == 1  # the confirmation after the restart only
        emergency = monitor.evaluator.rule.thresholds
        monitor.evaluator.rule.thresholds = NO_THRESHOLDS
        await monitor.check_now()
        monitor.evaluator.rule.thresholds = emergency
        await asyncio.sleep(0.05)  # past the level cool-down
        monkeypatch.setattr(restarting, "FRESH_SECONDS", 0.0)  # every check is stale now
        assert (await monitor.check_now()).level == Level.EMERGENCY
        monitor.evaluator.rule.thresholds = NO_THRESHOLDS  # over before the restart's re-read
        await wait_until(lambda: sum(r.action == "restart:signal" for r in monitor.recent_actions()) == 2)
    finally:
        await monitor.stop_monitoring()
    skipped = [r for r in monitor.recent_actions() if r.action == "restart:signal"][-1]
    assert "memory re-read before acting: now ok" in (skipped.error or "") and len(reads) == 2


async def test_liveness_strategy_fails_the_app_probe_only(start_agent) -> None:
    """kubernetes-liveness: after the grace time at emergency /health/live is 503 for the app, 200 for memmon
    itself (scope=agent), and passes again once memory is back to ok."""
    agent = await start_agent(restart_settings(strategy="kubernetes-liveness", grace_seconds=0.2))
    await wait_until(lambda: agent.monitor.liveness is not None and agent.monitor.liveness.failing)
    status, body = await agent.get("/health/live")
    assert status == 503 and body["scope"] == "app"
    assert (await agent.get("/health/live?scope=agent"))[0] == 200
    agent.monitor.evaluator.rule.thresholds = NO_THRESHOLDS
    await agent.monitor.check_now()
    assert (await agent.get("/health/live"))[0] == 200


async def test_systemd_strategy_runs_try_restart(make_monitor, tmp_path: Path, monkeypatch) -> None:
    """The systemd strategy runs `systemctl try-restart UNIT` (a recording stand-in: no systemd here)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{__import__('os').environ['PATH']}")
    monitor = make_monitor(restart_settings(strategy="systemd", unit="crawler.service"))
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        await wait_until(lambda: any(r.action == "restart:systemd" for r in monitor.recent_actions()))
    finally:
        await monitor.stop_monitoring()
    assert calls.read_text().split() == ["try-restart", "crawler.service"]
    (result,) = [r for r in monitor.recent_actions() if r.action == "restart:systemd"]
    assert result.success and result.detail["unit"] == "crawler.service"


@pytest.mark.parametrize("level", ["critical"])
async def test_http_hook_is_posted(make_monitor, level: str) -> None:
    """A level's http_hook receives the level, target and memory as JSON."""
    from tests.alerting.receivers import Receiver

    async with Receiver() as hook:
        monitor = make_monitor(
            {"thresholds": LOW, "auto_response": {f"{level}_actions": {"http_hook": hook.url + "/clear"}}}
        )
        await monitor.start_monitoring()
        try:
            await monitor.check_now()
            await hook.wait_for_requests(1)
        finally:
            await monitor.stop_monitoring()
    (request,) = hook.requests
    assert request.path == "/clear" and request.json["level"] == level and request.json["memory_usage_mb"] > 0
