"""A leaking service for the OOM-race tests on real cgroups, and how its run ended."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

# Joins the cgroup (as root), drops to `uid` when not 0, then leaks `rate` MB/s in `chunk` MiB steps at once.
# SIGTERM: stop leaking and exit 0 printing "graceful" -- unless `ignore` is 1, a service that does not drain.
LEAKER = r"""
import os, signal, sys, time
cgroup, rate, chunk, uid, ignore = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(cgroup + "/cgroup.procs", "w") as procs:
    procs.write("0")
if uid:
    os.setgid(uid)
    os.setuid(uid)
stopping = False
def drain(signum, frame):
    global stopping
    stopping = ignore != "1"
signal.signal(signal.SIGTERM, drain)
held, leaked, started = [], 0, time.monotonic()
while not stopping and leaked < 4096:
    held.append(b"\x01" * (chunk << 20))
    leaked += chunk
    pause = started + leaked / rate - time.monotonic()
    if pause > 0 and not stopping:
        time.sleep(pause)
print("graceful", leaked, flush=True)
"""


def oom_kills(cgroup: Path) -> int:
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise AssertionError("memory.oom_control has no oom_kill line (kernel < 4.13)")


def leak(
    cgroup: Path, rate: float, *, chunk: int = 1, uid: int = 0, ignore_sigterm: bool = False
) -> tuple[str, int]:
    """One leaking child run to its end: ('graceful' | 'oom-killed' | 'other (...)', OOM kills during it)."""
    before = oom_kills(cgroup)
    child = subprocess.Popen(
        [sys.executable, "-c", LEAKER, str(cgroup), str(rate), str(chunk), str(uid), "1" if ignore_sigterm else "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)
        child.wait(60)
        output = child.stdout.read() if ready else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    kills = oom_kills(cgroup) - before
    if child.returncode == 0 and output.startswith("graceful"):
        return "graceful", kills
    if child.returncode == -9 and kills:
        return "oom-killed", kills
    return f"other (exit {child.returncode}, {output.strip()!r})", kills
