"""History queries under load (issue 13, items 9 and 10): a real agent on 127.0.0.1 over a real SQLite store
holding a day of 1 s samples; checks keep running, memory per query is bounded, abandoned work stops, and SIGTERM
still stops within 5 s with the samples flushed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import aiohttp

from memmon.storage.store import MemoryStore
from tests.waiting import wait_until

DAY = 86_400
HISTORY = "/health/metrics/history?hours=24&max_points=10000"


def fill_day(state: Path, *, rows: int = DAY, now: float | None = None) -> None:
    """``rows`` samples evenly over the last day, straight into memmon's own schema (fast: one transaction)."""
    store = MemoryStore(state)
    store.open()
    store.close()
    end = time.time() if now is None else now
    step = DAY / rows
    with sqlite3.connect(state / "memmon.db") as conn:
        conn.executemany(
            "INSERT INTO samples (timestamp, level, target, memory_usage_mb, percent, effective_limit_mb, "
            "limit_source, rss_mb) VALUES (?, 'ok', 'self', ?, 1.0, 4096.0, 'host', ?)",
            ((end - DAY + i * step, 50.0 + (i % 600) / 10, 50.0) for i in range(rows)),
        )


async def get_status(agent, path: str, give_up_after: float = 60) -> int:
    try:
        async with agent.session.get(
            agent.base + path, timeout=aiohttp.ClientTimeout(total=give_up_after)
        ) as response:
            await response.read()
            return response.status
    except TimeoutError:
        return 0


async def test_history_and_gc_counts_never_wait_for_the_check_or_store_threads(start_agent, tmp_path) -> None:
    """With the check's sampling thread and the store's writer thread both held, a day of history and a fresh gc
    count are still answered: reads run on threads of their own."""
    fill_day(tmp_path / "state")
    agent = await start_agent()
    monitor = agent.monitor
    release = threading.Event()
    held = [
        asyncio.ensure_future(monitor._in_pool(lambda: release.wait(60))),
        asyncio.ensure_future(monitor.recorder._call(lambda: release.wait(60))),
    ]
    try:
        status, body = await agent.get(HISTORY, timeout=aiohttp.ClientTimeout(total=30))
        assert status == 200 and body["total"] >= DAY and body["count"] == 10_000
        status, body = await agent.get(
            "/health/memory?gc_objects=now", timeout=aiohttp.ClientTimeout(total=30)
        )
        assert status == 200 and body["gc_objects"] > 0
    finally:
        release.set()
        await asyncio.gather(*held)


async def test_checks_keep_running_while_ten_day_queries_run(start_agent, tmp_path) -> None:
    """10 concurrent day-long history queries: each is answered (200) or refused as busy (503), and the check loop
    kept completing checks meanwhile."""
    fill_day(tmp_path / "state")
    agent = await start_agent({"monitoring": {"check_interval": 0.1}})
    checks = agent.monitor.telemetry.checks
    before = checks.value()
    statuses = await asyncio.gather(*(get_status(agent, HISTORY) for _ in range(10)))
    advanced = checks.value() - before
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert advanced >= 3, f"only {advanced} checks while 10 history queries ran"


async def test_a_day_query_costs_memory_for_max_points_only(start_agent, tmp_path) -> None:
    """A 24 h query with max_points=1000 over 86,400 stored samples allocates a few MB at its peak (SQLite keeps
    the peaks), not the whole day (tens of MB as HistoryPoint objects)."""
    fill_day(tmp_path / "state")
    agent = await start_agent()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        status, body = await agent.get("/health/metrics/history?hours=24&max_points=1000")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200 and body["count"] == 1000 and body["total"] >= DAY
    assert 50.0 + 599 / 10 in {p["memory_usage_mb"] for p in body["samples"]}  # the stored peaks are kept
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


async def test_abandoned_history_requests_stop_their_queries(start_agent, tmp_path) -> None:
    """Clients that give up: their queries are interrupted and nothing stays running or waiting."""
    fill_day(tmp_path / "state", rows=600_000)
    agent = await start_agent()
    monitor = agent.monitor
    await asyncio.gather(*(get_status(agent, HISTORY, give_up_after=0.3) for _ in range(4)))
    await wait_until(lambda: monitor.reader.running == 0, within=30)
    # The count is taken on the reader's thread once the interrupted statement returns, a moment after the
    # caller's cancellation has already taken the query off the running set.
    await wait_until(lambda: monitor.reader.stopped >= 1, within=30)
    status, _ = await agent.get("/health/metrics/history?hours=0.01")
    assert status == 200


async def test_more_queries_than_the_gate_holds_are_refused_with_retry_after(start_agent, tmp_path) -> None:
    """Past 2 running and 8 waiting, a history request is a JSON 503 ``busy`` with ``Retry-After``."""
    fill_day(tmp_path / "state")
    agent = await start_agent()

    async def one() -> tuple[int, str | None, dict[str, object] | None]:
        async with agent.session.get(agent.base + HISTORY) as response:
            body = await response.json() if response.status == 503 else None
            await response.read()
            return response.status, response.headers.get("Retry-After"), body

    results = await asyncio.gather(*(one() for _ in range(14)))
    busy = [r for r in results if r[0] == 503]
    assert len(busy) >= 4, [r[0] for r in results]
    assert all(retry == "2" and body and body["error"] == "busy" for _, retry, body in busy)


async def test_concurrent_gc_counts_share_one_count(start_agent) -> None:
    """20 concurrent ``?gc_objects=now`` requests are all answered from one O(heap) count (one measured_at)."""
    agent = await start_agent()
    answers = await asyncio.gather(*(agent.get("/health/memory?gc_objects=now") for _ in range(20)))
    assert all(status == 200 for status, _ in answers)
    assert len({body["gc_objects_measured_at"] for _, body in answers}) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_sigterm_under_history_load_exits_0_within_5_s_with_samples_flushed(tmp_path) -> None:
    """SIGTERM while 10 day-long history queries run: exit 0 within 5 s, no traceback, and the samples up to the
    signal are in the store (the flush interval is 60 s, so only the final flush can have written them)."""
    state = tmp_path / "state"
    fill_day(state)
    port = free_port()
    env = {**os.environ, "MEMMON_STORAGE__FLUSH_INTERVAL_SECONDS": "60", "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "memmon", "--bind", "127.0.0.1", "--health-port", str(port),
            "--prometheus-port", "0", "--state-dir", str(state), "--check-interval", "0.2"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220 - started once, waited for in a thread
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(base + "/health/ready") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            async with asyncio.timeout(60):
                while not await ready():
                    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                    await asyncio.sleep(0.1)
            started = time.time()

            async def history() -> None:
                try:
                    async with session.get(
                        base + HISTORY, timeout=aiohttp.ClientTimeout(total=30)
                    ) as response:
                        await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    pass

            load = [asyncio.ensure_future(history()) for _ in range(10)]
            await asyncio.sleep(1.0)
            signalled = time.time()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 5.0)
            await asyncio.gather(*load)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    with sqlite3.connect(state / "memmon.db") as conn:
        (last,) = conn.execute("SELECT max(timestamp) FROM samples").fetchone()
        (since_start,) = conn.execute(
            "SELECT count(*) FROM samples WHERE timestamp >= ?", (started,)
        ).fetchone()
    assert since_start >= 2 and last >= signalled - 2.0, (since_start, last - signalled)
