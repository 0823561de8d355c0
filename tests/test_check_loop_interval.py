"""The check loop polls faster as memory nears its limit: the agent's loop uses the adaptive interval.

``adaptive_interval`` and ``FixedRateLoop(next_interval=...)`` are tested on their own; this pins their use by the
agent: a real process growing toward a configured limit is checked well before the base interval comes round.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memmon.model import MB, Evaluation
from tests.waiting import wait_until

BASE = 3.0
"""The configured check interval (s): far longer than the adaptive one near the limit."""

GROWER = (
    "import sys, time\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "chunks = []\n"
    "for _ in range(100):  # 2 MiB every 0.1 s: 20 MiB/s for 10 s, touched so that it is resident\n"
    "    chunks.append(b'\\x01' * (2 << 20))\n"
    "    time.sleep(0.1)\n"
    "time.sleep(120)\n"
)


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` from /proc (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def grower() -> Iterator[subprocess.Popen[str]]:
    """A child that, once sent a line, grows 20 MiB/s for 10 s; killed after the test."""
    child = subprocess.Popen(
        [sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait()


async def test_checks_come_faster_than_the_base_interval_as_memory_nears_the_limit(
    make_monitor: Any, grower: subprocess.Popen[str]
) -> None:
    """A target growing 20 MiB/s toward a limit ~50 MiB away at the second check: the next two checks each come
    within half the 3 s base interval (about 0.25 s, a tenth of the time left), not at the base interval."""
    # At the second check (BASE s of growth: 60 MiB) about 50 MiB of headroom is left.
    limit = rss_bytes(grower.pid) + int((20 * BASE + 50) * MB)
    monitor = make_monitor(
        {
            "target": {"pids": [grower.pid], "memory_limit_bytes": limit},
            "monitoring": {
                "check_interval": BASE,
                "kernel_events": False,
                "usage_watch": {"enabled": False},
            },
            "auto_response": {"enabled": False},
        }
    )
    checks: list[float] = []
    limits: set[str] = set()

    def seen(evaluation: Evaluation) -> None:
        checks.append(time.monotonic())
        limits.add(evaluation.sample.limit_source)

    monitor.add_check_listener(seen)
    assert grower.stdin is not None
    grower.stdin.write("go\n")
    grower.stdin.flush()
    await monitor.start_monitoring()
    try:
        await wait_until(lambda: len(checks) >= 2, within=2 * BASE)
        with contextlib.suppress(TimeoutError):  # at the base interval only a third check would come by then
            await wait_until(lambda: len(checks) >= 4, within=BASE)
    finally:
        await monitor.stop_monitoring()
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(checks)]
    assert limits == {"configured"}
    # The first gap is the base interval (no fill rate from a single check); after the second check the fill
    # rate is known and the limit near.
    assert len(gaps) >= 3 and gaps[1] < BASE / 2 and gaps[2] < BASE / 2, f"gaps between checks (s): {gaps}"
