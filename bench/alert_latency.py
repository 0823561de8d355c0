"""Alert latency: from the moment memory crosses a threshold to the webhook receiver getting the alert.

A real ``memmon`` process watches a child process and posts its alerts to a webhook receiver in this bench
process (an aiohttp server on 127.0.0.1 that notes each request's arrival on the monotonic clock, the clock the
child uses too). The warning threshold is low (``memory_warning_mb: 64``; critical and emergency out of reach),
``alerting.rate_limit_seconds: 0``, everything else as shipped (check interval 5 s).

The child holds next to nothing until told ``up``: then it maps 96 MiB of anonymous memory and touches it 1 MiB
at a time, reading after each MiB the number memmon judges (the cgroup's ``memory.usage_in_bytes`` for a cgroup
target, its own RSS from ``/proc/self/statm`` for a ``--pid`` target) and noting the monotonic time when it
first reaches 64 MiB: **the crossing**. It confirms the step when all 96 MiB are touched; the bench notes the
time just after reading the confirmation: **the confirmation**. ``down`` unmaps it all (back to its idle few
MiB, below the resolve level 64 x 0.95) and the bench waits for the resolved notification before the next
crossing. Before each crossing the bench sleeps a random 0-5 s, so crossings fall at random points of the
agent's poll cycle (a step right after the resolution would always land just after a poll).

Latency = arrival of the webhook POST carrying the firing warning alert - the crossing (or the confirmation;
with kernel notifications the alert can arrive before the bench has read the confirmation, so that figure can
be negative). It covers the agent's whole path: the check, the evaluation, the durable spool write, the HTTP POST.

Two targets:

- **cgroup, kernel notifications**: ``memmon --cgroup`` on a fresh cgroup v1 memory cgroup (512 MiB limit) the
  child joins. memmon arms a kernel usage threshold at 64 MiB and checks the moment it fires;
- **--pid, no cgroup limit**: ``memmon --pid <child>``, the child in a fresh memory cgroup without a limit (so no
  usage threshold can be armed: memmon arms them only at fractions of a limit): the usage watcher reads the
  child's resident size from ``/proc/<pid>/statm``, paced by the headroom to the emergency line (here the host's
  memory, far away: once a second), and runs a check when the warning threshold is crossed.

Usage: ``python bench/alert_latency.py [--quick]`` (``--quick``: 3 crossings each, figures not meaningful).
Needs root and a writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

MIB = 2**20
THRESHOLD_MIB = 64
STEP_MIB = 96
CGROUP_LIMIT = 512 * MIB
INTERVAL = 5.0
V1_MEMORY = Path("/sys/fs/cgroup/memory")

# Joins a cgroup, then obeys "up" (map STEP MiB and touch it 1 MiB at a time, noting when the judged number first
# reaches the threshold) and "down" (unmap it). Answers "up <start> <crossing> <done>" / "down <done>"
# (monotonic seconds; crossing is "-" when the judged number never reached the threshold).
CHILD = r"""
import mmap, os, sys, time
cgroup, source, threshold, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(cgroup + "/cgroup.procs", "w") as procs:
    procs.write("0")
MIB, PAGE = 1 << 20, os.sysconf("SC_PAGE_SIZE")
if source == "usage":
    judged_file = open(cgroup + "/memory.usage_in_bytes", "rb", buffering=0)
    def judged():
        judged_file.seek(0)
        return int(judged_file.read())
else:
    judged_file = open("/proc/self/statm", "rb", buffering=0)
    def judged():
        judged_file.seek(0)
        return int(judged_file.read().split()[1]) * PAGE
ones, held = b"\x01" * MIB, None
print("ready", judged(), flush=True)
for line in sys.stdin:
    if line.strip() == "up":
        start, crossed = time.monotonic(), "-"
        held = mmap.mmap(-1, step * MIB)
        for _ in range(step):
            held.write(ones)
            if crossed == "-" and judged() >= threshold:
                crossed = time.monotonic()
        print("up", start, crossed, time.monotonic(), flush=True)
    elif line.strip() == "down":
        held.close()
        held = None
        print("down", time.monotonic(), judged(), flush=True)
