"""The OOM race where kernel notifications cannot help: memmon unprivileged (no ``cgroup.event_control``), the
kernel events switched off, a cgroup removed and created again, and a kernel that strikes first anyway (real v1
cgroups on this host, real memmon processes, the usage watcher doing the work)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.leaking import leak
from tests.cgroups import v1_memory_cgroup
from tests.test_cli import clean_env, free_port, get_json, stop, wait_ready

MIB = 2**20
NOBODY = 65534

AT_80 = {
    "memory_warning_mb": 100_000, "memory_critical_mb": 200_000, "memory_emergency_mb": 300_000,
    "memory_percent_warning": 60, "memory_percent_critical": 70, "memory_percent_emergency": 80,
}  # fmt: skip
RESTART = {"strategy": "signal", "grace_seconds": 5, "cooldown_seconds": 0, "max_restarts_per_hour": 1000}


def config(**monitoring: Any) -> dict[str, Any]:
    """Shipped settings but for the thresholds (emergency 80 %), the signal strategy and lifted cool-downs."""
    return {
        "monitoring": {"prometheus_port": 0, **monitoring},
        "thresholds": AT_80,
        "auto_response": {"cooldown_seconds": 0.01, "emergency_actions": {"graceful_restart": RESTART}},
    }


@pytest.fixture
def cgroup_256() -> Iterator[Path]:
    """A fresh 256 MiB v1 memory cgroup whose files the unprivileged user may read (not write)."""
    with v1_memory_cgroup(256 * MIB) as directory:
        yield directory


@pytest.fixture
def agent() -> Iterator[Callable[..., tuple[int, subprocess.Popen[str]]]]:
    """Starts a real memmon on a cgroup (optionally as nobody); stopped with SIGTERM (exit 0) after the test."""
    started: list[subprocess.Popen[str]] = []
    # pytest's tmp_path lies under a root-only directory: nobody could not reach its config and state there.
    scratch = Path(tempfile.mkdtemp(prefix="memmon-test-agent-"))
    os.chmod(scratch, 0o755)

    def start(cgroup: Path, settings: dict[str, Any], *, unprivileged: bool = False) -> tuple[int, Any]:
        work = scratch / f"agent-{len(started)}"
        work.mkdir()
        os.chmod(work, 0o777)  # nobody writes its state here
        path = work / "config.json"
        path.write_text(json.dumps(settings))
        port = free_port()
        user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if unprivileged else []
        proc = subprocess.Popen(
            [*user, sys.executable, "-m", "memmon", "--config", str(path), "--cgroup", str(cgroup),
             "--health-port", str(port), "--state-dir", str(work / "state")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env(),
        )  # fmt: skip
        started.append(proc)
        wait_ready(port, proc)
        return port, proc

    try:
        yield start
        for proc in started:
            assert stop(proc)[0] == 0
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def settle(port: int) -> None:
    """Until the agent is back at ok or warning (a leak from there enters critical and emergency afresh)."""
    deadline = time.monotonic() + 40
    while get_json(f"http://127.0.0.1:{port}/health")[1]["status"] not in ("healthy", "warning"):
        assert time.monotonic() < deadline, "agent did not leave critical/emergency"
        time.sleep(0.02)


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a series' samples in /metrics whose labels include ``labels``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_unprivileged_agent_beats_the_oom_killer_without_kernel_events(cgroup_256: Path, agent) -> None:
    """memmon as nobody cannot arm cgroup.event_control (listed as degraded kernel_events); with the shipped 5 s
    interval and emergency at 80 %, the usage watcher still ends 200 and 1000 MB/s leaks gracefully."""
    port, _ = agent(cgroup_256, config(), unprivileged=True)
    _, health = get_json(f"http://127.0.0.1:{port}/health")
    assert "kernel_events" in health["degraded"], health["degraded"]
    _, memory = get_json(f"http://127.0.0.1:{port}/health/memory")
    reasons = {d["source"]: d["reason"] for d in memory["degraded"]}
    assert "cgroup.event_control" in reasons["kernel_events"], reasons
    assert metric(port, "memmon_source_degraded", source="kernel_events") == 1
    assert metric(port, "memmon_source_degraded", source="usage_watch") == 0
    outcomes = []
    for rate in (200, 200, 1000, 1000, 1000):
        outcomes.append((rate, *leak(cgroup_256, rate, uid=NOBODY)))
        settle(port)
    assert all(outcome == "graceful" and kills == 0 for _, outcome, kills in outcomes), outcomes
    assert metric(port, "memmon_memory_events_total", kind="watch") >= len(outcomes)


def test_kernel_events_switched_off_arm_nothing(cgroup_256: Path, agent) -> None:
    """monitoring.kernel_events false: no eventfd is open in the agent and nothing is degraded; the usage
    watcher alone ends a 1000 MB/s leak gracefully."""
    port, proc = agent(cgroup_256, config(kernel_events=False))
    links = [os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()]
    assert "anon_inode:[eventfd]" not in links
    assert get_json(f"http://127.0.0.1:{port}/health")[1]["degraded"] == []
    assert leak(cgroup_256, 1000) == ("graceful", 0)


def test_recreated_cgroup_is_watched_again(cgroup_256: Path, agent) -> None:
    """The watched cgroup removed and created again (a unit or container restart): kernel notifications are
    re-armed on the new cgroup and, with a 30 s check interval, a 200 MB/s leak there still ends gracefully."""
    port, proc = agent(cgroup_256, config(check_interval=30))

    def eventfds() -> int:
        links = []
        for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed since the listing (a connection, a file)
                links.append(os.readlink(fd))
        return links.count("anon_inode:[eventfd]")

    armed = eventfds()
    assert armed >= 3  # three usage thresholds and the OOM notifier at least
    cgroup_256.rmdir()
    time.sleep(0.3)
    cgroup_256.mkdir()
    (cgroup_256 / "memory.limit_in_bytes").write_text(str(256 * MIB))
    deadline = time.monotonic() + 10
    while eventfds() < armed:  # re-armed by the check the usage watcher triggers on the new cgroup
        assert time.monotonic() < deadline, f"{eventfds()} of {armed} notifications re-armed"
        time.sleep(0.05)
    assert leak(cgroup_256, 200) == ("graceful", 0)
    settle(port)
    _, memory = get_json(f"http://127.0.0.1:{port}/health/memory")
    assert not memory["degraded"], memory["degraded"]


def test_restart_beaten_by_the_oom_killer_is_reported_as_oom_killed(cgroup_256: Path, agent) -> None:
    """A service that ignores SIGTERM keeps leaking until the kernel OOM-kills it: the restart's result is
    ``oom_killed`` (not success) in /health, in memmon_actions_total and in the emergency alert's metadata."""
    port, _ = agent(cgroup_256, config())
    assert leak(cgroup_256, 200, ignore_sigterm=True)[0] == "oom-killed"
    deadline = time.monotonic() + 10
    while not metric(port, "memmon_actions_total", action="restart:signal", outcome="oom_killed"):
        assert time.monotonic() < deadline, "no oom_killed restart recorded"
        time.sleep(0.05)
    assert metric(port, "memmon_actions_total", action="restart:signal", outcome="success") == 0
    _, health = get_json(f"http://127.0.0.1:{port}/health")
    restart = [a for a in health["recent_actions"] if a["action"] == "restart:signal"][-1]
    assert restart["outcome"] == "oom_killed" and not restart["success"], restart
    assert restart["detail"]["oom_kills"] >= 1 and "OOM killer" in restart["error"], restart
    deadline = time.monotonic() + 10
    while True:  # the alert log: the emergency alert the restart answered carries its outcome
        _, log = get_json(f"http://127.0.0.1:{port}/health/alerts?hours=1")
        answered = [  # the threshold alert (the oom_kill alert, emergency too, may share its timestamp)
            a["metadata"].get("restart")
            for a in log["alerts"]
            if a["severity"] == "emergency" and a["component"] == "cgroup_memory"
        ]
        if any(answered) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {"action": "restart:signal", "outcome": "oom_killed"}.items() <= (answered[0] or {}).items(), (
        answered
    )
