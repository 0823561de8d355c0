"""The app of the shared-PID-namespace test: a supervisor that keeps one worker running, like a pre-fork server's
master. Runs inside its own container (read-only root, uid 65532, a memory limit); prints one JSON line per event.

    python leaky_app.py supervise     start worker generation 0, restart it whenever it exits (at most 5 times)
    python leaky_app.py worker N      generation 0 leaks LEAK_MB_PER_SECOND (default 40) MiB a second, touching
                                      every page, until LEAK_CAP_MB (default 1024) or SIGTERM; later generations
                                      hold nothing and wait. SIGTERM: a "graceful-exit" line, exit code 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType

MIB = 2**20
MAX_RESTARTS = 5


def say(event: str, **fields: object) -> None:
    """One JSON line on stdout (the container's log)."""
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


def supervise() -> None:
    """Keep one worker running; forward SIGTERM to it and stop."""
    stopping = False
    worker: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if worker is not None:
            worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    for generation in range(MAX_RESTARTS + 1):
        worker = subprocess.Popen([sys.executable, __file__, "worker", str(generation)])
        say("worker-started", generation=generation, worker=worker.pid)
        code = worker.wait()
        say("worker-exit", generation=generation, worker=worker.pid, code=code)
        if stopping:
            return
    say("gave-up", restarts=MAX_RESTARTS)


def work(generation: int) -> None:
    """Generation 0 leaks until the cap; every generation exits 0 on SIGTERM, saying how much it held."""
    held: list[bytearray] = []

    def graceful(signum: int, frame: FrameType | None) -> None:
        say("graceful-exit", generation=generation, held_mb=len(held))
        sys.exit(0)

    signal.signal(signal.SIGTERM, graceful)
    rate = float(os.environ.get("LEAK_MB_PER_SECOND", "40"))
    cap = int(os.environ.get("LEAK_CAP_MB", "1024"))
    step = 0.05
    while generation == 0 and len(held) < cap:
        for _ in range(max(1, round(rate * step))):
            held.append(bytearray(b"x" * MIB))  # written, not just reserved: resident at once
        time.sleep(step)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1:2] == ["supervise"]:
        supervise()
    elif sys.argv[1:2] == ["worker"] and len(sys.argv) == 3:
        work(int(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} supervise | worker GENERATION")