"""


@dataclass(frozen=True)
class Target:
    name: str
    source: str  # what the child reads as the judged number: "usage" (cgroup) or "rss"
    component: str  # the alert component memmon reports for it
    limit: int | None  # the cgroup's limit (None: no limit)


TARGETS = (
    Target("cgroup target, kernel notifications (5 s interval)", "usage", "cgroup_memory", CGROUP_LIMIT),
    Target("--pid target, no cgroup limit: usage watcher (5 s interval)", "rss", "process_memory", None),
)


@dataclass
class Crossing:
    from_crossing: float  # seconds, arrival - crossing
    from_confirmation: float  # seconds, arrival - confirmation read by the bench
    step_seconds: float  # how long the child's 96 MiB step took


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def why_not_runnable() -> str | None:
    """Why this machine cannot run the benchmark (None: it can)."""
    if os.geteuid() != 0:
        return "creating a memory cgroup needs root"
    if not (V1_MEMORY / "cgroup.event_control").is_file() or not os.access(V1_MEMORY, os.W_OK):
        return f"{V1_MEMORY} is not a writable cgroup v1 memory mount"
    return None


@contextlib.contextmanager
def memory_cgroup(limit: int | None) -> Iterator[Path]:
    """A fresh ``/sys/fs/cgroup/memory/memmon-bench-<random>`` (limited to ``limit`` bytes, or unlimited); its
    processes are killed and it is removed afterwards, whatever happens."""
    if why := why_not_runnable():
        raise SystemExit(f"alert_latency: {why}")
    directory = V1_MEMORY / f"memmon-bench-{uuid.uuid4().hex[:12]}"
    directory.mkdir()
    try:
        if limit is not None:
            (directory / "memory.limit_in_bytes").write_text(str(limit))
        yield directory
    finally:
        deadline = time.monotonic() + 10
        while directory.exists():
            with contextlib.suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                directory.rmdir()
                break
            if time.monotonic() > deadline:
                print(f"alert_latency: could not remove {directory}", file=sys.stderr)
                break
            time.sleep(0.05)


def agent_env() -> dict[str, str]:
    """This environment without memmon's settings and the guide's variables."""
    drop = {"MEMORY_HEALTH_PORT", "PROMETHEUS_PORT", "MONITORING_LOG_LEVEL", "SLACK_WEBHOOK_URL", "ALERT_EMAIL",
            "POD_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"}  # fmt: skip
    return {k: v for k, v in os.environ.items() if not k.startswith("MEMMON_") and k not in drop}


class Receiver:
    """The webhook receiver: every POST is answered 200 and queued with its arrival time (monotonic)."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        await self.arrivals.put((arrived, await request.json()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def next_alert(self, component: str, state: str, within: float) -> float:
        """Arrival time of the next warning alert of ``component`` in ``state`` (others are skipped); raises
        TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within):
            while True:
                arrived, payload = await self.arrivals.get()
                if (payload.get("component"), payload.get("severity"), payload.get("state")) == (
                    component, "warning", state,
                ):  # fmt: skip
                    return arrived


class Child:
    """The stepping child, driven over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, cgroup: Path, source: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(cgroup), source, str(THRESHOLD_MIB * MIB), str(STEP_MIB),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        child = cls(proc)
        ready = await child._answer(10)
        if ready[:1] != ["ready"]:
            raise RuntimeError(f"the child did not start: {ready}")
        return child

    async def _answer(self, within: float) -> list[str]:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), within)).decode().split()

    async def command(self, what: str) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{what}\n".encode())
        await self.proc.stdin.drain()
        return await self._answer(10)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def http_get(port: int, path: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=2)) as response,
    ):
        return await response.read()


async def wait_ready(port: int, agent: asyncio.subprocess.Process, log: Path, within: float = 20) -> None:
    """Until the agent's /health answers with a level (its first check is done)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if agent.returncode is not None:
            raise RuntimeError(f"memmon exited with {agent.returncode}: {tail(log)}")
        with contextlib.suppress(OSError, ValueError, aiohttp.ClientError, TimeoutError):
            if json.loads(await http_get(port, "/health")).get("status") != "starting":
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"memmon did not serve /health within {within:g} s: {tail(log)}")


async def events_received(port: int) -> dict[str, int]:
    """memmon_memory_events_total by kind: kernel notifications that made the agent check."""
    received: dict[str, int] = {}
    for line in (await http_get(port, "/metrics")).decode().splitlines():
        match = re.match(r'memmon_memory_events_total\{kind="([^"]*)"\} (\S+)$', line)
        if match:
            received[match.group(1)] = int(float(match.group(2)))
    return received


def tail(log: Path) -> str:
    """The end of the agent's log (read on failure only)."""
    return log.read_text(errors="replace")[-2000:]


def log_lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines()


