"""End to end on a real memory cgroup: a child grows past warning and critical, the alerts fire, then resolve."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.model import Alert, Level

# Moves itself into the cgroup given as argv[1], then holds as many MiB (pages touched) as each stdin line says.
GROWER = r"""
import sys
with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
    procs.write("0")
held = b""
print("ready", flush=True)
for line in sys.stdin:
    held = b""
    held = b"\x01" * (int(line) * 1024 * 1024)
    print("holding", int(line), flush=True)
"""


class Grower:
    """A child process in the cgroup whose memory the test sets."""

    def __init__(self, cgroup: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GROWER, str(cgroup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        assert ready, "child did not answer"
        return self.proc.stdout.readline().strip()

    def hold(self, mib: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{mib}\n")
        self.proc.stdin.flush()
        assert self.read() == f"holding {mib}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def grower(v1_cgroup: Path) -> Iterator[Grower]:
    child = Grower(v1_cgroup)
    try:
        yield child
    finally:
        child.stop()


async def test_child_in_limited_cgroup_fires_and_resolves_alerts(
    v1_cgroup: Path, grower: Grower, start_agent
) -> None:
    """Working set crossing 70 % then 85 % of a 256 MiB limit fires warning then critical; freeing resolves."""
    # The MB thresholds keep their defaults (1 GiB and up), so only the percent of the cgroup limit decides.
    agent = await start_agent({"target": {"cgroup": str(v1_cgroup)}})
    received: list[Alert] = []
    agent.monitor.alert_manager.add_handler(received.append)
    monitor = agent.monitor

    async def level_at(mib: int) -> Level:
        grower.hold(mib)
        evaluation = await monitor.check_now()
        assert evaluation.sample.cgroup is not None
        return evaluation.level

    assert await level_at(40) == Level.OK
    status, body = await agent.get("/health/memory")
    assert body["limit_source"] == "cgroup" and body["effective_limit_mb"] == 256.0
    assert body["target_kind"] == "cgroup" and body["cgroup"]["version"] == 1
    assert await level_at(195) == Level.WARNING  # ~76 % of 256 MiB with the interpreter itself
    assert await level_at(225) == Level.CRITICAL  # ~88 %
    assert await level_at(30) == Level.OK
    await monitor.alert_manager.drain(wait_seconds=2)
    states = [(a.severity.label, a.state) for a in received if a.component == "cgroup_memory"]
    assert states == [
        ("warning", "firing"),
        ("warning", "resolved"),
        ("critical", "firing"),
        ("critical", "resolved"),
    ]
    critical = next(a for a in received if a.severity is Level.CRITICAL and a.state == "firing")
    assert critical.metadata["limit_source"] == "cgroup"
    assert critical.threshold == pytest.approx(0.85 * 256, abs=0.1)
    status, summary = await agent.get("/health/alerts?hours=1")
    assert status == 200
    assert (summary["total_alerts"], summary["active_alerts"], summary["resolved_alerts"]) == (2, 0, 2)
    assert summary["by_component"] == {"cgroup_memory": 2}
