"""Pre-fork servers under a leak: the kernel OOM killer alone, the server's own ``--max-requests``, and memmon.

Each run starts a real server with 3 workers serving a leaking Flask app (``tests/prefork``) inside a fresh
512 MiB cgroup v1 memory cgroup (swap limited too, where there is some) and loads it from 127.0.0.1 with an
open-loop client: 30 requests a second for ``--duration`` seconds (default 30), each on its own connection, never
retried, failed after 5 s. Every request leaks ``rate / 30`` MiB (MB = MiB here), every page written, so the server
as a whole leaks at ``rate`` MiB/s wherever the requests land. Servers:

- **gunicorn-sync**: gunicorn, 3 ``sync`` workers;
- **gunicorn-gthread**: gunicorn, 3 ``gthread`` workers with ``--threads 2``;
- **uwsgi**: uWSGI ``--master --processes 3 --http-socket`` (the app loaded in the master, workers forked from it).

Protections (the rows):

1. **kernel**: none; the kernel OOM killer kills whatever it picks when the cgroup hits its limit.
2. **max-requests**: the server's own recycling, tuned per rate: a worker is recycled after ``N`` requests, where
   ``N`` requests leak the worker's share of 70 % of the limit (``N = floor(0.70 * 512 MiB / 3 / leak per
   request)``, ``--max-requests-fraction`` changes the 70 %). gunicorn gets ``--max-requests N - J
   --max-requests-jitter J`` with ``J = max(1, N // 10)`` (so no worker goes past ``N``); uWSGI gets
   ``--max-requests N --min-worker-lifetime 0 --forkbomb-delay 0``. Both extra flags are needed for uWSGI's
   recycling to keep up (``--uwsgi-recycling ''`` drops them): uWSGI recycles a worker only once it is
   ``--min-worker-lifetime`` seconds old (default 10), by which time a worker leaking 33 MB/s (100 MB/s over 3
   workers) has leaked 330 MiB and the kernel has killed it; and after more than ``processes`` respawns in a row,
   each within about a second (its master's check interval) of the one before (at 500 MB/s a worker lives 0.7 s),
   its master sleeps ``--forkbomb-delay`` seconds (default 2) without respawning or reaping anyone, so requests
   queue and time out (uWSGI 2.0 ``core/master.c``; OOM-killed workers count too).
   The ``N`` used is printed.
3. **memmon**: ``python -m memmon --server gunicorn|uwsgi --pid <master> --cgroup <the cgroup>`` with its shipped
   defaults otherwise, started once the server answers; the client starts once memmon's ``/health`` answers.

Per cell (server, rate, protection), ``--runs`` runs (default 3), interleaved (run 1 of every cell, then run 2...)
so that the load of this shared machine falls on every cell alike. Columns, each the median and the min-max over
the runs:

- **OOM kills**: the rise of the cgroup's ``oom_kill`` counter (``memory.oom_control``) during the run;
- **failed**: requests that got no complete 200 answer (refused, reset, closed without answer, timed out after 5 s);
- **longest stall**: the largest gap between two successive successful completions, the run's start and end
  counting as completions (a healthy server at 30 req/s shows about 0.03-0.1 s);
- **p99**: 99th percentile latency of the successful requests;
- **memmon actions**: actions memmon recorded (``memmon_actions_total``, outcomes other than skipped or dry run);
- **workers replaced**: worker processes the server started during the run beyond its first 3 (recycled, OOM-killed
  or restarted; counted from its log).

A cell whose runs could not run (memmon refused its flags, a server did not start) shows ``error`` and the reason
below the table; the other cells still run.

Usage: ``python bench/prefork.py [--quick] [--runs 3] [--duration 30] [--rates 20,100,500]
[--servers gunicorn-sync,gunicorn-gthread,uwsgi] [--rows kernel,max-requests,memmon] [--memmon-server-args
'--forkbomb-delay 0'] [--max-requests-tuned-for 20]`` (``--memmon-server-args``: server flags for the memmon row
only, by default it runs the server's defaults like the kernel row; ``--max-requests-tuned-for``: one N, tuned for
that rate, at every rate, as an operator who tuned it once would run it). ``--quick`` (the smoke
test): 1 run of 2 s at 100 MB/s per cell, figures not meaningful. Results are also written as JSON to
``bench/results/prefork-<time>.json`` (not for ``--quick`` unless ``--json`` says where). Needs root and a writable
cgroup v1 memory hierarchy at /sys/fs/cgroup/memory; otherwise it says so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.prefork.servers import (  # noqa: E402 - the repository root goes on sys.path first
    MIB,
    SERVER_KINDS,
    PreforkServer,
    free_port,
    launch,
    leak_path,
    run_load,
    venv_binary,
    why_not_runnable,
)

LIMIT = 512 * MIB
WORKERS = 3
REQUEST_RATE = 30.0
REQUEST_TIMEOUT = 5.0
ROWS = ("kernel", "max-requests", "memmon")
PRESETS = {"gunicorn-sync": "gunicorn", "gunicorn-gthread": "gunicorn", "uwsgi": "uwsgi"}


# -- the protections ---------------------------------------------------------------------------------------------


def leak_per_request(rate: float) -> int:
    """Bytes each request leaks so that the server leaks ``rate`` MiB/s at :data:`REQUEST_RATE` requests a
    second."""
    return int(rate * MIB / REQUEST_RATE)


def max_requests(rate: float, fraction: float) -> int:
    """Requests after which a worker has leaked its share (1/:data:`WORKERS`) of ``fraction`` of the limit."""
    return max(1, math.floor(fraction * LIMIT / WORKERS / leak_per_request(rate)))


UWSGI_RECYCLING = "--min-worker-lifetime 0 --forkbomb-delay 0"


def max_requests_args(
    kind: str, rate: float, fraction: float, uwsgi_extra: str = UWSGI_RECYCLING
) -> list[str]:
    """The server's own recycling flags for ``rate`` (see the module docstring); ``uwsgi_extra`` follows uWSGI's
    ``--max-requests``."""
    n = max_requests(rate, fraction)
    if kind == "uwsgi":
        return ["--max-requests", str(n), *uwsgi_extra.split()]
    jitter = max(1, n // 10) if n > 1 else 0
    return ["--max-requests", str(n - jitter), "--max-requests-jitter", str(jitter)]


def agent_env() -> dict[str, str]:
    """This environment without memmon's settings and the guide's variables (no receiver is ever posted to, no
    Kubernetes API called)."""
    drop = {"MEMORY_HEALTH_PORT", "PROMETHEUS_PORT", "MONITORING_LOG_LEVEL", "SLACK_WEBHOOK_URL", "ALERT_EMAIL",
            "POD_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"}  # fmt: skip
    return {
        key: value for key, value in os.environ.items() if not key.startswith("MEMMON_") and key not in drop
    }


class Memmon:
    """A real memmon watching ``server`` with the server's preset; stderr goes to a file, never a pipe."""

    def __init__(self, server: PreforkServer, workdir: Path) -> None:
        """Start it (it is not ready yet: see :meth:`wait_ready`)."""
        self.port = free_port()
        self.log_path = workdir / "memmon.log"
        self.argv = [sys.executable, "-m", "memmon", "--server", PRESETS[server.kind], "--pid", str(server.master_pid),
                     "--cgroup", str(server.cgroup), "--health-port", str(self.port), "--prometheus-port", "0",
                     "--state-dir", str(workdir / "state")]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=agent_env(),
                cwd=ROOT,
            )

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` on its health port: (status, body); OSError when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:  # 503 while critical: an answer all the same
            return error.code, error.read()

    def log_tail(self, lines: int = 3) -> str:
        """Its last log lines, on one line."""
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/health`` answers with a status other than ``starting``; RuntimeError (with its log's tail) when
        memmon exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memmon exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                if json.loads(self.get("/health")[1])["status"] != "starting":
                    return
            time.sleep(0.1)
        raise RuntimeError(f"memmon did not serve /health within {timeout:g} s: {self.log_tail()}")

    def actions(self) -> int | None:
        """Actions recorded (``memmon_actions_total`` summed over outcomes other than ``skipped`` and ``dry_run``);
        ``recent_actions`` of ``/health`` (its last 10 at most) when /metrics does not say; None when neither
        answers."""
        with contextlib.suppress(OSError, ValueError):
            text = self.get("/metrics")[1].decode()
            total, seen = 0.0, False
            for line in text.splitlines():
                match = re.match(r"memmon_actions_total\{(.*)\} (\S+)$", line)
                if match:
                    seen = True
                    if not re.search(r'outcome="(skipped|dry_run)"', match.group(1)):
                        total += float(match.group(2))
            if seen or "memmon_" in text:
                return round(total)
        with contextlib.suppress(OSError, ValueError, KeyError):
            return len(json.loads(self.get("/health")[1])["recent_actions"])
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (this process only)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def memmon_beside(server: PreforkServer) -> Iterator[Memmon]:
    """A ready memmon watching ``server`` for the duration of the block; stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="memmon-prefork-bench-") as work:
        agent = Memmon(server, Path(work))
        try:
            agent.wait_ready()
            yield agent
        finally:
            agent.stop()


# -- one run -----------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run of one cell."""

    server: str
    rate: float
    row: str
    error: str | None = None
    oom_kills: int = 0
    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    longest_stall: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    memmon_actions: int | None = None
    workers_replaced: int = 0
    max_send_lag: float = 0.0
    server_args: list[str] = field(default_factory=list)
    seconds: float = 0.0


def one_run(kind: str, rate: float, row: str, args: argparse.Namespace) -> Run:
    """Start the server (and memmon), load it for ``args.duration`` seconds, stop everything, report."""
    tuned = args.max_requests_tuned_for or rate
    recycling = max_requests_args(kind, tuned, args.max_requests_fraction, args.uwsgi_recycling)
    extra = (
        recycling if row == "max-requests" else (args.memmon_server_args.split() if row == "memmon" else [])
    )
    run = Run(kind, rate, row, server_args=extra)
    started = time.monotonic()
    try:
        with (
            launch(kind, workers=WORKERS, limit=LIMIT, extra_args=extra) as server,
            contextlib.ExitStack() as stack,
        ):
            agent = stack.enter_context(memmon_beside(server)) if row == "memmon" else None
            kills_before, starts_before = server.oom_kills(), server.workers_started()
            result = run_load(
                server.port, rate=REQUEST_RATE, duration=args.duration, path=leak_path(leak_per_request(rate)),
                request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
            run.oom_kills = server.oom_kills() - kills_before
            run.workers_replaced = server.workers_started() - starts_before
            if agent is not None:
                run.memmon_actions = agent.actions()
    except Exception as exc:  # a cell that cannot run is reported, the others go on
        run.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        run.seconds = time.monotonic() - started
        return run
    run.sent, run.failed, run.errors = result.total, result.failed, result.errors
    run.longest_stall = result.longest_stall
    run.p50_ms = None if result.latency_p50 is None else result.latency_p50 * 1000
    run.p99_ms = None if result.latency_p99 is None else result.latency_p99 * 1000
    run.max_send_lag = result.max_send_lag
    run.seconds = time.monotonic() - started
    return run


# -- the report ----------------------------------------------------------------------------------------------------


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """``median (min-max)`` of the values that are not None; the median alone when all agree; ``-`` for none."""
    present = [value for value in values if value is not None]
    if not present:
        return "-"
    low, high, middle = min(present), max(present), statistics.median(present)
    text = f"{middle:,.{digits}f}"
    return text if low == high else f"{text} ({low:,.{digits}f}-{high:,.{digits}f})"


def versions() -> dict[str, str]:
    """Versions of what runs: Python, gunicorn, uWSGI, Flask, memmon."""
    found = {"python": sys.version.split()[0]}
    for name in ("gunicorn", "flask", "memmon"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    uwsgi = venv_binary("uwsgi")
    found["uwsgi"] = "not installed"
    if uwsgi is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found["uwsgi"] = subprocess.run(
                [str(uwsgi), "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
    try:
        importlib.metadata.version("setproctitle")
        found["setproctitle"] = "installed (gunicorn's process titles differ from an operator's without it)"
    except importlib.metadata.PackageNotFoundError:
        found["setproctitle"] = "not installed"
    return found


def print_report(
    runs: list[Run], args: argparse.Namespace, found: dict[str, str], load_at_start: str, took: float
) -> None:
    """The environment, the table, the max-requests used and the errors, in markdown."""
    print(f"# Pre-fork servers under a leak — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"{os.cpu_count()} CPUs, kernel {os.uname().release} (cgroup v1 memory at /sys/fs/cgroup/memory), "
        f"load average at start {load_at_start}; Python {found['python']}, gunicorn {found['gunicorn']}, "
        f"uWSGI {found['uwsgi']}, Flask {found['flask']}, memmon {found['memmon']}; setproctitle "
        f"{found['setproctitle']}"
    )
    print(
        f"{WORKERS} workers per server in a {LIMIT // MIB} MiB cgroup; open-loop client {REQUEST_RATE:g} req/s for "
        f"{args.duration:g} s, one connection per request, no retry, {REQUEST_TIMEOUT:g} s timeout; "
        f"{args.runs} run(s) per cell" + (" (quick smoke run, figures not meaningful)" if args.quick else "")
    )
    print()
    print(
        "| server | leak MB/s | protection | runs | OOM kills | failed requests | longest stall, s "
        "| p99 latency, ms | memmon actions | workers replaced |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    problems: list[str] = []
    for kind in args.servers:
        for rate in args.rates:
            for row in args.rows:
                cell = [run for run in runs if (run.server, run.rate, run.row) == (kind, rate, row)]
                good = [run for run in cell if run.error is None]
                problems += [f"- {kind}, {rate:g} MB/s, {row}: {run.error}" for run in cell if run.error]
                if not good:
                    print(f"| {kind} | {rate:g} | {row} | 0/{len(cell)} | error | | | | | |")
                    continue
                print(
                    f"| {kind} | {rate:g} | {row} | {len(good)}/{len(cell)} "
                    f"| {spread([r.oom_kills for r in good])} | {spread([r.failed for r in good])} "
                    f"| {spread([r.longest_stall for r in good], 2)} | {spread([r.p99_ms for r in good], 1)} "
                    f"| {spread([r.memmon_actions for r in good]) if row == 'memmon' else '-'} "
                    f"| {spread([r.workers_replaced for r in good])} |"
                )
    print()
    print(
        "Each cell: median (min-max) over its runs. OOM kills: rise of the cgroup's `oom_kill` counter. Failed: no "
        "complete 200 answer. Longest stall: largest gap between successive successful completions (run start "
        "and end included). p99: successful requests. memmon actions: `memmon_actions_total` (not skipped / dry "
        "run). Workers replaced: workers started during the run beyond the first ones (from the server's log)."
    )
    if "max-requests" in args.rows:
        print()
        print(
            f"max-requests used (a worker's share of {args.max_requests_fraction:.0%} of the limit, "
            f"in requests of rate/{REQUEST_RATE:g} MiB):"
        )
        for rate in args.rates:
            leak = leak_per_request(rate)
            flags = {
                kind: " ".join(
                    max_requests_args(
                        kind,
                        args.max_requests_tuned_for or rate,
                        args.max_requests_fraction,
                        args.uwsgi_recycling,
                    )
                )
                for kind in args.servers
            }
            n = max_requests(args.max_requests_tuned_for or rate, args.max_requests_fraction)
            print(
                f"- {rate:g} MB/s ({leak / MIB:.2f} MiB a request): N = {n}; "
                + "; ".join(f"{kind}: `{text}`" for kind, text in flags.items())
            )
    failures: dict[str, int] = {}
    for run in runs:
        for error, count in run.errors.items():
            key = f"{run.server}, {run.row}: {error}"
            failures[key] = failures.get(key, 0) + count
    if failures:
        print()
        print("failed requests by kind (all runs and rates):")
        print("\n".join(f"- {key}: {count}" for key, count in sorted(failures.items())))
    lag = max((run.max_send_lag for run in runs if run.error is None), default=0.0)
    print()
    print(
        f"client: worst lag behind its send schedule {lag * 1000:.0f} ms (large values: the client was starved)"
    )
    if problems:
        print()
        print("runs that could not run:")
        print("\n".join(dict.fromkeys(problems)))
    print()
    print(f"total bench time: {took:.0f} s")


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 run of 2 s at 100 MB/s per cell: a smoke test"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (default 3)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per run (default 30)")
    parser.add_argument("--rates", default="20,100,500", help="leak rates, MB/s, comma-separated")
    parser.add_argument("--servers", default=",".join(SERVER_KINDS), help="servers, comma-separated")
    parser.add_argument("--rows", default=",".join(ROWS), help="protections, comma-separated")
    parser.add_argument(
        "--max-requests-tuned-for",
        type=float,
        default=None,
        help="max-requests: tune N for this leak rate (MB/s) at every rate (default: each cell's own rate)",
    )
    parser.add_argument(
        "--memmon-server-args",
        default="",
        help="memmon row: extra server flags (e.g. uWSGI '--forkbomb-delay 0'; default none: the server's defaults)",
    )
    parser.add_argument(
        "--max-requests-fraction", type=float, default=0.70,
        help="max-requests: recycle a worker once it leaked its share of this fraction of the limit (default 0.70)",
    )  # fmt: skip
    parser.add_argument(
        "--uwsgi-recycling", default=UWSGI_RECYCLING,
        help=f"max-requests: uWSGI flags after --max-requests N (default {UWSGI_RECYCLING!r}; '' keeps uWSGI's "
        "defaults)",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, help="write the runs here (default bench/results/prefork-<time>.json)"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.rates = 1, 2.0, "100"
    args.rates = [float(rate) for rate in args.rates.split(",") if rate]
    args.servers = [kind for kind in args.servers.split(",") if kind]
    args.rows = [row for row in args.rows.split(",") if row]
    for kind in args.servers:
        if kind not in SERVER_KINDS:
            parser.error(f"unknown server {kind!r}: expected {', '.join(SERVER_KINDS)}")
    for row in args.rows:
        if row not in ROWS:
            parser.error(f"unknown protection {row!r}: expected {', '.join(ROWS)}")
    return args


def main() -> None:
    """Run every cell ``--runs`` times, interleaved; print the report; save the JSON."""
    args = parse_args()
    reasons = {kind: why for kind in args.servers if (why := why_not_runnable(kind))}
    if reasons:  # a note, not a failure: the other benchmarks still run
        print(f"# prefork: not run on this machine: {'; '.join(f'{k}: {v}' for k, v in reasons.items())}")
        return

    def terminated(signum: int, frame: object) -> None:
        """SIGTERM unwinds through every ``finally``: servers, memmon and cgroups are cleaned up."""
        raise SystemExit(f"prefork: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    found = versions()
    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.monotonic()
    runs: list[Run] = []
    for index in range(args.runs):
        for kind in args.servers:
            for rate in args.rates:
                for row in args.rows:
                    run = one_run(kind, rate, row, args)
                    runs.append(run)
                    outcome = run.error or (
                        f"{run.oom_kills} OOM kills, {run.failed}/{run.sent} failed, stall {run.longest_stall:.2f} s"
                    )
                    print(
                        f"run {index + 1}/{args.runs} {kind} {rate:g} MB/s {row}: {outcome}", file=sys.stderr
                    )
    took = time.monotonic() - started
    print_report(runs, args, found, load_at_start, took)
    path = args.json or (
        None if args.quick else HERE / "results" / f"prefork-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "bench": "prefork", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
            "kernel": os.uname().release, "load_at_start": load_at_start, "versions": found,
            "limit_bytes": LIMIT, "workers": WORKERS, "request_rate": REQUEST_RATE, "duration": args.duration,
            "max_requests_fraction": args.max_requests_fraction,
            "uwsgi_recycling": args.uwsgi_recycling, "runs": [asdict(run) for run in runs],
        }  # fmt: skip
        path.write_text(json.dumps(document, indent=1) + "\n")
        print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
