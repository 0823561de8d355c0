"""A target that does not exist, or stops existing, is visible as missing and ends in a defined state.

Real processes (a python child killed by the test), real v1 memory cgroups (created and removed by the test) and a
real agent over HTTP; no mocks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from memmon.assembly import build_thresholds
from memmon.config import load_settings
from memmon.evaluation.evaluator import Evaluator
from memmon.evaluation.rules import ThresholdRule
from memmon.model import Alert, Level, TargetState
from memmon.sampling.base import SourceUnavailable
from memmon.sampling.process import ProcessSampler
from tests.cgroups import v1_memory_cgroup
from tests.prefork.agent import running_agent
from tests.samples import process_sample
from tests.waiting import wait_until

# Optionally moves itself into the cgroup given as argv[1] ("-" for none), then holds as many MiB (pages
# touched) as each stdin line says, answering "holding N".
HOLDER = r"""
import sys
if sys.argv[1] != "-":
    with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
        procs.write("0")
held = b""
print("ready", flush=True)
for line in sys.stdin:
    held = b""
    held = b"\x01" * (int(line) * 1024 * 1024)
    print("holding", int(line), flush=True)
"""


HOST_QUIET = {
    "system_percent_warning": 99.7,
    "system_percent_critical": 99.8,
    "system_percent_emergency": 99.9,
}
"""The machine is shared: other tests' memory must not raise the level these tests judge."""


