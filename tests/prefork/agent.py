"""memmon as an operator starts it next to a pre-fork server: ``python -m memmon`` in a subprocess, flags and an
optional JSON config, its health API on a free loopback port; used by the pre-fork tests and ``bench/prefork.py``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.prefork.servers import free_port


@dataclass
class RunningAgent:
    """A memmon subprocess and its health port; ``log`` is filled when it has stopped."""

    process: subprocess.Popen[bytes]
    port: int
    log: str = ""

    def get(self, path: str = "/health") -> Any:
        """GET a JSON endpoint of the agent."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
            return json.load(answer)

    def actions(self) -> list[dict[str, Any]]:
        """``recent_actions`` of /health (the latest 10)."""
        return list(self.get("/health").get("recent_actions") or [])

    def action_totals(self) -> dict[tuple[str, str], float]:
        """``memmon_actions_total`` from /metrics: (action, outcome) -> count."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        totals: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            match = re.match(r'memmon_actions_total\{action="([^"]*)",outcome="([^"]*)"\} (\S+)', line)
            if match:
                totals[(match[1], match[2])] = float(match[3])
        return totals


@contextlib.contextmanager
def running_agent(
    args: Sequence[str],
    *,
    config: dict[str, Any] | None = None,
    start_timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[RunningAgent]:
    """Start memmon with ``args`` (and ``config`` as its --config file, ``env`` added to its environment), wait
    until /health answers, stop it with SIGTERM on the way out (its log is then in ``agent.log``)."""
    with tempfile.TemporaryDirectory(prefix="memmon-prefork-") as state:
        port = free_port()
        argv = [sys.executable, "-m", "memmon", *args, "--health-port", str(port), "--prometheus-port", "0"]
        argv += ["--state-dir", state]
        if config is not None:
            path = Path(state) / "config.json"
            path.write_text(json.dumps(config))
            argv += ["--config", str(path)]
        # A file, not a pipe: a pipe nobody reads fills up and then blocks memmon's logging (and its loop).
        log_path = Path(state) / "memmon.log"
        with log_path.open("wb") as log_file:
            environ = {**os.environ, **env} if env else None
            process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=environ)
        agent = RunningAgent(process, port)
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    agent.get("/health")
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"memmon did not start: {log_path.read_text()[-2000:]}") from None
                    time.sleep(0.1)
            yield agent
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            agent.log = log_path.read_text(errors="replace")
