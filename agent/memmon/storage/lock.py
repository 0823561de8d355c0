"""One agent per state directory: an exclusive ``flock`` on ``<state_dir>/memmon.lock`` while it monitors.

Two agents on one state directory (two ``make run`` on the default ``~/.local/state/memmon``, a second unit
pointed at the same ``--state-dir``) would write every sample twice, mix their alerts in one log and deliver a
spooled notification twice. The second one is refused instead: :meth:`StateDirLock.acquire` raises
:class:`StateDirBusy`, whose message names the holder as the lock file records it (pid, command, bind address).

``flock(2)`` locks belong to the open file description: the kernel releases them when the holder's last fd on it
closes, also when the holder is killed with SIGKILL, so a stale lock file never blocks a restart (its contents
are then just overwritten). A second ``open()`` in the same process is a second description and conflicts too,
so two monitors in one process are refused as well. The lock is advisory and local: on NFS, ``flock`` is
emulated with POSIX locks (nfs(5), "lock"), which still exclude other agents on other clients.

If the lock file itself is deleted while held (the state directory removed, ``rm memmon.lock``), a third agent
could lock a new file: :meth:`StateDirLock.verify` (run at each store flush) notices that the path no longer
names the locked file and locks a fresh one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path

from memmon.storage.store import StoreError

__all__ = ["LOCK_FILENAME", "StateDirBusy", "StateDirLock"]

LOCK_FILENAME = "memmon.lock"
_MAX_HOLDER_BYTES = 4096
log = logging.getLogger("memmon.store")


class StateDirBusy(StoreError):
    """Another process holds the state directory; the message names it (pid, command, bind address).

    A :class:`~memmon.store.StoreError`: the agent exits 2 with it, like any unusable state directory."""


class StateDirLock:
    """The exclusive lock on one state directory, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, state_dir: Path, *, bind: str | None = None) -> None:
        """Configure only. ``bind`` (``"host:port"``) is recorded for the next agent's refusal message."""
        self.path = Path(state_dir) / LOCK_FILENAME
        self.bind = bind
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self) -> None:
        """Create the directory (0o700) and the lock file (0o600), lock it without waiting, record who holds it.

        :class:`StateDirBusy` naming the holder when another process (or another monitor in this one) holds
        it; :class:`~memmon.store.StoreError` naming the file when it cannot be created or locked. No-op when
        already held.
        """
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirBusy(
                f"{self.path.parent} is in use by another memmon ({_describe(holder)}); "
                "stop it or give this one its own --state-dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            self._record(fd)
        except OSError as exc:  # a full disk must not refuse monitoring: the lock itself is held
            log.warning("cannot record the holder in %s: %s", self.path, exc.strerror or exc)
        stat = os.fstat(fd)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)

    def verify(self) -> None:
        """Lock a fresh lock file when the held one was deleted or replaced (one log line); never raises."""
        if self._fd is None:
            return
        try:
            stat = os.stat(self.path)
            if (stat.st_dev, stat.st_ino) == self._identity:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return  # cannot tell (EACCES, EIO): keep what is held
        old, self._fd = self._fd, None
        try:
            self.acquire()
        except StoreError as exc:
            self._fd = old  # keep the old lock: it still excludes agents that found the old file
            log.warning("state lock %s was removed and cannot be taken again: %s", self.path, exc)
            return
        os.close(old)
        log.warning("state lock %s was removed while memmon ran; locked a new one", self.path)

    def release(self) -> None:
        """Unlock and close (the file stays: deleting it would race with the next agent's lock). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last fd of the description releases the flock

    def _record(self, fd: int) -> None:
        holder = {
            "pid": os.getpid(),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:1000],
            "bind": self.bind,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)


def _read_holder(fd: int) -> dict[str, object]:
    """What the holder recorded; empty when unreadable (it may be writing it right now)."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(os.pread(fd, _MAX_HOLDER_BYTES, 0) or b"{}")
        if isinstance(data, dict):
            return data
    return {}


def _describe(holder: dict[str, object]) -> str:
    parts = [f"pid {holder.get('pid', 'unknown')}"]
    if holder.get("bind"):
        parts.append(f"serving on {holder['bind']}")
    if holder.get("command"):
        parts.append(f"command {holder['command']!r}")
    if holder.get("started_at"):
        parts.append(f"since {holder['started_at']}")
    return ", ".join(parts)
