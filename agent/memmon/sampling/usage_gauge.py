"""The one number that kills, read cheaply: a cgroup's usage counter, or the resident size of a few processes.

Each gauge keeps its files open and re-reads them with ``os.pread(fd, n, 0)``: one syscall a file, no path
lookup, no parsing beyond one integer. Kernel files are generated on every read from offset 0 (seq_file), so a
kept fd sees the current value (measured here: a few microseconds a read, ``bench/usage_watch.py``).

- ``CgroupUsageGauge``: v2 ``memory.current``, v1 ``memory.usage_in_bytes`` (cgroup-v2.rst "memory.current";
  cgroup-v1/memory.rst 5.5). Usage includes page cache; ``inactive_file_bytes()`` reads ``memory.stat`` (more
  costly: the kernel flushes its per-cpu statistics) for when usage alone is not enough.
- ``ProcessRssGauge``: the sum of ``/proc/<pid>/statm`` resident pages (proc.rst, "/proc/<pid>/statm": field 2,
  in pages), for a target without a cgroup limit.

A read of a removed cgroup's file or of an exited process fails with an ``OSError`` (ENODEV for a removed
kernfs node, ESRCH for a process): the caller re-opens by path, which finds a recreated cgroup.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class CgroupUsage:
    """What to watch: the usage counter of the cgroup at ``directory`` (hierarchy ``version`` 1 or 2)."""

    directory: Path
    version: int


@dataclass(frozen=True)
class ProcessRss:
    """What to watch: the summed resident size of ``pids``."""

    pids: tuple[int, ...]


GaugeSpec = CgroupUsage | ProcessRss


class CgroupUsageGauge:
    """Reads a cgroup's usage from an fd opened once; ``OSError`` when the cgroup is gone."""

    def __init__(self, spec: CgroupUsage) -> None:
        self.spec = spec
        usage = "memory.current" if spec.version == 2 else "memory.usage_in_bytes"
        self._usage = os.open(spec.directory / usage, os.O_RDONLY | os.O_CLOEXEC)
        self._stat: int | None = None
        # v1's memory.stat has the hierarchical total_inactive_file; v2's inactive_file is hierarchical already.
        self._inactive_key = b"\ninactive_file " if spec.version == 2 else b"\ntotal_inactive_file "

    def read(self) -> int:
        """Usage in bytes now."""
        return int(os.pread(self._usage, 64, 0))

    def inactive_file_bytes(self) -> int:
        """``inactive_file`` of ``memory.stat`` (page cache the kernel reclaims first), 0 when absent."""
        if self._stat is None:
            self._stat = os.open(self.spec.directory / "memory.stat", os.O_RDONLY | os.O_CLOEXEC)
        data = b"\n" + os.pread(self._stat, 16384, 0)
        start = data.find(self._inactive_key)
        if start < 0:
            return 0
        start += len(self._inactive_key)
        end = data.find(b"\n", start)
        return int(data[start : end if end >= 0 else None])

    def close(self) -> None:
        """Close the fds. Idempotent."""
        for fd in (self._usage, self._stat):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._usage, self._stat = -1, None


class ProcessRssGauge:
    """Sums the resident size of a few processes from their kept-open ``statm`` files.

    A process that exited is dropped and reported by ``read()`` raising ``ProcessLookupError`` once; the
    others keep being read (the caller then asks for a fresh pid list).
    """

    def __init__(self, spec: ProcessRss, *, proc_root: Path = Path("/proc")) -> None:
        self.spec = spec
        self._fds: dict[int, int] = {}
        try:
            for pid in spec.pids:
                self._fds[pid] = os.open(proc_root / str(pid) / "statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.close()
            raise

    def read(self) -> int:
        """Summed resident bytes now; ``ProcessLookupError`` naming the pids that exited (dropped)."""
        total = 0
        gone: list[int] = []
        for pid, fd in self._fds.items():
            try:
                data = os.pread(fd, 128, 0)
            except OSError:
                gone.append(pid)
                continue
            if not data:  # a reaped process's statm reads empty
                gone.append(pid)
                continue
            total += int(data.split(None, 2)[1]) * _PAGE_SIZE
        if gone:
            for pid in gone:
                os.close(self._fds.pop(pid))
            raise ProcessLookupError(f"pid {', '.join(map(str, gone))} exited")
        return total

    def inactive_file_bytes(self) -> int:
        """Resident size has no reclaimable cache part here: 0."""
        return 0

    def close(self) -> None:
        """Close the fds. Idempotent."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


Gauge = CgroupUsageGauge | ProcessRssGauge


def open_gauge(spec: GaugeSpec) -> Gauge:
    """The gauge for ``spec``; ``OSError`` when its files cannot be opened (no such cgroup or process)."""
    if isinstance(spec, CgroupUsage):
        return CgroupUsageGauge(spec)
    return ProcessRssGauge(spec)
