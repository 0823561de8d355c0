"""GET /health/leaks and POST /health/actions/leak-snapshot, in library mode and in agent mode."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest


async def test_leak_snapshot_traces_allocations_in_library_mode(start_agent) -> None:
    """In library mode a snapshot is a short tracemalloc window reporting allocation sites; /health/leaks shows it."""
    agent = await start_agent()
    status, body = await agent.post("/health/actions/leak-snapshot?seconds=0.3")
    assert status == 200 and body["kind"] == "tracemalloc"
    report = body["report"]
    assert report["window_seconds"] >= 0.3 and isinstance(report["sites"], list)
    status, leaks = await agent.get("/health/leaks")
    assert status == 200 and leaks["enabled"] is False
    assert leaks["last_profile"]["taken_at"] == report["taken_at"]
    status, bad = await agent.post("/health/actions/leak-snapshot?seconds=9999")
    assert status == 400 and bad["parameter"] == "seconds"


@pytest.fixture
def holding_child() -> Iterator[subprocess.Popen[str]]:
    """A process holding 40 MiB, killed after the test."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(40 << 20); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    yield child
    child.kill()
    child.wait(10)


async def test_leak_snapshot_reads_the_target_mappings_in_agent_mode(start_agent, holding_child) -> None:
    """Watching another process, a snapshot lists its biggest mappings from /proc/PID/smaps."""
    child = holding_child
    agent = await start_agent({"target": {"pids": [child.pid]}, "server": {"api_token": "t"}})
    status, _ = await agent.post("/health/actions/leak-snapshot")
    assert status == 401
    status, body = await agent.post("/health/actions/leak-snapshot", headers={"Authorization": "Bearer t"})
    assert status == 200 and body["kind"] == "smaps"
    report = body["report"]
    assert report["pid"] == child.pid and report["rss_bytes"] >= 40 << 20
    assert report["mappings"][0]["rss_bytes"] >= 38 << 20
