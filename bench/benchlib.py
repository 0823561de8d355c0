"""Small helpers shared by the benchmarks that run real processes (ports, /proc figures, start and stop).

Additive only: each helper is independent; add yours at the end rather than changing one another script uses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank; the same rule as check_cost.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it, release it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far, in seconds (from /proc/PID/stat; its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of /proc/PID/status: ``VmRSS`` (resident now) or ``VmHWM`` (peak resident since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def memmon_argv(health_port: int, state_dir: str | Path, *extra: str) -> list[str]:
    """A real agent on 127.0.0.1: the ``memmon`` script beside this interpreter (the venv's), else ``-m memmon``.
    ``/metrics`` is served on the health port (``--prometheus-port 0``); ``extra`` flags follow."""
    script = Path(sys.executable).with_name("memmon")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "memmon"]
    return [*head, "--bind", "127.0.0.1", "--health-port", str(health_port), "--prometheus-port", "0",
            "--state-dir", str(state_dir), *extra]  # fmt: skip


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when ``proc`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; for this process only (never by name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