def eventfds(pid: int) -> int:
    """eventfds open in a process: one per armed cgroup v1 notification."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == "anon_inode:[eventfd]"
    return count


async def measure(
    target: Target, crossings: int, receiver: Receiver, work: Path
) -> tuple[list[Crossing], str]:
    """``crossings`` threshold crossings against a fresh agent; the latencies and a note on notifications."""
    config = {
        "monitoring": {"check_interval": INTERVAL, "prometheus_port": 0},
        "thresholds": {"memory_warning_mb": THRESHOLD_MIB, "memory_critical_mb": 100_000,
                       "memory_emergency_mb": 200_000},
        "alerting": {"webhook_url": f"http://127.0.0.1:{receiver.port}/hook", "rate_limit_seconds": 0},
    }  # fmt: skip
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    log = work / "memmon.log"
    results: list[Crossing] = []
    with memory_cgroup(target.limit) as cgroup, log.open("w") as log_file:
        child = await Child.start(cgroup, target.source)
        where = ["--cgroup", str(cgroup)] if target.source == "usage" else ["--pid", str(child.proc.pid)]
        port = free_port()
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "memmon", "--config", str(config_path), *where, "--health-port", str(port),
            "--state-dir", str(work / "state"), "--log-level", "INFO",
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file, env=agent_env(),
        )  # fmt: skip
        try:
            await wait_ready(port, agent, log)
            armed = eventfds(agent.pid)
            for _ in range(crossings):
                await asyncio.sleep(random.uniform(0, INTERVAL))
                while not receiver.arrivals.empty():  # nothing stale may pass for this crossing's alert
                    receiver.arrivals.get_nowait()
                answer = await child.command("up")
                confirmed = time.monotonic()
                if answer[:1] != ["up"] or answer[2] == "-":
                    raise RuntimeError(f"the child's step did not cross the threshold: {answer}")
                start, crossed, done = float(answer[1]), float(answer[2]), float(answer[3])
                arrived = await receiver.next_alert(target.component, "firing", 3 * INTERVAL + 10)
                results.append(Crossing(arrived - crossed, arrived - confirmed, done - start))
                await child.command("down")
                await receiver.next_alert(target.component, "resolved", 3 * INTERVAL + 10)
            problems = [line for line in log_lines(log) if "memory events:" in line]
            received = await events_received(port)
            note = (
                f"- {target.name}: {armed} kernel notifications armed in the agent (eventfds after its first "
                f"check: usage thresholds, oom, pressure); received: "
                + (", ".join(f"{n} {kind}" for kind, n in sorted(received.items())) or "none")
                + "; "
                + (
                    f"logged: {problems[0].split('memory events: ', 1)[1]}"
                    if problems
                    else "no arming problem logged"
                )
            )
        finally:
            await child.stop()
            if agent.returncode is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(agent.wait(), 10)
                except TimeoutError:
                    agent.kill()
                    await agent.wait()
    return results, note


async def run(crossings: int) -> list[tuple[Target, list[Crossing], str]]:
    receiver = Receiver()
    await receiver.start()
    try:
        table = []
        for target in TARGETS:
            with tempfile.TemporaryDirectory(prefix="memmon-alert-latency-") as work:
                results, note = await measure(target, crossings, receiver, Path(work))
            table.append((target, results, note))
        return table
    finally:
        await receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 crossings per target: a smoke test")
    args = parser.parse_args()
    if why := why_not_runnable():  # a note, not a failure: the other benchmarks still run
        print(f"# alert_latency: not run on this machine: {why}")
        return
    crossings = 3 if args.quick else 20

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(f"alert_latency: stopped by signal {signum}")  # unwinds through every finally

    signal.signal(signal.SIGTERM, terminated)
    started = time.monotonic()
    table = asyncio.run(run(crossings))

    print(
        f"# alert latency — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(f"threshold crossing ({THRESHOLD_MIB} MiB warning, a {STEP_MIB} MiB step) → webhook POST received on "
          f"127.0.0.1; {crossings} crossings per target; check interval {INTERVAL:g} s; rate_limit_seconds 0"
          + (" (quick smoke run, figures not meaningful)" if args.quick else ""))  # fmt: skip
    print()
    print(
        "| target | crossings | median ms from crossing | p99 ms from crossing | median ms from confirmation "
        "| p99 ms from confirmation | median step duration ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for target, results, _ in table:
        cross = [r.from_crossing * 1000 for r in results]
        confirm = [r.from_confirmation * 1000 for r in results]
        step = [r.step_seconds * 1000 for r in results]
        print(f"| {target.name} | {len(results)} | {statistics.median(cross):.1f} | {percentile(cross, 0.99):.1f} "
              f"| {statistics.median(confirm):.1f} | {percentile(confirm, 0.99):.1f} "
              f"| {statistics.median(step):.1f} |")  # fmt: skip
    print()
    print(
        "from crossing: the first moment the child saw the judged number (cgroup usage_in_bytes, or its RSS) "
        "at or above the threshold, read after each MiB it touched. from confirmation: the bench's clock right "
        "after reading the child's 'step done' line (negative: the alert arrived first). p99 is the nearest "
        f"rank: with {crossings} crossings, the maximum."
    )
    print()
    print("\n".join(note for _, _, note in table))
    print()
    print(f"total bench time: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
