"""Real pre-fork servers for tests and benchmarks: the leaking WSGI app they serve lives here, the launchers and the
load client in :mod:`tests.prefork.servers`.

This module is what every server worker imports (gunicorn ``tests.prefork:create_app()``, uWSGI ``--eval``), so it
imports nothing heavy itself: Flask is imported inside :func:`create_app`.

The app's routes:

- ``GET /?bytes=N&sleep=S``: keeps ``N`` more bytes for good in a module-level list (a ``bytes`` object written in
  full, so every page is touched and charged to the cgroup), sleeps ``S`` seconds, and answers a short line with the
  worker's pid and what it holds. Without ``bytes`` it leaks ``$PREFORK_LEAK_BYTES`` (default 0); without ``sleep``,
  ``$PREFORK_RESPONSE_SECONDS`` (default 0: no sleep).
- ``GET /ping``: ``pong``, nothing leaked (the launchers' readiness probe).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

LEAK_ENV = "PREFORK_LEAK_BYTES"
SLEEP_ENV = "PREFORK_RESPONSE_SECONDS"

# What this worker has leaked so far: kept for the life of the process, as a real leak would be.
LEAKED: list[bytes] = []


def leaked_bytes() -> int:
    """Bytes this process holds in :data:`LEAKED`."""
    return sum(len(chunk) for chunk in LEAKED)


def create_app() -> Flask:
    """The leaking Flask app (see the module docstring); one per worker process, or one in a uWSGI master that
    forks its workers after loading it."""
    from flask import Flask, request

    app = Flask("memmon-prefork-leaky")
    default_leak = int(os.environ.get(LEAK_ENV, "0") or 0)
    default_sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
    held = [0]

    @app.get("/")
    def leak() -> str:
        """Leak ``bytes`` (every page written), sleep ``sleep`` seconds, answer one short line."""
        size = request.args.get("bytes", default=default_leak, type=int) or 0
        pause = request.args.get("sleep", default=default_sleep, type=float) or 0.0
        if size > 0:
            LEAKED.append(b"x" * size)
            held[0] += size
        if pause > 0:
            time.sleep(pause)
        return f"ok pid={os.getpid()} held={held[0]}\n"

    @app.get("/ping")
    def ping() -> str:
        """Readiness: nothing leaked."""
        return "pong\n"

    return app
