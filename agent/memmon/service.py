"""Running memmon as a long-lived agent: monitor + HTTP servers + signals, and the shutdown order.

SIGTERM/SIGINT stop the agent within 5 s: the servers close (requests still running, history queries included,
are cancelled), the check loop stops, alert handlers get a moment, the store is flushed and closed, and the process
exits 0. Every step is bounded on its own, so a slow one costs its own share of the 5 s and never the final flush.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time

from memmon.alerting.spool import SpoolError
from memmon.app import ProductionMemoryMonitor
from memmon.config import Settings
from memmon.exposition.server import MemoryHealthServer, ServerStartError
from memmon.kits.sdnotify import SystemdNotifier
from memmon.model import MB, Evaluation
from memmon.storage.store import StoreError

log = logging.getLogger("memmon.service")

EXIT_OK = 0
EXIT_CONFIG = 2
SHUTDOWN_SECONDS = 5.0
SERVER_STOP_SECONDS = 1.5
"""The HTTP servers' share of the stop: aiohttp waits up to 1 s for running handlers, then cancels them."""
FLUSH_RESERVE_SECONDS = 1.0
"""Kept back for the final flush and close of the store (one transaction of the last samples)."""


def status_line(evaluation: Evaluation) -> str:
    """systemd's STATUS=: the level and the judged memory (``systemctl status memmon`` shows it)."""
    sample = evaluation.sample
    usage = "unknown" if sample.target_bytes is None else f"{sample.target_bytes / MB:.0f} MB"
    percent = (
        ""
        if sample.percent_of_limit is None
        else f" ({sample.percent_of_limit:.0f}% of {sample.limit_source})"
    )
    return f"{evaluation.level.label}: {sample.target} {usage}{percent}"


class StatusReporter:
    """Tells systemd after every check (READY=1, WATCHDOG=1 when due, STATUS= when it changed). Several targets:
    the STATUS line (which finds the worst target, a walk over all of them) is recomputed at most once a second,
    not at each of hundreds of checks a second."""

    def __init__(
        self, monitor: ProductionMemoryMonitor, notifier: SystemdNotifier, *, every: float = 1.0
    ) -> None:
        self.monitor = monitor
        self.notifier = notifier
        self.every = every
        self._status = ""
        self._at = -math.inf

    def checked(self, evaluation: Evaluation) -> None:
        """The check listener."""
        now = time.monotonic()
        if len(self.monitor.watches) == 1 or now - self._at >= self.every:
            self._status, self._at = agent_status(self.monitor, evaluation), now
        self.notifier.checked(self._status)


def agent_status(monitor: ProductionMemoryMonitor, evaluation: Evaluation) -> str:
    """STATUS= after a check: that target's line for a single target; for several, the worst target's line after
    how many are watched (``3 targets, worst warning: cgroup:api.service 700 MB (72% of cgroup)``)."""
    count = len(monitor.watches)
    if count == 1:
        return status_line(evaluation)
    worst = monitor.latest or evaluation
    return f"{count} targets, worst {status_line(worst)}"


async def stop_all(server: MemoryHealthServer, monitor: ProductionMemoryMonitor) -> None:
    """Stop serving, then stop monitoring (which flushes and closes the store), within :data:`SHUTDOWN_SECONDS`.

    A server that does not close in its share is left behind with one warning line: the monitor's stop (and so
    the flush) runs regardless, and the process still exits 0.
    """
    try:
        async with asyncio.timeout(SERVER_STOP_SECONDS):
            await server.stop_server()
    except TimeoutError:
        log.warning(
            "the HTTP server did not close within %g s; stopping the monitor anyway", SERVER_STOP_SECONDS
        )
    await monitor.stop_monitoring(wait_seconds=SHUTDOWN_SECONDS - SERVER_STOP_SECONDS - FLUSH_RESERVE_SECONDS)


async def run_agent(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); returns the process exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    monitor = ProductionMemoryMonitor(settings=settings)
    server = MemoryHealthServer(monitor)
    notifier = SystemdNotifier()
    if notifier.enabled:  # not under systemd: nothing to tell, and no status to compute at every check
        monitor.add_check_listener(StatusReporter(monitor, notifier).checked)
    try:
        try:
            await monitor.start_monitoring()
        except (StoreError, SpoolError) as exc:
            log.error("storage.state_dir: %s", exc)
            return EXIT_CONFIG
        try:
            await server.start_server()
        except ServerStartError as exc:
            log.error("%s", exc)
            await monitor.stop_monitoring()
            return EXIT_CONFIG
        await stop.wait()
        log.info("stopping")
        notifier.stopping()
        await stop_all(server, monitor)
        log.info("stopped")
        return EXIT_OK
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
