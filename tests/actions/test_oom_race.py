"""The proof: a service leaking into a 256 MiB memory cgroup is restarted gracefully by memmon before the
kernel OOM killer strikes (real cgroup, real memmon process, signal strategy)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.leaking import leak
from tests.test_cli import free_port, get_json, memmon, stop, wait_ready

AGENT_CONFIG = {
    "monitoring": {"check_interval": 5, "prometheus_port": 0},
    "thresholds": {
        "memory_warning_mb": 100_000, "memory_critical_mb": 200_000, "memory_emergency_mb": 300_000,
        "memory_percent_warning": 50, "memory_percent_critical": 60, "memory_percent_emergency": 70,
    },
    "auto_response": {
        "cooldown_seconds": 0.01,
        "emergency_actions": {
            "graceful_restart": {"strategy": "signal", "grace_seconds": 5, "cooldown_seconds": 0,
                                 "max_restarts_per_hour": 1000},
        },
    },
}  # fmt: skip


@pytest.fixture
def agent_on(tmp_path: Path) -> Iterator[Callable[[Path, dict[str, Any]], int]]:
    """Starts a real memmon watching a cgroup with a given config; stopped (SIGTERM) after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(cgroup: Path, config: dict[str, Any]) -> int:
        path = tmp_path / f"config-{len(started)}.json"
        path.write_text(json.dumps(config))
        port = free_port()
        proc = memmon("--config", str(path), "--cgroup", str(cgroup), "--health-port", str(port),
                      "--state-dir", str(tmp_path / f"state-{len(started)}"))  # fmt: skip
        started.append(proc)
        wait_ready(port, proc)
        return port

    yield start
    for proc in started:
        assert stop(proc)[0] == 0


def settle(port: int) -> None:
    """Wait until the agent is back to ok after a run (the next run starts from a quiet cgroup)."""
    deadline = time.monotonic() + 15
    while get_json(f"http://127.0.0.1:{port}/health")[1]["status"] != "healthy":
        assert time.monotonic() < deadline, "agent did not return to ok"
        time.sleep(0.05)


def test_graceful_restart_beats_the_oom_killer(v1_cgroup: Path, agent_on) -> None:
    """At 50 and 200 MB/s every leaking child gets SIGTERM and exits by itself with no OOM kill; at 1000 MB/s
    the count of graceful runs is reported. Without actions, the same child is OOM-killed (the control)."""
    control_port = agent_on(v1_cgroup, {**AGENT_CONFIG, "auto_response": {"enabled": False}})
    control = leak(v1_cgroup, 200, chunk=10)
    assert control[0] == "oom-killed", control
    settle(control_port)

    port = agent_on(v1_cgroup, AGENT_CONFIG)
    outcomes: dict[float, list[tuple[str, int]]] = {}
    for rate, runs in ((50, 2), (200, 3), (1000, 5)):
        outcomes[rate] = []
        for _ in range(runs):
            outcomes[rate].append(leak(v1_cgroup, rate, chunk=10))
            settle(port)
    for rate in (50, 200, 1000):
        graceful = sum(outcome == "graceful" for outcome, _ in outcomes[rate])
        print(f"{rate:>5} MB/s into 256 MiB: {graceful}/{len(outcomes[rate])} graceful, "
              f"{sum(k for _, k in outcomes[rate])} OOM kills")  # fmt: skip
    for rate in (50, 200):
        assert outcomes[rate] == [("graceful", 0)] * len(outcomes[rate]), outcomes[rate]
    _, health = get_json(f"http://127.0.0.1:{port}/health")
    restarts = [a for a in health["recent_actions"] if a["action"] == "restart:signal"]
    assert restarts and all(a["success"] for a in restarts[-3:])
