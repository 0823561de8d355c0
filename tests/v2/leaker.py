"""A leaking service for real-cgroup tests (modelled on LEAKER in tests/actions/test_oom_race.py).

    python leaker.py CGROUP_DIR RATE_MB_S CHUNK_MIB [START_DELAY_S [MAX_MIB]]

Joins the cgroup (writes its pid to ``CGROUP_DIR/cgroup.procs``), prints ``ready``, waits ``START_DELAY_S``
(default 0), then leaks ``RATE_MB_S`` MB/s (0 = as fast as it can) in ``CHUNK_MIB``-MiB steps, touching every
page, until it holds ``MAX_MIB`` (default 4096). On reaching it, prints ``held <MiB> <seconds>`` (seconds from
the first chunk to the last) and keeps holding. SIGTERM stops it like a service draining its work: it stops
leaking, prints ``graceful <MiB held>`` and exits 0. Everything goes to stdout, line by line.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

MB = 1_000_000
MIB = 1 << 20
POLL_SECONDS = 0.05

stopping = False


def drain(_signum: int, _frame: FrameType | None) -> None:
    global stopping
    stopping = True


def wait(seconds: float) -> None:
    """Sleep up to ``seconds``, returning early once SIGTERM has arrived."""
    deadline = time.monotonic() + seconds
    while not stopping and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, POLL_SECONDS))


def main(argv: list[str]) -> int:
    if not 3 <= len(argv) <= 5:
        print(__doc__, file=sys.stderr)
        return 2
    cgroup, rate, chunk = argv[0], float(argv[1]), int(argv[2])
    start_delay = float(argv[3]) if len(argv) > 3 else 0.0
    max_mib = int(argv[4]) if len(argv) > 4 else 4096
    signal.signal(signal.SIGTERM, drain)
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))
    print("ready", flush=True)
    wait(start_delay)
    held: list[bytes] = []
    leaked = 0
    started = time.monotonic()
    while not stopping and leaked < max_mib:
        held.append(b"\x01" * (min(chunk, max_mib - leaked) * MIB))  # bytes * n writes every page
        leaked += min(chunk, max_mib - leaked)
        if rate > 0:
            wait(started + leaked * MIB / (rate * MB) - time.monotonic())
    if not stopping:
        print(f"held {leaked} {time.monotonic() - started:.3f}", flush=True)
    while not stopping:
        wait(3600)
    print(f"graceful {leaked}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
