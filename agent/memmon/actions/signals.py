"""Signals to the target: a per-level ``signal`` action, and the ``signal`` graceful-restart strategy.

The restart sends the configured signal (SIGTERM by default) so the service drains and exits by itself (its
supervisor -- systemd, the kubelet, gunicorn's arbiter -- starts it again), waits ``grace_seconds`` for the
processes to be gone, and sends SIGKILL to what is left only when ``kill_after_grace`` is set.

A reload signal (SIGHUP: gunicorn's and uWSGI's masters reload gracefully, nginx-style) means something else by
success: the signalled process stays, and its workers are *replaced*. With SIGHUP the strategy waits for every
worker it saw before the signal to be gone and a new one to be up (a process without children: for it to be
still alive), and never sends SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from memmon.actions.targets import TargetProcesses
from memmon.model import ActionResult, frozen_mapping
from memmon.sampling.prefork import children_of

RELOAD_SIGNALS = frozenset({signal.SIGHUP})
"""Signals whose success is "replaced" (the process reloads), not "exited"."""


def send_signal(pids: tuple[int, ...], signum: signal.Signals) -> tuple[list[int], dict[int, str]]:
    """(pids signalled, pid -> error for the others)."""
    sent: list[int] = []
    failed: dict[int, str] = {}
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError as exc:
            failed[pid] = exc.strerror or str(exc)
        else:
            sent.append(pid)
    return sent, failed


def alive(pid: int) -> bool:
    """Whether ``pid`` still exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class SignalAction:
    """Sends one signal to the target processes (e.g. SIGUSR1 "drop your caches" at critical)."""

    def __init__(self, targets: TargetProcesses, signal_name: str) -> None:
        self.targets = targets
        self.signum = signal.Signals[signal_name]

    def run(self) -> ActionResult:
        """Signal every target process now."""
        started = time.time()
        pids, source = self.targets.resolve()
        sent, failed = send_signal(pids, self.signum)
        return ActionResult(
            action=f"signal:{self.signum.name}",
            success=bool(sent) and not failed,
            started_at=started,
            duration_seconds=time.time() - started,
            detail=frozen_mapping({"sent": sent, "failed": failed, "targets": source}),
            error=None if sent and not failed else f"no process signalled ({failed or 'no target process'})",
        )


class SignalRestart:
    """The ``signal`` strategy: signal, wait for exit, optionally SIGKILL."""

    name = "restart:signal"

    def __init__(
        self,
        targets: TargetProcesses,
        *,
        signal_name: str = "SIGTERM",
        grace_seconds: float = 30.0,
        kill_after_grace: bool = False,
        is_alive: Callable[[int], bool] = alive,
        poll: float = 0.02,
    ) -> None:
        self.targets = targets
        self.signum = signal.Signals[signal_name]
        self.grace_seconds = grace_seconds
        self.kill_after_grace = kill_after_grace
        self.is_alive = is_alive
        self.poll = poll

    @property
    def expects(self) -> str:
        """``replaced`` for a reload signal, else ``exited``."""
        return "replaced" if self.signum in RELOAD_SIGNALS else "exited"

    async def restart(self, reason: str) -> ActionResult:
        """Signal the target and wait for it to exit (or, for a reload signal, for its workers to be replaced);
        success when that happened within ``grace_seconds``."""
        started = time.time()
        pids, source = self.targets.resolve()
        if self.expects == "replaced":
            return await self._reload(pids, source, reason, started)
        sent, failed = send_signal(pids, self.signum)
        deadline = time.monotonic() + self.grace_seconds
        remaining = [pid for pid in sent if self.is_alive(pid)]
        while remaining and time.monotonic() < deadline:
            await asyncio.sleep(self.poll)
            remaining = [pid for pid in remaining if self.is_alive(pid)]
        exited_in = time.time() - started
        killed: list[int] = []
        if remaining and self.kill_after_grace:
            killed, _ = send_signal(tuple(remaining), signal.SIGKILL)
        error = None
        if not sent:
            error = f"no process to signal ({source}; {failed or 'none found'})"
        elif remaining:
            error = f"{len(remaining)} process(es) still running after {self.grace_seconds:g}s" + (
                "; sent SIGKILL" if killed else ""
            )
        return self._result(
            started,
            error,
            {
                "signalled": sent,
                "failed": failed,
                "still_running": remaining,
                "killed": killed,
                "exit_seconds": round(exited_in, 3),
                "targets": source,
                "reason": reason,
            },
        )

    async def _reload(self, pids: tuple[int, ...], source: str, reason: str, started: float) -> ActionResult:
        """A reload: the signalled processes stay; done when the workers seen before are gone and new ones up."""
        old = {pid: set(children_of(pid)) for pid in pids}
        sent, failed = send_signal(pids, self.signum)

        def replaced() -> bool:
            for pid in sent:
                if not self.is_alive(pid):
                    return False
                now = set(children_of(pid))
                if old[pid] and (now & old[pid] or not now):
                    return False
            return True

        deadline = time.monotonic() + self.grace_seconds
        done = replaced()
        while not done and time.monotonic() < deadline:
            await asyncio.sleep(self.poll)
            done = replaced()
        error = None
        if not sent:
            error = f"no process to signal ({source}; {failed or 'none found'})"
        elif not done:
            gone = [pid for pid in sent if not self.is_alive(pid)]
            error = (
                f"process(es) {gone} exited on {self.signum.name} (expected a reload)"
                if gone
                else f"workers not replaced within {self.grace_seconds:g}s"
            )
        return self._result(
            started,
            error,
            {
                "signalled": sent,
                "failed": failed,
                "old_workers": sorted(p for workers in old.values() for p in workers),
                "new_workers": sorted(p for pid in sent for p in children_of(pid)),
                "reload_seconds": round(time.time() - started, 3),
                "targets": source,
                "reason": reason,
            },
        )

    def _result(self, started: float, error: str | None, detail: dict[str, object]) -> ActionResult:
        return ActionResult(
            action=self.name,
            success=error is None,
            started_at=started,
            duration_seconds=time.time() - started,
            detail=frozen_mapping({"signal": self.signum.name, "expects": self.expects, **detail}),
            error=error,
        )