class Holder:
    """A child process whose resident memory the test sets."""

    def __init__(self, cgroup: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cgroup) if cgroup is not None else "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        assert ready, "child did not answer"
        return self.proc.stdout.readline().strip()

    def hold(self, mib: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{mib}\n")
        self.proc.stdin.flush()
        assert self._read() == f"holding {mib}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def holder() -> Iterator[Holder]:
    child = Holder()
    try:
        yield child
    finally:
        child.kill()


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped (free, unless the kernel reuses it at once)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert not Path(f"/proc/{child.pid}").exists()
    return child.pid


# --- item 8: a target that does not exist at start-up ---------------------------------------------------------


def test_pid_that_does_not_exist_is_unknown_not_ready_and_named_at_start() -> None:
    """--pid of no process: /health says status unknown, target missing, not ready; a start-up line names it."""
    pid = dead_pid()
    with running_agent(["--pid", str(pid), "--check-interval", "0.2"]) as agent:
        health = agent.get("/health")
        while health["status"] == "starting":
            health = agent.get("/health")
        assert health["status"] == "unknown"
        assert health["target_state"] == "missing"
        assert f"pid {pid}" in health["target_problem"]
        assert health["ready"] is False
        assert health["memory_usage_mb"] is None
        memory = agent.get("/health/memory")
        assert memory["target_state"] == "missing" and memory["memory_usage_mb"] is None
        try:
            agent.get("/health/ready")
            raise AssertionError("/health/ready answered 200 for a missing target")
        except OSError as exc:  # urllib raises HTTPError (an OSError) for 503
            assert getattr(exc, "code", None) == 503
    start_lines = [line for line in agent.log.splitlines() if "target pid:" in line and "not found" in line]
    assert start_lines, agent.log
    assert "WARNING" in start_lines[0] and f"pid {pid} does not exist" in start_lines[0]


def test_cgroup_that_does_not_exist_is_unknown_and_named_at_start() -> None:
    """--cgroup of no directory: status unknown, target missing, not ready, and a start-up line names the path."""
    name = f"/memmon-nonexistent-{uuid.uuid4().hex[:8]}"
    with running_agent(["--cgroup", name, "--check-interval", "0.2"]) as agent:
        health = agent.get("/health")
        while health["status"] == "starting":
            health = agent.get("/health")
        assert health["status"] == "unknown"
        assert health["target_state"] == "missing"
        assert "no such cgroup directory" in health["target_problem"]
        assert health["ready"] is False
    start_lines = [line for line in agent.log.splitlines() if f"target cgroup:{name}" in line]
    assert start_lines and "WARNING" in start_lines[0], agent.log


# --- item 18: a target that goes away ---------------------------------------------------------------------------


async def test_pid_that_exits_in_warning_resolves_its_alert_and_is_unknown(
    holder: Holder, start_agent, caplog: pytest.LogCaptureFixture
) -> None:
    """A --pid in warning that exits: its alert resolves with reason target_missing, memory null, status unknown."""
    caplog.set_level(logging.INFO, logger="memmon.monitor")
    holder.hold(64)
    agent = await start_agent(
        {"target": {"pids": [holder.pid]}, "thresholds": {"memory_warning_mb": 32, **HOST_QUIET}},
        first_check=False,
    )
    monitor = agent.monitor
    received: list[Alert] = []
    monitor.alert_manager.add_handler(received.append)
    transitions: list[Alert] = []  # the check loop runs too: every check's transitions, whoever ran it
    monitor.add_check_listener(lambda evaluation: transitions.extend(evaluation.transitions))
    await monitor.start_monitoring()
    evaluation = await monitor.check_now()
    assert evaluation.level == Level.WARNING
    assert [a.component for a in monitor.active_alerts()] == ["process_memory"]

    holder.kill()
    evaluation = await monitor.check_now()
    sample = evaluation.sample
    assert sample.target_state is TargetState.MISSING and sample.target_bytes is None
    assert f"pid {holder.pid} exited" in (sample.target_problem or "")
    assert monitor.active_alerts() == ()
    resolved = [a for a in transitions if a.state == "resolved"]
    assert [a.component for a in resolved] == ["process_memory"]
    assert resolved[0].metadata["resolved_reason"] == "target_missing"
    assert "gone" in resolved[0].message and f"pid {holder.pid}" in resolved[0].message
    assert "process_memory" not in {c.component for c in evaluation.components}
    assert evaluation.level == Level.OK  # nothing judged is above ok: the host is
    down = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory level warning -> ok")]
    assert down == [f"memory level warning -> ok: target pid:{holder.pid} is gone (process pid:{holder.pid}: pid "
                    f"{holder.pid} exited); all components ok"]  # fmt: skip

    await wait_until(
        lambda: any(a.state == "resolved" for a in received)
    )  # told to people like any resolution
    status, health = await agent.get("/health")
    assert status == 200 and health["status"] == "unknown" and health["memory_usage_mb"] is None
    assert health["active_alerts"] == 0 and health["ready"] is False
    # Later checks keep the defined state and fire nothing new.
    again = await monitor.check_now()
    assert again.sample.target_state is TargetState.MISSING
    assert [a.state for a in transitions] == ["firing", "resolved"]


async def test_pid_that_exits_while_leaking_resolves_its_leak_alert(holder: Holder, start_agent) -> None:
    """A --pid whose leak alert fires and that then exits: the memory_leak alert resolves with reason
    target_missing (findings end like threshold alerts) and no finding stays active."""
    leak = {"enabled": True, "monitoring_window": 1.5, "min_growth_mb": 8, "confirm_checks": 2}
    agent = await start_agent(
        {
            "target": {"pids": [holder.pid]},
            "monitoring": {"check_interval": 3600, "leak_detection": leak},
            "thresholds": {
                "memory_warning_mb": 4000,
                "memory_critical_mb": 5000,
                "memory_emergency_mb": 6000,
                **HOST_QUIET,
            },
        },
        first_check=False,
    )
    monitor = agent.monitor
    # What people are told: the leak watch's transitions go there, not to check listeners.
    received: list[Alert] = []
    monitor.alert_manager.add_handler(received.append)
    await monitor.start_monitoring()
    for step in range(40):  # growing 8 MiB a step, 0.1 s apart: confirmed after the 1.5 s window is covered
        holder.hold(16 + 8 * step)
        await monitor.check_now()
        if any(a.component == "memory_leak" for a in monitor.active_alerts()):
            break
        await asyncio.sleep(0.1)
    assert [a.component for a in monitor.active_alerts()] == ["memory_leak"]

    holder.kill()
    evaluation = await monitor.check_now()
    assert evaluation.sample.target_state is TargetState.MISSING
    assert monitor.active_alerts() == ()
    await wait_until(lambda: any(a.component == "memory_leak" and a.state == "resolved" for a in received))
    ended = [a for a in received if a.component == "memory_leak" and a.state == "resolved"]
    assert [a.metadata["resolved_reason"] for a in ended] == ["target_missing"]
    assert "gone" in ended[0].message


def test_unreadable_target_keeps_its_alert_and_a_gone_one_resolves() -> None:
    """Evaluator: a target unreadable this check keeps its alert (missing data is no recovery); a gone one
    resolves it with reason target_missing."""
    evaluator = Evaluator(ThresholdRule(build_thresholds(load_settings(None, environ={}))))
    first = evaluator.evaluate(process_sample(1500, at=1000.0))
    assert first.level == Level.WARNING
    unreadable = replace(
        process_sample(1500, at=1001.0),
        target_bytes=None,
        process=None,
        target_state=TargetState.UNREADABLE,
        target_problem="pid 42: access denied",
    )
    kept = evaluator.evaluate(unreadable)
    assert kept.transitions == () and [a.severity for a in kept.active_alerts] == [Level.WARNING]
    gone = replace(unreadable, timestamp=1002.0, monotonic=1002.0, target_state=TargetState.MISSING,
                   target_problem="pid 42 exited")  # fmt: skip
    ended = evaluator.evaluate(gone)
    assert [(a.state, a.metadata["resolved_reason"]) for a in ended.transitions] == [
        ("resolved", "target_missing")
    ]
    assert ended.transitions[0].resolved_at == 1002.0
    assert ended.active_alerts == () and ended.level == Level.OK


async def test_removed_cgroup_in_warning_resolves_and_a_recreated_one_is_found_again(start_agent) -> None:
    """A --cgroup in warning that is removed: alert resolved (target_missing), status unknown; recreated (a
    systemd restart): located again and judged again."""
    with v1_memory_cgroup(256 * 1024 * 1024) as directory:
        child = Holder(directory)
        child.hold(200)  # > 70 % of 256 MiB
        # Only the test's checks: a check between the kill and the rmdir would see the memory freed and
        # resolve the alert as cleared, not as target_missing.
        quiet = {"check_interval": 3600, "kernel_events": False, "usage_watch": {"enabled": False}}
        agent = await start_agent(
            {"target": {"cgroup": str(directory)}, "monitoring": quiet, "thresholds": HOST_QUIET},
            first_check=False,
        )
        monitor = agent.monitor
        transitions: list[Alert] = []  # the check loop runs too: every check's transitions, whoever ran it
        monitor.add_check_listener(lambda evaluation: transitions.extend(evaluation.transitions))
        await monitor.start_monitoring()
        evaluation = await monitor.check_now()
        assert evaluation.sample.target_state is TargetState.PRESENT
        assert evaluation.level >= Level.WARNING
        # Out to the root cgroup first: v1 does not move the charge with the task (move_charge_at_immigrate 0), so
        # the cgroup's usage does not drop before it is removed.
        (directory.parent / "cgroup.procs").write_text(str(child.pid))
        directory.rmdir()
        child.kill()

        evaluation = await monitor.check_now()
        assert evaluation.sample.target_state is TargetState.MISSING
        assert "no such cgroup directory" in (evaluation.sample.target_problem or "")
        assert monitor.active_alerts() == ()
        resolved = [a for a in transitions if a.state == "resolved"]
        assert resolved and all(a.metadata["resolved_reason"] == "target_missing" for a in resolved)
        status, health = await agent.get("/health")
        assert health["status"] == "unknown" and health["target_state"] == "missing"

        directory.mkdir()
        (directory / "memory.limit_in_bytes").write_text(str(256 * 1024 * 1024))
        again = Holder(directory)
        try:
            evaluation = await monitor.check_now()
            assert evaluation.sample.target_state is TargetState.PRESENT
            assert evaluation.sample.target_bytes is not None
            status, health = await agent.get("/health")
            assert status == 200 and health["status"] == "healthy" and health["ready"] is True
        finally:
            again.kill()


# --- item 21: /health/memory of a cgroup target describes the cgroup's processes --------------------------------


async def test_cgroup_target_memory_lists_the_cgroups_processes(start_agent) -> None:
    """With --cgroup, /health/memory's processes and rss_mb are the cgroup's members, never memmon itself."""
    with v1_memory_cgroup(256 * 1024 * 1024) as directory:
        child = Holder(directory)
        try:
            child.hold(48)
            agent = await start_agent({"target": {"cgroup": str(directory)}})
            await agent.monitor.check_now()
            status, memory = await agent.get("/health/memory")
            assert status == 200
            pids = [p["pid"] for p in memory["processes"]]
            assert pids == [child.pid]
            assert os.getpid() not in pids
            assert memory["rss_mb"] == memory["processes"][0]["rss_mb"]
            assert memory["rss_mb"] >= 48
            assert memory["gc_objects"] is None and memory["gc_collections"] is None
        finally:
            child.kill()


def test_members_sampler_tells_an_empty_cgroup_from_a_missing_one() -> None:
    """Members mode: an empty cgroup is an empty sample, no cgroup is absent, beyond members_limit is a problem."""
    with v1_memory_cgroup(256 * 1024 * 1024) as directory:
        there = [True]

        def members() -> list[int] | None:
            if not there[0]:
                return None
            return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]

        sampler = ProcessSampler(members=members, members_limit=2)
        empty = sampler.sample()
        assert empty.processes == () and empty.rss_bytes == 0 and not sampler.absent
        children = [Holder(directory) for _ in range(3)]
        try:
            full = sampler.sample()
            assert len(full.processes) == 2
            assert {p.pid for p in full.processes} < {c.pid for c in children}
            assert sampler.problem == "read 2 of the 3 processes of the cgroup"
            assert not sampler.is_own_process and full.gc_objects is None
            there[0] = False
            with pytest.raises(SourceUnavailable, match="the cgroup is not there"):
                sampler.sample()
            assert sampler.absent
        finally:
            for child in children:
                child.kill()
