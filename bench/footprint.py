"""Footprint, /metrics scrape cost and /health under load: a real memmon next to Debian's node_exporter, one run.

Starts a real ``memmon`` (1 s check interval, ``/metrics`` on its health port) and Debian's
``prometheus-node-exporter`` (its default collectors) side by side on 127.0.0.1, then prints three tables:

1. Footprint: over a window (60 s; quick 3 s) in which both are scraped every 5 s, the RSS at the end, the largest
   RSS seen (sampled every 0.25 s) and the peak since start (VmHWM), and the CPU share (utime+stime from
   /proc/PID/stat over wall time, percent of one CPU).
2. ``/metrics`` scrape latency p50/p99 (200 scrapes each; quick 10) and bytes per scrape, both targets and both
   ways of asking (plain, and as Prometheus asks: ``Accept-Encoding: gzip``), interleaved round-robin with the
   order rotated every round so the noise of the machine hits all alike; one keep-alive connection per target.
3. ``/health`` under an open-loop, fixed-rate load from a second process (500 and 2000 req/s for 20 s each; quick
   200 req/s for 1 s): per-request latency counted from the request's *scheduled* start (no coordinated omission),
   errors, achieved rate, and the largest gap between two consecutive checks during the load, read back from
   memmon's ``/health/metrics/history`` (the loop should keep its 1 s cadence; a gap over 1.5 s is a missed check).
   Then, when ``wrk`` is installed, one short closed-loop run for the maximum throughput (wrk does not hold a rate,
   so its latencies are not comparable with the fixed-rate rows).

Before table 1, the idle figures: VmRSS, RssAnon and RssFile of each process 20 s after start (quick 1 s), before
any scrape, and how many modules memmon imported by then (its own import-time report: ``PYTHONPROFILEIMPORTTIME=1``,
the environment form of ``-X importtime``, one stderr line per module; no RSS cost, measured) with the modules a
configuration may leave out that it did import.

Ends with the goals of the issue next to the figures, each marked met or missed. Every process it starts is stopped
at the end. Usage: ``python bench/footprint.py [--quick] [--baseline DIR] [--memmon-env KEY=VALUE ...]``
(``--quick``: smoke sizes, figures not meaningful; ``--baseline DIR``: also start a memmon imported from the source
tree ``DIR`` (the directory holding the ``memmon`` package, e.g. ``agent/`` of ``git archive <commit>``) for the idle
figures and table 1, so before and after come from one run; ``--memmon-env``: an environment variable for the
measured memmon, e.g. ``MALLOC_ARENA_MAX=2``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import http.client
import itertools
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchlib import cpu_seconds, free_port, memmon_argv, percentile, status_kib, stop, wait_http
from memmon import __version__ as memmon_version
from memmon.config import GUIDE_ENV

NODE_EXPORTER = "prometheus-node-exporter"
MISSED_CHECK_GAP = 1.5
"""Seconds between two consecutive checks above which (at a 1 s interval) a check was missed."""
SCRAPE_HEADERS = {
    "plain": {"Accept": "text/plain;version=0.0.4"},
    "gzip": {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"},
}
"""The two ways of asking for /metrics: plain, and as Prometheus does (it always accepts gzip)."""


@dataclass(frozen=True)
class Sizes:
    footprint_seconds: float
    scrape_every: float
    scrapes: int
    loads: tuple[tuple[int, float], ...]
    """(requests/s, seconds) of each fixed-rate /health load."""
    connections: int
    wrk_seconds: int
    settle: float
    idle_after: float
    """Seconds after start at which the idle figures are read (no scrape before them)."""


FULL = Sizes(60, 5, 200, ((500, 20), (2000, 20)), 16, 5, 3, 20)
QUICK = Sizes(3, 1, 10, ((200, 1),), 4, 1, 1, 1)
BASELINE = "memmon (baseline)"
OPTIONAL_MODULES = (
    "smtplib",
    "memmon.alerting.email",
    "memmon.alerting.alertmanager",
    "memmon.alerting.slack",
    "memmon.alerting.webhook",
    "memmon.actions.kubernetes",
    "memmon.sampling.allocations",
    "memmon.sampling.mappings",
    "tracemalloc",
    "memmon.exposition.livepage",
)
"""Modules that the bench's configuration (log channel only, host target, no tracemalloc, nobody on the page)
does not use: each one it imported anyway is named under the idle table."""


@dataclass
class Target:
    name: str
    version: str
    proc: subprocess.Popen[bytes]
    port: int
    connection: http.client.HTTPConnection | None = None
    reconnects: int = 0
    log: Path | None = None
    """A memmon's stderr, holding its import-time report."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def scrape(self, mode: str) -> tuple[float, int, bytes]:
        """One GET /metrics on the kept-alive connection: (seconds, bytes on the wire, decoded body)."""
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                started = time.perf_counter()
                self.connection.request("GET", "/metrics", headers=SCRAPE_HEADERS[mode])
                response = self.connection.getresponse()
                wire = response.read()
                elapsed = time.perf_counter() - started
            except (http.client.HTTPException, ConnectionError):
                # a kept-alive connection the server closed: reconnect once; the failed try is not timed
                self.connection.close()
                self.connection = None
                self.reconnects += 1
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"{self.name} /metrics answered {response.status}")
            body = gzip.decompress(wire) if response.getheader("Content-Encoding") == "gzip" else wire
            return elapsed, len(wire), body
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------
# The load generator (runs in its own process: ``footprint.py --loadgen JSON``)


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; responses must carry Content-Length."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length is None:
            self.waiter.set_exception(ValueError("response without Content-Length"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        self.waiter.set_result(status)

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _fixed_rate_load(
    port: int, path: str, rate: float, seconds: float, connections: int
) -> dict[str, Any]:
    """``rate * seconds`` GETs scheduled at ``start + i / rate``, request i on connection ``i % connections`` (as
    wrk2 does). A connection sends its next request at its scheduled time, or when its previous one completes if
    that is later; latency is counted from the scheduled time, so a stall is charged to every request it delays.
    Nothing new is sent more than 10 s after the schedule ends (counted as not sent); each request times out at 5 s.
    """
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: memmon-bench\r\nAccept: */*\r\n\r\n"
    ).encode()
    total = int(rate * seconds)
    from_schedule: list[float] = []
    from_send: list[float] = []
    send_lag: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    last_done = [0.0]

    async def connect() -> _HttpConnection:
        _, protocol = await loop.create_connection(lambda: _HttpConnection(loop), "127.0.0.1", port)
        return protocol

    pool = [await connect() for _ in range(connections)]
    start = loop.time() + 0.2
    wall_start = time.time() + 0.2
    cutoff = start + seconds + 10

    async def worker(index: int) -> None:
        conn: _HttpConnection | None = pool[index]
        for i in range(index, total, connections):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if loop.time() > cutoff:
                errors["not sent (backlog past the cut-off)"] += len(range(i, total, connections))
                break
            try:
                if conn is None or conn.closed:
                    conn = await connect()
                sent = loop.time()
                status = await asyncio.wait_for(conn.request(request), 5.0)
            except (OSError, TimeoutError, ValueError) as exc:
                errors[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            done = loop.time()
            last_done[0] = max(last_done[0], done)
            if status != 200:
                errors[f"HTTP {status}"] += 1
                continue
            from_schedule.append(done - scheduled)
            from_send.append(done - sent)
            send_lag.append(sent - scheduled)
        if conn is not None:
            conn.close()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker(c) for c in range(connections)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    span = (last_done[0] - start) if last_done[0] else 0.0
    wall_end = wall_start + (loop.time() - start)
    ms = 1000.0

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p99": None, "max": None}
        return {
            "p50": percentile(values, 0.5) * ms,
            "p99": percentile(values, 0.99) * ms,
            "max": max(values) * ms,
        }

    return {
        "scheduled": total,
        "ok": len(from_schedule),
        "errors": dict(errors),
        "achieved": len(from_schedule) / span if span > 0 else 0.0,
        "from_schedule_ms": stats(from_schedule),
        "from_send_ms": stats(from_send),
        "send_lag_ms": stats(send_lag),
        "cpu_percent": 100
        * (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime)
        / max(span, 1e-9),
        "wall_start": wall_start,
        "wall_end": wall_end,
    }


def loadgen_main(spec: str) -> None:
    params = json.loads(spec)
    result = asyncio.run(
        asyncio.wait_for(
            _fixed_rate_load(
                params["port"], params["path"], params["rate"], params["seconds"], params["connections"]
            ),
            params["seconds"] + 30,
        )
    )
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# The measurements


@dataclass(frozen=True)
class Idle:
    rss_kib: int
    anon_kib: int
    file_kib: int
    threads: int
    modules: frozenset[str] | None
    """What a memmon imported so far (from its import-time report); None for other processes."""


def imported_modules(log: Path) -> frozenset[str]:
    """Module names in a CPython import-time report (``import time: self | cumulative | <indent>name``)."""
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name)
    return frozenset(names)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise KeyError(f"Threads not in /proc/{pid}/status")


def measure_idle(targets: list[Target]) -> dict[str, Idle]:
    """Each process's resident memory now (VmRSS = RssAnon + RssFile + RssShmem) and a memmon's imports."""
    return {
        t.name: Idle(
            status_kib(t.pid),
            status_kib(t.pid, "RssAnon"),
            status_kib(t.pid, "RssFile"),
            _threads(t.pid),
            imported_modules(t.log) if t.log is not None else None,
        )
        for t in targets
    }


@dataclass
class Footprint:
    rss_end_kib: int = 0
    rss_max_kib: int = 0
    hwm_kib: int = 0
    cpu_percent: float = 0.0
    scrapes: int = 0
    wall: tuple[float, float] = (0.0, 0.0)


def measure_footprint(targets: list[Target], seconds: float, scrape_every: float) -> dict[str, Footprint]:
    """Both processes over the same window, each scraped every ``scrape_every`` s (gzip accepted, as Prometheus)."""
    found = {t.name: Footprint() for t in targets}
    cpu0 = {t.name: cpu_seconds(t.pid) for t in targets}
    wall0, t0 = time.time(), time.monotonic()
    next_scrape = t0
    while (now := time.monotonic()) < t0 + seconds:
        if now >= next_scrape:
            for target in targets:
                target.scrape("gzip")
                found[target.name].scrapes += 1
            next_scrape += scrape_every
        for target in targets:
            entry = found[target.name]
            entry.rss_max_kib = max(entry.rss_max_kib, status_kib(target.pid))
        time.sleep(max(0.0, min(0.25, next_scrape - time.monotonic(), t0 + seconds - time.monotonic())))
    elapsed = time.monotonic() - t0
    for target in targets:
        entry = found[target.name]
        entry.cpu_percent = 100 * (cpu_seconds(target.pid) - cpu0[target.name]) / elapsed
        entry.rss_end_kib = status_kib(target.pid)
        entry.rss_max_kib = max(entry.rss_max_kib, entry.rss_end_kib)
        entry.hwm_kib = status_kib(target.pid, "VmHWM")
        entry.wall = (wall0, time.time())
    return found


@dataclass
class ScrapeFigures:
    seconds: list[float] = field(default_factory=list)
    wire_bytes: list[int] = field(default_factory=list)
    body_bytes: int = 0
    series: int = 0


def measure_scrapes(targets: list[Target], rounds: int) -> dict[tuple[str, str], ScrapeFigures]:
    """``rounds`` rounds; each scrapes every (target, mode) once, the order rotated by one every round."""
    combos = [(t, mode) for mode in SCRAPE_HEADERS for t in targets]
    for target, mode in combos * 3:  # warm-up, not counted
        target.scrape(mode)
    found = {(t.name, mode): ScrapeFigures() for t, mode in combos}
    for index in range(rounds):
        shift = index % len(combos)
        for target, mode in combos[shift:] + combos[:shift]:
            elapsed, wire, body = target.scrape(mode)
            figures = found[(target.name, mode)]
            figures.seconds.append(elapsed)
            figures.wire_bytes.append(wire)
            figures.body_bytes = len(body)
            figures.series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return found


@dataclass
class CheckGaps:
    checks: int
    max_gap: float | None
    missed: int


def check_gaps(memmon: Target, wall_start: float, wall_end: float) -> CheckGaps:
    """Consecutive check timestamps from memmon's history over [wall_start, wall_end], plus the last check before
    and the first after (so a gap across either edge counts): the largest gap and how many exceed 1.5 s."""
    url = f"http://127.0.0.1:{memmon.port}/health/metrics/history?hours=1&max_points=10000"
    with urllib.request.urlopen(url, timeout=10) as response:
        samples = json.load(response)["samples"]
    stamps = sorted(
        datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp() for s in samples
    )
    inside = [t for t in stamps if wall_start <= t <= wall_end]
    before = [t for t in stamps if t < wall_start][-1:]
    after = [t for t in stamps if t > wall_end][:1]
    edges = before + inside + after
    gaps = [b - a for a, b in itertools.pairwise(edges)]
    return CheckGaps(len(inside), max(gaps) if gaps else None, sum(1 for g in gaps if g > MISSED_CHECK_GAP))


@dataclass
class LoadRun:
    label: str
    rate: int | None
    seconds: float
    connections: int
    result: dict[str, Any]
    memmon_cpu_percent: float
    memmon_rss_after_kib: int
    gaps: CheckGaps


def run_fixed_load(memmon: Target, rate: int, seconds: float, connections: int, logs: Path) -> LoadRun:
    spec = {
        "port": memmon.port,
        "path": "/health",
        "rate": rate,
        "seconds": seconds,
        "connections": connections,
    }
    cpu0, t0 = cpu_seconds(memmon.pid), time.monotonic()
    with open(logs / f"loadgen-{rate}.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--loadgen", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=seconds + 60)
        finally:
            stop(proc)
    cpu_share = 100 * (cpu_seconds(memmon.pid) - cpu0) / (time.monotonic() - t0)
    if proc.returncode != 0:
        raise RuntimeError(
            f"load generator failed ({proc.returncode}): {(logs / f'loadgen-{rate}.err').read_text()}"
        )
    result = json.loads(out)
    time.sleep(MISSED_CHECK_GAP)  # so the first check after the load is in the history
    gaps = check_gaps(memmon, result["wall_start"], result["wall_end"])
    return LoadRun(
        f"{rate} req/s, fixed rate",
        rate,
        seconds,
        connections,
        result,
        cpu_share,
        status_kib(memmon.pid),
        gaps,
    )


def run_wrk(memmon: Target, seconds: int, connections: int) -> LoadRun | str:
    """Closed loop, one wrk thread (the other CPU is memmon's): the most /health answers per second."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not installed (Debian package `wrk`): maximum throughput not measured"
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            f"http://127.0.0.1:{memmon.port}/health"]  # fmt: skip
    cpu0, t0, wall0 = cpu_seconds(memmon.pid), time.monotonic(), time.time()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu_share = 100 * (cpu_seconds(memmon.pid) - cpu0) / (time.monotonic() - t0)
    wall1 = time.time()
    if done.returncode != 0:
        return f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}"
    text = done.stdout

    def latency_ms(label: str) -> float | None:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if not match:
            return None
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    total = int(m.group(1)) if (m := re.search(r"(\d+) requests in", text)) else 0
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    errors: dict[str, int] = {}
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups(), strict=True)}
        errors = {k: v for k, v in errors.items() if v}
    if non2xx:
        errors["non-2xx"] = non2xx
    rate = float(m.group(1)) if (m := re.search(r"Requests/sec:\s+([\d.]+)", text)) else 0.0
    result = {
        "scheduled": total,
        "ok": total - non2xx,
        "errors": errors,
        "achieved": rate,
        "from_schedule_ms": {"p50": None, "p99": None, "max": None},
        "from_send_ms": {"p50": latency_ms("50%"), "p99": latency_ms("99%"), "max": None},
        "send_lag_ms": {"p50": None, "p99": None, "max": None},
        "cpu_percent": None,
    }
    time.sleep(MISSED_CHECK_GAP)
    gaps = check_gaps(memmon, wall0, wall1)
    return LoadRun(
        "max (wrk, closed loop)", None, seconds, connections, result, cpu_share, status_kib(memmon.pid), gaps
    )


# ---------------------------------------------------------------------------------------------------------------
# Processes, versions, printing


IMPORT_REPORT = {"PYTHONPROFILEIMPORTTIME": "1"}
"""A memmon's environment addition: CPython writes one ``import time:`` stderr line per module it imports."""


def child_env() -> dict[str, str]:
    """This environment less memmon's own variables, so the agent runs on its defaults and the flags given."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MEMMON_") and k not in GUIDE_ENV}


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0].strip() if lines else "unknown"


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_header(title: str, quick: bool, versions: dict[str, str], load_at_start: float) -> None:
    print(f"# {title} — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {sys.version.split()[0]}; "
        + "; ".join(f"{name}: {version}" for name, version in versions.items())
    )
    print(
        f"load average (1 min) at start {load_at_start:.2f}, at end {os.getloadavg()[0]:.2f} "
        "(other work on this machine shows here)"
    )
    if quick:
        print("**quick smoke run: sizes shrunk, figures not meaningful**")


def print_idle(
    idle: dict[str, Idle], targets: list[Target], sizes: Sizes, memmon_env: dict[str, str]
) -> None:
    print()
    print(f"## Idle: {sizes.idle_after:g} s after start, no scrape yet (memmon checking every 1 s)")
    print()
    print("| process | VmRSS MiB | RssAnon MiB | RssFile MiB | threads | modules imported |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in targets:
        entry = idle[target.name]
        count = "-" if entry.modules is None else f"{len(entry.modules)}"
        print(
            f"| {target.name} | {entry.rss_kib / 1024:.1f} | {entry.anon_kib / 1024:.1f} | "
            f"{entry.file_kib / 1024:.1f} | {entry.threads} | {count} |"
        )
    print()
    for target in targets:
        modules = idle[target.name].modules
        if modules is not None:
            unused = [name for name in OPTIONAL_MODULES if name in modules]
            print(
                f"- {target.name}: imported {', '.join(unused)} although this configuration does not use them"
                if unused
                else f"- {target.name}: none of {', '.join(OPTIONAL_MODULES)} imported (unused here)"
            )
    if memmon_env:
        print(f"- memmon (not the baseline) ran with {' '.join(f'{k}={v}' for k, v in memmon_env.items())}")
    print(
        "- Modules: the agent's own import-time report (PYTHONPROFILEIMPORTTIME=1, one stderr line per module "
        "imported); RSS figures from /proc/PID/status."
    )


def print_footprint(found: dict[str, Footprint], targets: list[Target], sizes: Sizes) -> None:
    print()
    print(
        f"## 1. Footprint: {sizes.footprint_seconds:g} s window after {sizes.settle:g} s of start-up, memmon "
        f"checking every 1 s, both scraped every {sizes.scrape_every:g} s (gzip accepted, as Prometheus)"
    )
    print()
    print(
        "| process | RSS at end MiB | RSS max in window MiB | peak since start (VmHWM) MiB | CPU % of one CPU "
        "| scrapes |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for target in targets:
        entry = found[target.name]
        print(
            f"| {target.name} | {entry.rss_end_kib / 1024:.1f} | {entry.rss_max_kib / 1024:.1f} | "
            f"{entry.hwm_kib / 1024:.1f} | {entry.cpu_percent:.2f} | {entry.scrapes} |"
        )
    print()
    print(
        "RSS from /proc/PID/status (VmRSS sampled every 0.25 s; VmHWM includes start-up); CPU = utime+stime "
        "from /proc/PID/stat over the window's wall time, scrapes served included."
    )


def print_scrapes(found: dict[tuple[str, str], ScrapeFigures], targets: list[Target], rounds: int) -> None:
    print()
    print(
        f"## 2. /metrics scrape: {rounds} scrapes per row, the {len(found)} rows interleaved round-robin "
        "(order rotated each round), one keep-alive connection per target, after 3 warm-up rounds"
    )
    print()
    print("| target | asked | p50 ms | p99 ms | max ms | bytes on the wire | bytes of text | series |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode in SCRAPE_HEADERS:
        for target in targets:
            f = found[(target.name, mode)]
            asked = "plain" if mode == "plain" else "gzip accepted (as Prometheus)"
            print(
                f"| {target.name} | {asked} | {percentile(f.seconds, 0.5) * 1000:.2f} | "
                f"{percentile(f.seconds, 0.99) * 1000:.2f} | {max(f.seconds) * 1000:.2f} | "
                f"{statistics.mean(f.wire_bytes):,.0f} | {f.body_bytes:,} | {f.series:,} |"
            )
    print()
    print(
        "Latency = request sent to whole body read, by a Python http.client in this process (same client for "
        "both). Series = sample lines of the text (node_exporter exposes far more, so per scrape it does more work)."
    )


def print_loads(runs: list[LoadRun], notes: list[str], idle: CheckGaps, idle_seconds: float) -> None:
    print()
    print(
        "## 3. /health under load from a second process (open loop, fixed rate; latency from each request's "
        "scheduled start)"
    )
    print()
    print(
        "| load | s | conns | 2xx | errors | achieved req/s | p50 ms | p99 ms | max ms | p99 from send ms | "
        "p99 send lag ms | memmon CPU % | loadgen CPU % | memmon RSS after MiB | checks | max check gap s | "
        "gaps > 1.5 s |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| none (window of table 1) | {idle_seconds:g} | - | - | - | - | - | - | - | - | - | - | - | - | "
        f"{idle.checks} | {fmt(idle.max_gap)} | {idle.missed} |"
    )
    for run in runs:
        r = run.result
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        sched, send, lag = r["from_schedule_ms"], r["from_send_ms"], r["send_lag_ms"]
        p50 = sched["p50"] if run.rate is not None else send["p50"]
        p99 = sched["p99"] if run.rate is not None else send["p99"]
        print(
            f"| {run.label} | {run.seconds:g} | {run.connections} | {r['ok']} | {errors} | {r['achieved']:.0f} | "
            f"{fmt(p50)} | {fmt(p99)} | {fmt(sched['max'])} | {fmt(send['p99'])} | {fmt(lag['p99'])} | "
            f"{run.memmon_cpu_percent:.1f} | {fmt(r['cpu_percent'], 1)} | {run.memmon_rss_after_kib / 1024:.1f} | "
            f"{run.gaps.checks} | {fmt(run.gaps.max_gap)} | {run.gaps.missed} |"
        )
    print()
    for note in notes:
        print(f"- {note}")
    print(
        "- Fixed-rate rows: a Python asyncio load generator in its own process; request i is scheduled at "
        "start + i/rate on connection i mod conns and sent then, or when that connection's previous answer "
        "arrives if later; p50/p99/max count from the scheduled start, so a stall is charged to every request it "
        "holds up. 'p99 from send' leaves out queueing behind a slow answer; 'send lag' is how late the generator "
        "itself sent (timer and event-loop delay, part of the scheduled-start latency). Achieved = 2xx answers / "
        "(last answer - first scheduled start)."
    )
    print(
        "- wrk row: closed loop (each connection sends when the last answer arrives), so it shows capacity; its "
        "p50/p99 are from send, subject to coordinated omission, not comparable with the fixed-rate rows."
    )
    print(
        "- Checks: memmon's check timestamps from /health/metrics/history?hours=1 within the load (plus the last "
        "before and first after); a gap > 1.5 s at the 1 s interval is a missed check."
    )


def print_goals(
    quick: bool,
    found: dict[str, Footprint],
    scrapes: dict[tuple[str, str], ScrapeFigures],
    have_node_exporter: bool,
    runs: list[LoadRun],
    idle: dict[str, Idle],
) -> None:
    print()
    print("## Goals from the issue, next to this run's figures")
    print()
    print("| goal | figure | verdict |")
    print("|---|---|---|")
    memmon = found["memmon"]
    rss_mb = memmon.rss_end_kib / 1024  # memmon's MB is 2^20 bytes (memmon.model.MB)
    verdict = "met" if rss_mb < 50 else "missed"
    print(
        f"| idle RSS < 50 MB (MB = 2^20 bytes, as memmon reports) | memmon RSS at the end of the "
        f"footprint window: {rss_mb:.1f} MiB (max {memmon.rss_max_kib / 1024:.1f}) | {verdict} |"
    )
    idle_mib = idle["memmon"].rss_kib / 1024
    print(
        f"| idle agent under 40 MiB (issue 14: import nothing a configuration does not use) | VmRSS before any "
        f"scrape: {idle_mib:.1f} MiB | {'met' if idle_mib < 40 else 'missed'} |"
    )
    if have_node_exporter:
        ours, theirs = scrapes[("memmon", "gzip")].seconds, scrapes[("node_exporter", "gzip")].seconds
        o50, o99 = percentile(ours, 0.5) * 1000, percentile(ours, 0.99) * 1000
        t50, t99 = percentile(theirs, 0.5) * 1000, percentile(theirs, 0.99) * 1000
        verdict = "met" if o50 < t50 and o99 < t99 else "missed"
        print(
            f"| /metrics scrape faster than node_exporter's (p50 and p99, asked as Prometheus asks) | memmon "
            f"{o50:.2f} / {o99:.2f} ms vs node_exporter {t50:.2f} / {t99:.2f} ms | {verdict} |"
        )
    else:
        print(
            f"| /metrics scrape faster than node_exporter's | {NODE_EXPORTER} not installed | not measured |"
        )
    at_2000 = [run for run in runs if run.rate == 2000]
    if at_2000:
        run = at_2000[0]
        p99 = run.result["from_schedule_ms"]["p99"]
        errors = sum(run.result["errors"].values())
        ok = p99 is not None and p99 < 10 and run.gaps.missed == 0 and errors == 0
        print(
            f"| /health p99 < 10 ms at 2000 req/s with no missed check (and no error) | p99 {fmt(p99)} ms from "
            f"scheduled start; achieved {run.result['achieved']:.0f} req/s; errors {errors}; max check gap "
            f"{fmt(run.gaps.max_gap)} s, {run.gaps.missed} gaps > 1.5 s | {'met' if ok else 'missed'} |"
        )
    else:
        print(
            "| /health p99 < 10 ms at 2000 req/s with no missed check | --quick does not run 2000 req/s "
            "| not measured |"
        )
    if quick:
        print()
        print("(quick smoke run: the verdicts above are not meaningful)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    # the load generator's own process (run by run_fixed_load)
    parser.add_argument("--loadgen", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="also start a memmon imported from this source tree (the directory holding the memmon package) for "
        "the idle figures and table 1",
    )
    parser.add_argument(
        "--memmon-env",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="an environment variable for the measured memmon (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args.loadgen)
        return 0
    load_at_start = os.getloadavg()[0]
    sizes = QUICK if args.quick else FULL
    node_exporter_bin = shutil.which(NODE_EXPORTER)
    versions = {
        "memmon": memmon_version,
        "aiohttp": aiohttp.__version__,
        "node_exporter": tool_version([node_exporter_bin, "--version"])
        if node_exporter_bin
        else "not installed",
        "wrk": tool_version(["wrk", "-v"]) if shutil.which("wrk") else "not installed",
    }
    memmon_env = dict(item.split("=", 1) for item in args.memmon_env)
    if args.baseline is not None and not (args.baseline / "memmon" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: no memmon package there")
    targets: list[Target] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="memmon-footprint-") as tmp:
        logs = Path(tmp)
        try:
            started = time.monotonic()
            port = free_port()
            with open(logs / "memmon.log", "wb") as log:
                proc = subprocess.Popen(
                    memmon_argv(port, logs / "state", "--check-interval", "1", "--log-level", "WARNING"),
                    stdout=log, stderr=subprocess.STDOUT, env=child_env() | memmon_env | IMPORT_REPORT,
                )  # fmt: skip
            targets.append(Target("memmon", memmon_version, proc, port, log=logs / "memmon.log"))
            wait_http(f"http://127.0.0.1:{port}/health", proc)
            if node_exporter_bin:
                port2 = free_port()
                with open(logs / "node_exporter.log", "wb") as log:
                    proc2 = subprocess.Popen(
                        [node_exporter_bin, f"--web.listen-address=127.0.0.1:{port2}"],
                        stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                targets.append(Target("node_exporter", versions["node_exporter"], proc2, port2))
                wait_http(f"http://127.0.0.1:{port2}/metrics", proc2)
            else:
                notes.append(
                    f"{NODE_EXPORTER} not installed (Debian package of that name): memmon measured alone"
                )
            if args.baseline is not None:
                port3 = free_port()
                with open(logs / "baseline.log", "wb") as log:
                    proc3 = subprocess.Popen(
                        [sys.executable, "-m", "memmon", *memmon_argv(port3, logs / "state-baseline",
                         "--check-interval", "1", "--log-level", "WARNING")[1:]],
                        stdout=log, stderr=subprocess.STDOUT,
                        env=child_env() | IMPORT_REPORT | {"PYTHONPATH": str(args.baseline.resolve())},
                    )  # fmt: skip
                targets.append(Target(BASELINE, str(args.baseline), proc3, port3, log=logs / "baseline.log"))
                wait_http(f"http://127.0.0.1:{port3}/health", proc3)
            # the idle figures: no scrape yet (the readiness polls above asked /health only)
            time.sleep(max(0.0, started + sizes.idle_after - time.monotonic()))
            idle = measure_idle(targets)
            time.sleep(sizes.settle)  # start-up (imports, first checks) is not the idle window

            found = measure_footprint(targets, sizes.footprint_seconds, sizes.scrape_every)
            scraped = [t for t in targets if t.name != BASELINE]
            idle_gaps = check_gaps(targets[0], *found["memmon"].wall)
            scrapes = measure_scrapes(scraped, sizes.scrapes)
            runs: list[LoadRun] = []
            for rate, seconds in sizes.loads:
                runs.append(run_fixed_load(targets[0], rate, seconds, sizes.connections, logs))
                time.sleep(1)
            wrk = run_wrk(targets[0], sizes.wrk_seconds, sizes.connections)
            if isinstance(wrk, str):
                notes.append(wrk)
            else:
                runs.append(wrk)
            for target in targets:
                if target.proc.poll() is not None:
                    raise RuntimeError(
                        f"{target.name} exited with {target.proc.returncode} during the benchmark"
                    )
        except BaseException:
            for name in ("memmon.log", "node_exporter.log", "baseline.log"):
                if (logs / name).exists():
                    sys.stderr.write(
                        f"--- {name} (tail)\n{(logs / name).read_text(errors='replace')[-3000:]}\n"
                    )
            raise
        finally:
            for target in targets:
                if target.connection is not None:
                    target.connection.close()
                stop(target.proc)

    print_header("memmon footprint next to node_exporter", args.quick, versions, load_at_start)
    if args.baseline is not None:
        print(f"baseline: memmon imported from {args.baseline} (idle figures and table 1 only)")
    print_idle(idle, targets, sizes, memmon_env)
    print_footprint(found, targets, sizes)
    print_scrapes(scrapes, scraped, sizes.scrapes)
    print_loads(runs, notes, idle_gaps, sizes.footprint_seconds)
    print_goals(args.quick, found, scrapes, node_exporter_bin is not None, runs, idle)
    reconnects = {t.name: t.reconnects for t in targets if t.reconnects}
    if reconnects:
        print(
            f"\nkeep-alive connections the server closed, reopened (the failed try not timed): {reconnects}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
