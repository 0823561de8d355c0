"""History queries under load: do checks keep their cadence, does memory stay bounded, does SIGTERM still stop
cleanly? One real agent, one run.

Fills a fresh state directory with a day of 1 s samples (86,400 rows, written straight into SQLite), starts a real
``memmon`` on 127.0.0.1 (check interval 0.5 s) and then, one after the other:

1. **history burst**: rounds of 10 concurrent ``GET /health/metrics/history?hours=24&max_points=10000`` for a window
   (30 s; quick 3 s). Reported: requests answered (200) and refused (503 busy), the checks completed in the
   window against the expected count, the largest gap between two consecutive checks (read back from the store
   after the stop), RSS before, largest during (sampled every 0.2 s) and after.
2. **abandoned requests**: 10 history requests whose client gives up after 0.2 s, then the agent's CPU over the
   next 5 s (quick 2 s): near 0 when the work stops with the client.
3. **gc_objects=now**: ``GET /health/memory?gc_objects=now`` at about 40 req/s for 20 s (quick 2 s); checks
   completed in that window.
4. **SIGTERM** right after a fresh burst of 10 history requests: exit code, seconds to exit, and how many seconds
   of samples before the signal are missing from the store.

Usage: ``python bench/history_load.py [--quick]`` (``--quick``: smoke sizes, figures not meaningful).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchlib import cpu_seconds, free_port, memmon_argv, status_kib, stop, wait_http

CHECK_INTERVAL = 0.5
HISTORY = "/health/metrics/history?hours=24&max_points=10000"
DAY = 86_400


def fill_day(state_dir: Path, now: float) -> None:
    """A day of 1 s samples ending ``now``, in memmon's own schema (the store creates it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
    from memmon.storage.store import MemoryStore

    store = MemoryStore(state_dir)
    store.open()
    store.close()
    rows = [
        (now - DAY + i, "ok", "self", 50.0 + (i % 600) / 10, 1.0, 4096.0, "host", 50.0, 300.0, None, None,
         2000.0, 40.0, 0.0, None, 10, 30000, 0.001)
        for i in range(DAY)
    ]  # fmt: skip
    with sqlite3.connect(state_dir / "memmon.db") as conn:
        conn.executemany(f"INSERT INTO samples VALUES ({', '.join('?' * 18)})", rows)


