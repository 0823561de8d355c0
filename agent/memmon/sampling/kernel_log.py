"""The kernel log's OOM kills: who the OOM killer took, read from ``/dev/kmsg`` without blocking.

Facts this relies on (Documentation/ABI/testing/dev-kmsg):

* every ``read()`` returns one record, ``<prefix>,<seq>,<usec since boot>,<flag>[,more];<message>\\n``, followed
  by optional continuation lines that start with a space (``KEY=value``); non-printable characters are escaped as
  ``\\xXX``. With ``O_NONBLOCK`` a read with nothing new fails with ``EAGAIN``; ``EPIPE`` says records were
  overwritten in the ring buffer before this reader got to them (the next read returns the oldest one left).
* ``lseek(fd, 0, SEEK_END)`` places the reader after the last record: only what the kernel logs later is read.
* Opening needs the right to read the kernel log: with ``kernel.dmesg_restrict = 1`` only a process with
  ``CAP_SYSLOG`` may (kernel/printk/printk.c ``devkmsg_open`` -> ``check_syslog_permissions``); otherwise
  ``EPERM``.

The records an OOM kill writes (mm/oom_kill.c, Linux 4.19 and later; checked on 6.18 with a cgroup v1 kill;
each is one line, wrapped here)::

    oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/app,
        task_memcg=/app,task=python,pid=15503,uid=0
    Memory cgroup out of memory: Killed process 15503 (python) total-vm:78308kB, anon-rss:68224kB,
        file-rss:5784kB, shmem-rss:0kB, UID:0 pgtables:196kB oom_score_adj:0

The first (``dump_oom_summary``) names the cgroups (paths relative to the memory hierarchy's root, as
``CgroupSample.path``); the second (``__oom_kill_process``, prefix ``Out of memory`` for a system-wide OOM) names
the victim and its memory. ``comm`` is at most 15 characters (TASK_COMM_LEN). The first is rate-limited with the
rest of the report (``oom_kill_process``: ``__ratelimit(&oom_rs)``, 10 per 5 s), the second never is: in an OOM
storm most kills come without their cgroup (``OomKill.memcg`` None), seen here on 6.18.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("memmon.sampling.kernel_log")

KMSG = Path("/dev/kmsg")
_RECORD_BYTES = 8192
"""A read buffer too small for a record fails with EINVAL; records are at most about 1 KiB (LOG_LINE_MAX)."""
_MAX_RECORDS = 10_000
"""At most this many records per :meth:`KernelLog.read_oom_kills` call, so that a flood never stalls a check."""

_SUMMARY = re.compile(r"^oom-kill:(?P<fields>.*)$")
_KILLED = re.compile(
    r"^(?P<scope>.*?out of memory.*?): Killed process (?P<pid>\d+) \((?P<name>.*)\)"
    r"(?: total-vm:(?P<total_vm>\d+)kB, anon-rss:(?P<anon_rss>\d+)kB)?",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class OomKill:
    """One victim of the OOM killer, as the kernel logged it."""

    pid: int
    name: str
    """The victim's ``comm`` (at most 15 characters)."""
    anon_rss_bytes: int | None
    """The victim's anonymous resident memory when it was killed."""
    total_vm_bytes: int | None
    memcg: str | None
    """The victim's cgroup (``task_memcg``, relative to the memory hierarchy's root); None when not logged."""
    oom_memcg: str | None
    """The cgroup whose limit was hit (``oom_memcg``); None for a system-wide OOM or when not logged."""
    cgroup_oom: bool
    """True for ``Memory cgroup out of memory``, False for a system-wide ``Out of memory``."""
    usec_since_boot: int
    """The record's timestamp (microseconds since boot)."""


def parse_record(raw: str) -> tuple[int, str] | None:
    """(timestamp in microseconds since boot, message) of one record; None for a line that is not a record
    (a continuation line, garbage)."""
    prefix, sep, message = raw.partition(";")
    if not sep or raw.startswith(" "):
        return None
    fields = prefix.split(",")
    if len(fields) < 4 or not fields[2].isdigit():
        return None
    return int(fields[2]), message.rstrip("\n")


