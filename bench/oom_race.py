"""The OOM race: does memmon restart a leaking service gracefully before the kernel OOM killer strikes?

A child process joins a fresh cgroup v1 memory cgroup limited to 256 MiB (swap limited too, where there is
some), then leaks at 50, 200 or 1000 MB/s (MB = MiB here, as in the proof test) in 1 MiB steps, every page
touched (the proof test uses 10 MiB steps, which would quantise the headroom figures below to 10 MiB). It handles
SIGTERM like a service draining its work: it stops leaking and exits 0, printing ``graceful``. Each run ends one
of three ways:

- **graceful**: the child exited 0 and printed ``graceful`` (it received SIGTERM and drained);
- **OOM-killed**: the child died by SIGKILL and the cgroup's ``oom_kill`` counter (``memory.oom_control``) rose;
- **other**: anything else (counted, never hidden).

Configurations, each a real ``memmon --cgroup <the cgroup>`` process started once and reused for all its runs
(a fresh cgroup each configuration), except the control:

- **shipped, 5 s, events**: memmon's defaults (check interval 5 s; thresholds 70/85/95 % of the limit, so
  emergency at 95 %; kernel notifications armed on the cgroup; the usage watcher), with
  ``graceful_restart.strategy: signal`` (the shipped default strategy is ``none``, which restarts nothing) and
  its shipped ``grace_seconds`` 30;
- **guide, 30 s, events**: the same with ``check_interval: 30``, as the guide configures it;
- **unprivileged, 5 s / 30 s, no kernel events** (emergency 80 %): memmon runs as ``nobody`` (and the child
  drops to ``nobody`` after joining the cgroup, so that memmon may signal it): it cannot write
  ``cgroup.event_control``, as in a container with a read-only cgroupfs, so the usage watcher alone detects;
- **guide, 30 s, polling alone**: ``monitoring.kernel_events: false`` and ``usage_watch.enabled: false``: the
  adaptive poll alone (faster as headroom shrinks at the fill rate seen between the last two checks), what a
  30 s poller does; at 95 % and at 70 %;
- **shipped, 5 s, events, emergency 70 %** (warning 50 %, critical 60 %: the proof test's setting,
  ``tests/actions/test_oom_race.py``);
- **no agent**: the child alone (the control: what the kernel does).

Restart safety limits (``auto_response.cooldown_seconds`` 60 s between two runs of one level's actions,
``graceful_restart.cooldown_seconds`` 60 and ``max_restarts_per_hour`` 3) are raised for every agent (0.01 s, 0,
1000): each run stands for an independent incident, and with the shipped limits the second run of a
configuration would meet a limiter still cooling down from the first. Between runs the bench waits for the cgroup
to be empty and for the agent to be back below critical (``healthy`` or ``warning``: after a fast drop memmon stays
at warning until its next poll, since no kernel threshold sits at the warning's resolve point; a leak starting at
warning still enters critical and emergency afresh). The runs of one configuration follow each other without a
pause, so a leak starts at an arbitrary point of the agent's poll cycle.

Headroom, in MiB (limit - usage; what was left when memmon acted):

- **at SIGTERM**: the child reads the cgroup's ``memory.usage_in_bytes`` in its SIGTERM handler (Python runs
  the handler after the current bytecode: at most the end of one 1 MiB step late) — graceful runs only;
- **min over run**: limit - ``memory.max_usage_in_bytes`` read after the run (the peak is reset before each run):
  what was left at the closest point, which includes the leak between the agent's decision and the handler
  (0 for an OOM kill).

Also reported per agent: whether the kernel notifications were armed (eventfds open in the agent process after
its first check, and what it logged), notifications it received (``memmon_memory_events_total``) and SIGTERMs it
sent (``memmon_actions_total{action="restart:signal"}``).

Usage: ``python bench/oom_race.py [--quick]`` (``--quick``: 1 run at 200 MB/s per configuration, figures not
meaningful). Needs root and a writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 2**20
LIMIT = 256 * MIB
CHUNK_MIB = 1
V1_MEMORY = Path("/sys/fs/cgroup/memory")

# Joins the cgroup, then on "go" leaks `rate` MB/s in `chunk` MiB steps (pages touched) until SIGTERM, which it
# handles like a service draining its work: it notes what it held and the cgroup's usage at that moment, stops
# leaking and exits 0, printing "graceful <MiB leaked at SIGTERM> <usage bytes at SIGTERM> <monotonic time>".
CHILD = r"""
import os, signal, sys, time
cgroup, rate, chunk, uid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(cgroup + "/cgroup.procs", "w") as procs:
    procs.write("0")
