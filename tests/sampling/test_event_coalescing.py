"""A storm of kernel notifications runs a bounded number of checks (issue 13, item 12).

A real cgroup v1 memory cgroup with its usage thresholds armed by the agent (``cgroup.event_control``) and a
child process allocating and freeing a few MiB across the warning line as fast as it can: the kernel signals the
threshold at every crossing, hundreds of times a second.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.kits.schedule import EVENT_GAP_SECONDS
from memmon.model import Evaluation
from tests.cgroups import v1_memory_cgroup
from tests.conftest import MonitorFactory

MIB = 1 << 20
CHECK_INTERVAL = 2.0
STORM_SECONDS = 6.0
AMPLITUDE_MIB = 8

# Moves itself into the cgroup argv[1], holds argv[2] MiB, says "ready"; at "go" allocates and frees
# argv[3] MiB (pages written) in a loop until killed. With MALLOC_MMAP_THRESHOLD_ below 1 MiB each 1 MiB
# chunk is its own mmap, so freeing gives it back to the kernel at once: the usage goes up and down.
THRASHER = """
import os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
base = [b"\\x01" * (1 << 20) for _ in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.readline()
while True:
    chunks = [b"\\x01" * (1 << 20) for _ in range(int(sys.argv[3]))]
    del chunks
"""


@pytest.fixture
def big_memcg() -> Iterator[Path]:
    """A fresh v1 memory cgroup with a 1 GiB limit: far from the thrashing, adaptive polling stays at the
    check interval, so the checks counted are the event-triggered ones and the schedule's."""
    with v1_memory_cgroup(1 << 30, prefix="memmon-storm") as directory:
        yield directory


@pytest.fixture
def thrasher(big_memcg: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The thrashing child in ``big_memcg``, holding its base and waiting for "go"; killed afterwards."""
    child = subprocess.Popen(
        [sys.executable, "-c", THRASHER, str(big_memcg), "40", str(AMPLITUDE_MIB)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    try:
        assert child.stdout is not None
        assert select.select([child.stdout], [], [], 20)[0], "the child did not start"
        assert child.stdout.readline().strip() == b"ready"
        yield child
    finally:
        child.kill()
        child.wait(10)


def _usage(cgroup: Path) -> int:
    return int((cgroup / "memory.usage_in_bytes").read_text())


async def test_notification_storm_runs_a_bounded_number_of_checks(
    big_memcg: Path, thrasher: subprocess.Popen[bytes], make_monitor: MonitorFactory
) -> None:
    """Hundreds of threshold notifications a second run at most one check per EVENT_GAP_SECONDS (plus polls)."""
    warning_mb = _usage(big_memcg) // MIB + AMPLITUDE_MIB // 2
    monitor = make_monitor(
        {
            "target": {"cgroup": str(big_memcg)},
            "monitoring": {"check_interval": CHECK_INTERVAL},
            "thresholds": {
                "memory_warning_mb": warning_mb,
                "memory_critical_mb": warning_mb + 300,
                "memory_emergency_mb": warning_mb + 400,
            },
            "auto_response": {"enabled": False},
        }
    )
    checks: list[float] = []

    def counted(_evaluation: Evaluation) -> None:
        checks.append(time.monotonic())

    monitor.add_check_listener(counted)
    await monitor.start_monitoring()
    try:
        deadline = time.monotonic() + 20
        while not (monitor.kernel.memory_events and warning_mb * MIB in monitor.kernel.memory_events.armed):
            assert time.monotonic() < deadline, "the warning threshold was never armed"
            await asyncio.sleep(0.05)
        assert not monitor.kernel.memory_events.problems
        events_before = monitor.telemetry.memory_events.total()
        assert thrasher.stdin is not None
        thrasher.stdin.write(b"go\n")
        thrasher.stdin.flush()
        started = time.monotonic()
        await asyncio.sleep(STORM_SECONDS)
        ended = time.monotonic()
        storm = [t for t in checks if started <= t <= ended]
        notifications = monitor.telemetry.memory_events.total() - events_before
    finally:
        await monitor.stop_monitoring()
    gap = min(CHECK_INTERVAL, EVENT_GAP_SECONDS)
    # One check per gap for the storm, the schedule's polls, and slack for crossings that may raise the level
    # (after a check that caught the child's low point, the next crossing up runs a check at once).
    bound = STORM_SECONDS / gap + STORM_SECONDS / CHECK_INTERVAL + STORM_SECONDS + 2
    print(
        f"{notifications:.0f} notifications, {len(storm)} checks in {ended - started:.1f} s (bound {bound:.0f})"
    )
    if notifications < 3 * bound:
        pytest.skip(f"only {notifications:.0f} notifications in {STORM_SECONDS} s here: no storm to coalesce")
    assert len(storm) <= bound
    assert len(storm) >= STORM_SECONDS / CHECK_INTERVAL - 1, "checks must go on during the storm"