def parse_summary(message: str) -> dict[str, str] | None:
    """The ``key=value`` fields of an ``oom-kill:`` summary line, None for any other message."""
    match = _SUMMARY.match(message)
    if match is None:
        return None
    fields: dict[str, str] = {}
    for part in match["fields"].split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


class KernelLog:
    """Reads the OOM kills logged since it was opened; never blocks. Not thread-safe (one owner).

    ``open()`` (or the first read) opens ``path`` and seeks to its end. When it cannot be opened (no CAP_SYSLOG
    under ``dmesg_restrict``, no such device in a container), that is logged once at debug level, ``available``
    is False with ``reason`` set, and every read returns nothing.
    """

    def __init__(self, path: Path = KMSG) -> None:
        self.path = path
        self._fd: int | None = None
        self.reason: str | None = None
        """Why the kernel log cannot be read; None while it can (or has not been tried)."""
        self._pending_summary: dict[str, str] | None = None
        self._lost = 0

    @property
    def available(self) -> bool:
        """Whether the log is open and readable (tries to open it the first time)."""
        return self.open()

    @property
    def lost_records(self) -> int:
        """How many times records were overwritten before they were read (EPIPE)."""
        return self._lost

    def open(self) -> bool:
        """Open and seek to the end (once); False when the log cannot be read."""
        if self._fd is not None:
            return True
        if self.reason is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.reason = f"cannot read the kernel log {self.path}: {exc.strerror or exc}"
            if exc.errno == errno.EPERM:
                self.reason += " (needs CAP_SYSLOG while kernel.dmesg_restrict is 1)"
            log.debug("%s; OOM kill victims are guessed from the processes that vanished", self.reason)
            return False
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:  # a regular file or pipe standing in for the device: read from where it is
            log.debug("cannot seek to the end of %s: %s", self.path, exc)
        self._fd = fd
        return True

    def read_oom_kills(self) -> list[OomKill]:
        """The OOM kills logged since the previous call (or since opening), oldest first."""
        if not self.open():
            return []
        assert self._fd is not None
        kills: list[OomKill] = []
        for _ in range(_MAX_RECORDS):
            try:
                chunk = os.read(self._fd, _RECORD_BYTES)
            except BlockingIOError:
                break  # EAGAIN: nothing more for now
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read them; go on with the oldest left
                    self._lost += 1
                    continue
                self.reason = f"reading the kernel log {self.path} failed: {exc.strerror or exc}"
                log.debug("%s; OOM kill victims are guessed from now on", self.reason)
                self.close()
                break
            if not chunk:
                break  # end of a regular file (tests feed one): the device itself never returns 0
            for line in chunk.decode("utf-8", "replace").splitlines():
                kill = self._feed(line)
                if kill is not None:
                    kills.append(kill)
        return kills

    def _feed(self, line: str) -> OomKill | None:
        record = parse_record(line)
        if record is None:
            return None
        usec, message = record
        summary = parse_summary(message)
        if summary is not None:
            self._pending_summary = summary
            return None
        match = _KILLED.match(message)
        if match is None:
            return None
        pid = int(match["pid"])
        summary, self._pending_summary = self._pending_summary, None
        if summary is not None and summary.get("pid") != str(pid):
            summary = None  # the summary of another kill (or a lost record between them)
        summary = summary or {}
        return OomKill(
            pid=pid,
            name=match["name"],
            anon_rss_bytes=None if match["anon_rss"] is None else int(match["anon_rss"]) * 1024,
            total_vm_bytes=None if match["total_vm"] is None else int(match["total_vm"]) * 1024,
            memcg=summary.get("task_memcg"),
            oom_memcg=summary.get("oom_memcg"),
            cgroup_oom=match["scope"].lower().startswith("memory cgroup"),
            usec_since_boot=usec,
        )

    def close(self) -> None:
        """Close the device (idempotent); a later read opens it again, from its end."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