usage = open(cgroup + "/memory.usage_in_bytes", "rb", buffering=0)
if uid:  # the unprivileged agent may signal only its own user's processes
    os.setgid(uid)
    os.setuid(uid)
stopping, leaked, at_term = False, 0, None
def drain(signum, frame):
    global stopping, at_term
    usage.seek(0)
    at_term = (leaked, int(usage.read()), time.monotonic())
    stopping = True
signal.signal(signal.SIGTERM, drain)
print("ready", flush=True)
sys.stdin.readline()
held, started = [], time.monotonic()
while not stopping and leaked < 4096:
    held.append(b"\x01" * (chunk << 20))
    leaked += chunk
    pause = started + leaked / rate - time.monotonic()
    if pause > 0 and not stopping:
        time.sleep(pause)
if at_term is None:
    print("unsignalled", leaked, flush=True)
else:
    print("graceful", *at_term, flush=True)
"""

# The unprivileged agent runs as this user (nobody): it cannot write cgroup.event_control, as in a container.
NOBODY = 65534

# Restart safety limits raised so that back-to-back runs each meet a rested limiter (see the module docstring).
RESTART = {"strategy": "signal", "cooldown_seconds": 0, "max_restarts_per_hour": 1000}
AT_70 = {"memory_percent_warning": 50, "memory_percent_critical": 60, "memory_percent_emergency": 70}
AT_80 = {"memory_percent_warning": 60, "memory_percent_critical": 70, "memory_percent_emergency": 80}


@dataclass(frozen=True)
class Config:
    name: str
    interval: float | None  # None: no agent
    events: bool = True
    thresholds: dict[str, Any] = field(default_factory=dict)
    watch: bool = True  # the usage watcher
    unprivileged: bool = False  # agent and child run as nobody: no kernel events can be armed

    def agent_config(self) -> dict[str, Any]:
        assert self.interval is not None
        config: dict[str, Any] = {
            "monitoring": {
                "check_interval": self.interval,
                "prometheus_port": 0,
                "kernel_events": self.events,
                "usage_watch": {"enabled": self.watch},
            },
            "auto_response": {"cooldown_seconds": 0.01, "emergency_actions": {"graceful_restart": RESTART}},
        }
        if self.thresholds:
            config["thresholds"] = self.thresholds
        return config


CONFIGS = (
    Config("shipped, 5 s, events (emergency 95 %)", 5),
    Config("guide, 30 s, events (emergency 95 %)", 30),
    Config("unprivileged, 5 s, no kernel events (emergency 80 %)", 5, thresholds=AT_80, unprivileged=True),
    Config("unprivileged, 30 s, no kernel events (emergency 80 %)", 30, thresholds=AT_80, unprivileged=True),
    Config("guide, 30 s, polling alone (emergency 95 %)", 30, events=False, watch=False),
    Config("shipped, 5 s, events (emergency 70 %)", 5, thresholds=AT_70),
    Config("guide, 30 s, polling alone (emergency 70 %)", 30, events=False, watch=False, thresholds=AT_70),
    Config("no agent", None),
)


@dataclass
class Run:
    outcome: str  # "graceful", "OOM-killed" or "other (...)"
    headroom_at_term: float | None  # MiB, graceful runs
    min_headroom: float  # MiB, limit - max_usage_in_bytes
    seconds: float  # "go" to the child's exit
    signalled: int  # SIGTERMs memmon sent during the run (restart:signal actions)


# -- the cgroup --------------------------------------------------------------------------------------------------


def kill_members(cgroup: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def why_not_runnable() -> str | None:
    """Why this machine cannot run the benchmark (None: it can)."""
    if os.geteuid() != 0:
        return "creating a memory cgroup needs root"
    if not (V1_MEMORY / "cgroup.event_control").is_file() or not os.access(V1_MEMORY, os.W_OK):
        return f"{V1_MEMORY} is not a writable cgroup v1 memory mount"
    return None


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A fresh ``/sys/fs/cgroup/memory/memmon-bench-<random>`` limited to ``limit`` bytes (swap too where there
    is some); its processes are killed and it is removed afterwards, whatever happens."""
    if why := why_not_runnable():
        raise SystemExit(f"oom_race: {why}")
    directory = V1_MEMORY / f"memmon-bench-{uuid.uuid4().hex[:12]}"
    directory.mkdir()
    try:
        (directory / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(
            OSError
        ):  # without it, swap (where there is some) would postpone the OOM kill
            (directory / "memory.memsw.limit_in_bytes").write_text(str(limit))
        yield directory
    finally:
        deadline = time.monotonic() + 10
        while directory.exists():
            kill_members(directory)
            with contextlib.suppress(OSError):
                directory.rmdir()
                break
            if time.monotonic() > deadline:
                print(f"oom_race: could not remove {directory}", file=sys.stderr)
                break
            time.sleep(0.05)


def oom_kills(cgroup: Path) -> int:
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise SystemExit("oom_race: memory.oom_control has no oom_kill line (kernel < 4.13)")


def usage_bytes(cgroup: Path) -> int:
    return int((cgroup / "memory.usage_in_bytes").read_text())


# -- the agent ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agent_env() -> dict[str, str]:
    """This environment without memmon's settings and the guide's variables (no real receiver is ever posted to,
    no Kubernetes API is called)."""
    drop = {"MEMORY_HEALTH_PORT", "PROMETHEUS_PORT", "MONITORING_LOG_LEVEL", "SLACK_WEBHOOK_URL", "ALERT_EMAIL",
            "POD_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"}  # fmt: skip
    return {k: v for k, v in os.environ.items() if not k.startswith("MEMMON_") and k not in drop}


class Agent:
    """A real memmon process watching ``cgroup``; stderr goes to a file (never a pipe that could fill up)."""

    def __init__(self, config: Config, cgroup: Path, workdir: Path) -> None:
        self.port = free_port()
        config_path = workdir / "config.json"
        config_path.write_text(json.dumps(config.agent_config()))
        self.log_path = workdir / "memmon.log"
        self._log = self.log_path.open("w")
        user: list[str] = []
        if config.unprivileged:  # nobody must be able to write its state and read its config
            user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            os.chmod(workdir, 0o777)
            os.chmod(config_path, 0o644)
        self.proc = subprocess.Popen(
            [*user, sys.executable, "-m", "memmon", "--config", str(config_path), "--cgroup", str(cgroup),
             "--health-port", str(self.port), "--state-dir", str(workdir / "state"), "--log-level", "INFO"],
            stdout=subprocess.DEVNULL, stderr=self._log, env=agent_env(),
        )  # fmt: skip

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def status(self) -> str:
        return str(json.loads(self.get("/health")[1])["status"])

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memmon exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if self.status() != "starting":
                    return
            time.sleep(0.1)
        raise RuntimeError(f"memmon did not serve /health within {timeout:g} s: {self.log_tail()}")

    def settle(self, timeout: float) -> bool:
        """Wait until the agent is back at ok or warning (it saw the cgroup drain); False after ``timeout``.

        Not ok alone: after a fast drop the agent stays at warning until its next poll (the kernel thresholds sit
        at the levels' entry points, none at the warning's resolve point), which would add up to one check
        interval to every run. A leak starting at warning still enters critical and emergency afresh."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if self.status() in ("healthy", "warning"):
                    return True
            time.sleep(0.02)
        return False

    def counter(self, name: str, **labels: str) -> float:
        """Sum of a counter's samples in /metrics whose labels include ``labels``."""
        text = self.get("/metrics")[1].decode()
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
            if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def restarts(self, outcome: str | None = None) -> int:
        """restart:signal actions recorded (with ``outcome``, or sent: success, failure or oom_killed)."""
        if outcome is not None:
            return int(self.counter("memmon_actions_total", action="restart:signal", outcome=outcome))
        return sum(self.restarts(outcome) for outcome in ("success", "failure", "oom_killed"))

    def restarts_after(self, before: int, expected: bool) -> int:
        """SIGTERMs sent since ``before``: memmon records the action once the target exited (or its grace
        ran out), a few ms after the child's exit, so wait for it (up to 3 s when a SIGTERM must have been sent,
        0.3 s otherwise)."""
        deadline = time.monotonic() + (3 if expected else 0.3)
        while True:
            sent = self.restarts() - before
            if sent or time.monotonic() > deadline:
                return sent
            time.sleep(0.02)

    def eventfds(self) -> int:
        """eventfds open in the agent process: one per armed cgroup v1 notification."""
        count = 0
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd) == "anon_inode:[eventfd]"
        return count

    def log_tail(self, lines: int = 5) -> str:
        return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def event_problems(self) -> list[str]:
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if "memory events:" in line
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# -- one run -----------------------------------------------------------------------------------------------------