async def checks_total(session: aiohttp.ClientSession, base: str) -> float:
    """``memmon_checks_total`` from ``/metrics``."""
    async with session.get(base + "/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("memmon_checks_total"):
                return float(line.split()[-1])
    raise RuntimeError("memmon_checks_total not in /metrics")


async def one(session: aiohttp.ClientSession, url: str, give_up_after: float = 120) -> int:
    """Status of one GET (0 when the client gave up or the connection failed)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=give_up_after)) as response:
            await response.read()
            return response.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


async def watch_rss(pid: int, peak: list[int], stop_event: asyncio.Event) -> None:
    """Largest VmRSS (KiB) seen every 0.2 s until ``stop_event``."""
    while not stop_event.is_set():
        peak[0] = max(peak[0], status_kib(pid))
        await asyncio.sleep(0.2)


async def burst(session: aiohttp.ClientSession, base: str, pid: int, window: float) -> dict[str, float]:
    """Rounds of 10 concurrent history requests for ``window`` seconds."""
    statuses: list[int] = []
    peak = [status_kib(pid)]
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_rss(pid, peak, done))
    rss_before = status_kib(pid)
    before = await checks_total(session, base)
    started = time.monotonic()
    while time.monotonic() - started < window:
        statuses += await asyncio.gather(*(one(session, base + HISTORY) for _ in range(10)))
    elapsed = time.monotonic() - started
    after = await checks_total(session, base)
    done.set()
    await watcher
    return {
        "ok": statuses.count(200),
        "busy": statuses.count(503),
        "failed": sum(1 for s in statuses if s not in (200, 503)),
        "checks": after - before,
        "expected": elapsed / CHECK_INTERVAL,
        "window": elapsed,
        "rss_before": rss_before / 1024,
        "rss_peak": peak[0] / 1024,
        "rss_after": status_kib(pid) / 1024,
    }


async def abandoned(session: aiohttp.ClientSession, base: str, pid: int, settle: float) -> float:
    """CPU percent of one core over ``settle`` s after 10 history requests abandoned at 0.2 s."""
    await asyncio.gather(*(one(session, base + HISTORY, give_up_after=0.2) for _ in range(10)))
    cpu, wall = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(settle)
    return 100 * (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


async def gc_now(session: aiohttp.ClientSession, base: str, window: float) -> dict[str, float]:
    """``?gc_objects=now`` at about 40 req/s for ``window`` s; checks completed meanwhile."""
    before = await checks_total(session, base)
    started = time.monotonic()
    tasks = []
    while time.monotonic() - started < window:
        tasks.append(asyncio.create_task(one(session, base + "/health/memory?gc_objects=now")))
        await asyncio.sleep(1 / 40)
    statuses = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    after = await checks_total(session, base)
    return {"requests": len(statuses), "ok": statuses.count(200), "checks": after - before,
            "expected": elapsed / CHECK_INTERVAL}  # fmt: skip


def largest_gap(db: Path, since: float, until: float) -> float:
    """Largest gap between consecutive stored samples with ``since <= timestamp <= until``."""
    with sqlite3.connect(db) as conn:
        stamps = [
            t
            for (t,) in conn.execute(
                "SELECT timestamp FROM samples WHERE timestamp BETWEEN ? AND ? ORDER BY timestamp",
                (since, until),
            )
        ]
    return max((b - a for a, b in itertools.pairwise(stamps)), default=float("nan"))  # fmt: skip


async def main_async(quick: bool) -> None:
    window, settle, gc_window = (3.0, 2.0, 2.0) if quick else (30.0, 5.0, 20.0)
    with tempfile.TemporaryDirectory(prefix="memmon-history-load-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        fill_day(state, time.time())
        port = free_port()
        argv = memmon_argv(port, state, "--check-interval", str(CHECK_INTERVAL), "--log-level", "WARNING")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220 - once
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/health/ready", proc)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
                burst_started = time.time()
                load = await burst(session, base, proc.pid, window)
                burst_ended = time.time()
                cpu = await abandoned(session, base, proc.pid, settle)
                gc = await gc_now(session, base, gc_window)
                pending = [asyncio.create_task(one(session, base + HISTORY)) for _ in range(10)]
                await asyncio.sleep(0.5)
                signalled = time.time()
                proc.send_signal(signal.SIGTERM)
                t0 = time.monotonic()
                code = await asyncio.to_thread(proc.wait, 30)
                exit_seconds = time.monotonic() - t0
                await asyncio.gather(*pending)
        finally:
            stop(proc)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        db = state / "memmon.db"
        with sqlite3.connect(db) as conn:
            (last,) = conn.execute("SELECT max(timestamp) FROM samples").fetchone()
        gap = largest_gap(db, burst_started, burst_ended)
    print(f"# history under load (memmon, check interval {CHECK_INTERVAL} s, a day of 1 s samples)")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| history burst: requests ok / busy (503) / failed | {load['ok']} / {load['busy']} / {load['failed']} |"
    )
    print(f"| history burst: checks done / expected in {load['window']:.0f} s | {load['checks']:.0f} / "
          f"{load['expected']:.0f} |")  # fmt: skip
    print(f"| history burst: largest gap between checks (s) | {gap:.2f} |")
    print(f"| RSS before / peak / after (MiB) | {load['rss_before']:.0f} / {load['rss_peak']:.0f} / "
          f"{load['rss_after']:.0f} |")  # fmt: skip
    print(f"| CPU after 10 abandoned requests (% of a core, {settle:.0f} s) | {cpu:.1f} |")
    print(f"| gc_objects=now: requests ok / sent | {gc['ok']} / {gc['requests']} |")
    print(f"| gc_objects=now: checks done / expected | {gc['checks']:.0f} / {gc['expected']:.0f} |")
    print(f"| SIGTERM under load: exit code, seconds to exit | {code}, {exit_seconds:.2f} |")
    print(f"| SIGTERM under load: samples missing before the signal (s) | {max(0.0, signalled - last):.2f} |")
    medians = statistics.median([load["checks"] / load["expected"], gc["checks"] / gc["expected"]])
    print()
    print(f"median share of expected checks done under load: {medians:.2f}")
    if code != 0:
        print("agent stderr (tail):", *stderr.splitlines()[-5:], sep="\n  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes; figures not meaningful")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    main()
