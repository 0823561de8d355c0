"""The ``memory.high`` guard: on cgroup v2, let the kernel slow a runaway leak just above the emergency level.

cgroup-v2.rst, "memory.high": "the throttle limit on usage. If a cgroup's usage goes over the high boundary, the
processes of the cgroup are throttled and put under heavy reclaim pressure"; each time, ``memory.events`` counts
``high`` (and inotify reports the change: memmon's kernel events then run a check). The task sleeps on its way
back to user space, up to about 2 s a round (``mem_cgroup_handle_over_high``, mm/memcontrol.c): measured in User
Mode Linux, a 40 MiB/s leak slowed to under 1 MiB/s. That buys the graceful restart time where a fast leak would
otherwise reach ``memory.max`` and the OOM killer.

The trade-off: above the guard every allocation of the service is slowed (reclaim, then sleeps), so a service
that legitimately needs more than ``emergency + margin`` runs slowly instead of being OOM-killed. Hence the
``auto`` default turns the guard on only with a graceful restart strategy: memmon restarts the throttled
service soon. Usage counts page cache, which the kernel reclaims first: a cache-heavy service sees its cache
trimmed at the guard, not its anonymous memory throttled.

Rules: only a ``memory.high`` of ``max`` (nobody set one) is replaced; a value someone else set is never lowered
or changed; the value memmon wrote is put back to what was there when memmon stops or stops watching that
cgroup, unless someone changed it meanwhile. A refused write (read-only cgroupfs, no privilege) is a ``problem``
(listed under ``degraded``); memmon keeps monitoring.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("memmon.actions")

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class _Applied:
    """What memmon wrote to one cgroup, and what it replaced."""

    directory: Path
    inode: int
    ours: int
    original: str


class MemoryHighGuard:
    """Keeps one v2 cgroup's ``memory.high`` at ``emergency + margin_percent`` of the limit (page-aligned)."""

    def __init__(self, margin_percent: float, *, explicit: bool = False) -> None:
        self.margin_percent = margin_percent
        self.explicit = explicit
        """Configured ``on`` (not ``auto``): where no guard can be set (cgroup v1, no room), that is a problem."""
        self.problem: str | None = None
        self._applied: _Applied | None = None
        self._noted: str | None = None

    @property
    def applied_bytes(self) -> int | None:
        """The ``memory.high`` memmon keeps now, None when none."""
        return self._applied.ours if self._applied is not None else None

    def follow(
        self, directory: Path | None, version: int, emergency_bytes: int | None, limit_bytes: int | None
    ) -> None:
        """Apply or move the guard for this check's cgroup and thresholds; never raises."""
        if directory is None or version != 2 or emergency_bytes is None or limit_bytes is None:
            self.release()
            if self.explicit and directory is not None:
                why = "cgroup v1 has no memory.high" if version != 2 else "no emergency threshold or limit"
                self._set_problem(f"memory.high guard not possible: {why}")
            return
        wanted = (emergency_bytes + int(limit_bytes * self.margin_percent / 100)) // _PAGE * _PAGE
        if wanted >= limit_bytes:
            self.release()
            self._note(
                f"memory.high guard not set: emergency + margin reaches the limit ({limit_bytes} bytes)"
            )
            return
        try:
            inode = os.stat(directory).st_ino
            current = _read_high(directory)
        except OSError as exc:  # the cgroup went away between the check and now: the next check follows it
            self._applied = None if self._applied and self._applied.directory == directory else self._applied
            log.debug("memory.high guard: %s: %s", directory, exc)
            return
        applied = self._applied
        if applied is not None and (applied.directory, applied.inode) != (directory, inode):
            self.release()  # another cgroup (or this one recreated: nothing to put back there)
            applied = None
        if applied is not None and current != str(applied.ours):
            # Someone wrote over the guard: a value is theirs to keep; "max" (systemd re-applying
            # MemoryHigh=infinity) is a cgroup without one again, guarded below like a fresh one.
            if current != "max":
                self._note(f"{directory}/memory.high changed to {current} by someone else: left alone")
            self._applied = applied = None
        if applied is not None:
            if wanted != applied.ours and self._write(directory, str(wanted)):
                self._applied = _Applied(directory, inode, wanted, applied.original)
            return
        if current != "max":
            self._note(f"{directory}/memory.high is {current}, set by someone else: left alone")
            return
        if self._write(directory, str(wanted)):
            self._applied = _Applied(directory, inode, wanted, current)
            log.info("memory.high guard set on %s: %d bytes (was %s)", directory, wanted, current)

    def release(self) -> None:
        """Put back what memmon replaced, if the value is still memmon's. Idempotent; never raises."""
        applied, self._applied = self._applied, None
        if applied is None:
            return
        try:
            if os.stat(applied.directory).st_ino != applied.inode:
                return
            if _read_high(applied.directory) != str(applied.ours):
                return
        except OSError:
            return
        if self._write(applied.directory, applied.original):
            log.info("memory.high of %s put back to %s", applied.directory, applied.original)

    def _write(self, directory: Path, value: str) -> bool:
        try:
            # O_TRUNC as the shell's `echo v > memory.high` does (kernfs ignores it; a plain file needs it).
            fd = os.open(directory / "memory.high", os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            self._set_problem(f"cannot write {directory}/memory.high: {exc.strerror or exc}")
            return False
        self.problem = None
        return True

    def _set_problem(self, text: str) -> None:
        if text != self.problem:
            log.warning("memory.high guard: %s", text)
        self.problem = text

    def _note(self, text: str) -> None:
        if text != self._noted:
            log.info("%s", text)
            self._noted = text


def _read_high(directory: Path) -> str:
    with open(directory / "memory.high", "rb") as file:
        return file.read().decode().strip()