def leak_once(cgroup: Path, rate: float, uid: int = 0) -> Run:
    """Run one leaking child to its end and classify the ending."""
    kills_before = oom_kills(cgroup)
    (cgroup / "memory.max_usage_in_bytes").write_text("0")  # resets the peak
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cgroup), str(rate), str(CHUNK_MIB), str(uid)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 10)
        if not ready or child.stdout.readline().strip() != "ready":
            raise RuntimeError("the leaking child did not start")
        (cgroup / "memory.max_usage_in_bytes").write_text("0")  # the child's own start-up is not the leak
        went = time.monotonic()
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(60)
        ended = time.monotonic()
        output = child.stdout.read().split()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    peak = int((cgroup / "memory.max_usage_in_bytes").read_text())
    kills = oom_kills(cgroup) - kills_before
    at_term = None
    if child.returncode == 0 and output[:1] == ["graceful"]:
        outcome = "graceful"
        at_term = (LIMIT - int(output[2])) / MIB
    elif child.returncode == -signal.SIGKILL and kills:
        outcome = "OOM-killed"
    else:
        outcome = f"other (exit {child.returncode}, {' '.join(output[:2]) or 'no output'}, {kills} OOM kills)"
    return Run(outcome, at_term, (LIMIT - peak) / MIB, ended - went, 0)


def wait_empty(cgroup: Path, timeout: float = 10) -> None:
    """Until no process is left in the cgroup and its usage fell back (the next run starts from a quiet cgroup)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (cgroup / "cgroup.procs").read_text().split() and usage_bytes(cgroup) < 32 * MIB:
            return
        time.sleep(0.02)


# -- the report ----------------------------------------------------------------------------------------------------


def median_or_dash(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def run_config(config: Config, rates: list[tuple[int, int]], notes: list[str]) -> dict[int, list[Run]]:
    results: dict[int, list[Run]] = {}
    with memory_cgroup(LIMIT) as cgroup, tempfile.TemporaryDirectory(prefix="memmon-oom-race-") as work:
        agent = Agent(config, cgroup, Path(work)) if config.interval is not None else None
        try:
            if agent is not None:
                agent.wait_ready()
                armed = agent.eventfds()
            unsettled = 0
            for rate, runs in rates:
                results[rate] = []
                for _ in range(runs):
                    before = agent.restarts() if agent is not None else 0
                    run = leak_once(cgroup, rate, NOBODY if config.unprivileged else 0)
                    wait_empty(cgroup)
                    if agent is not None:
                        if not agent.settle(2 * (config.interval or 0) + 5):
                            unsettled += 1
                        run.signalled = agent.restarts_after(before, run.outcome == "graceful")
                    results[rate].append(run)
            if agent is not None:
                received = agent.counter("memmon_memory_events_total")
                skipped = agent.restarts("skipped")
                problems = agent.event_problems()
                notes.append(
                    f"- {config.name}: {armed} kernel notifications armed (eventfds open in the agent after its "
                    f"first check), {received:.0f} received; "
                    + (
                        f"logged: {problems[0].split('memory events: ', 1)[1]}"
                        if problems
                        else "no arming problem logged"
                    )
                    + (f"; {skipped} restarts skipped (memory re-read before acting)" if skipped else "")
                    + (
                        f"; {unsettled} runs after which the agent did not leave critical/emergency in time"
                        if unsettled
                        else ""
                    )
                )
        finally:
            if agent is not None:
                agent.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 run at 200 MB/s per configuration: a smoke test"
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per configuration and rate (default 10)")
    parser.add_argument("--only", default="", help="run only the configurations whose name contains this")
    parser.add_argument("--rates", default="50,200,1000", help="leak rates, MB/s, comma-separated")
    args = parser.parse_args()
    if why := why_not_runnable():  # a note, not a failure: the other benchmarks still run
        print(f"# oom_race: not run on this machine: {why}")
        return
    rates = [(200, 1)] if args.quick else [(int(rate), args.runs) for rate in args.rates.split(",")]

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(f"oom_race: stopped by signal {signum}")  # unwinds through every finally: clean-up

    signal.signal(signal.SIGTERM, terminated)
    started = time.monotonic()
    notes: list[str] = []
    table: list[tuple[Config, int, list[Run]]] = []
    for config in (c for c in CONFIGS if args.only in c.name):
        for rate, runs in run_config(config, rates, notes).items():
            table.append((config, rate, runs))

    print(f"# OOM race — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"kernel {os.uname().release}")  # fmt: skip
    print(f"a child leaking in {CHUNK_MIB} MiB steps into a {LIMIT // MIB} MiB cgroup v1 memory cgroup; "
          f"runs per configuration and rate: {rates[0][1]}"
          + (" (quick smoke run, figures not meaningful)" if args.quick else ""))  # fmt: skip
    print(
        "memmon: graceful_restart strategy `signal` (shipped default: `none`), restart cooldowns lifted for "
        "back-to-back runs; otherwise shipped defaults unless the configuration says so"
    )
    print()
    print(
        "| configuration | leak MB/s | runs | graceful | OOM-killed | other | memmon sent SIGTERM "
        "| median headroom at SIGTERM, MiB | median min headroom over run, MiB | median go → exit, s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    others: list[str] = []
    for config, rate, runs in table:
        graceful = sum(run.outcome == "graceful" for run in runs)
        killed = sum(run.outcome == "OOM-killed" for run in runs)
        other = [run.outcome for run in runs if run.outcome not in ("graceful", "OOM-killed")]
        others += [f"- {config.name}, {rate} MB/s: {text}" for text in other]
        signalled = sum(run.signalled > 0 for run in runs)
        print(
            f"| {config.name} | {rate} | {len(runs)} | {graceful} | {killed} | {len(other)} "
            f"| {signalled if config.interval is not None else '-'} "
            f"| {median_or_dash([r.headroom_at_term for r in runs if r.headroom_at_term is not None])} "
            f"| {median_or_dash([r.min_headroom for r in runs])} "
            f"| {statistics.median(r.seconds for r in runs):.2f} |"
        )
    print()
    print(
        "graceful: exit 0 after SIGTERM, `graceful` printed; OOM-killed: SIGKILL and `oom_kill` in "
        "memory.oom_control rose. memmon sent SIGTERM: runs during which the agent's "
        '`memmon_actions_total{action="restart:signal"}` rose (outcome success, failure or oom_killed; '
        "skipped not counted)."
    )
    print(
        "headroom at SIGTERM: 256 MiB - memory.usage_in_bytes read by the child in its SIGTERM handler (graceful "
        "runs); min headroom: 256 MiB - memory.max_usage_in_bytes after the run (peak reset before it)."
    )
    print(
        "polling alone: monitoring.kernel_events and usage_watch off; the adaptive poll (faster as headroom shrinks "
        "at the last two checks' fill rate) stays. unprivileged: memmon as nobody, no kernel notification armed."
    )
    if others:
        print()
        print("other outcomes:")
        print("\n".join(others))
    print()
    print("agents:")
    print("\n".join(notes))
    print()
    print(f"total bench time: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
