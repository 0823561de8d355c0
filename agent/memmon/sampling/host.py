"""Host memory from one read of ``/proc/meminfo``, with psutil's definitions.

``psutil.virtual_memory()`` and ``psutil.swap_memory()`` each read ``/proc/meminfo`` (and more) and build
dozens of fields; a check needs six numbers, so this reads the file once and computes them the same way:

- ``total_bytes`` = ``MemTotal``; ``available_bytes`` = ``MemAvailable`` (the kernel's estimate of memory
  available for new work without swapping, Documentation/filesystems/proc.rst, "meminfo").
- ``used_percent`` = (total - available) / total * 100, rounded to one decimal like psutil.
- swap: used = ``SwapTotal`` - ``SwapFree``; percent = used / total * 100 (one decimal), 0 without swap.

Inside a container these are the *host's* numbers: the limit that kills a container is its cgroup's, which is
why ``SnapshotSampler`` prefers a cgroup limit below host memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from memmon.model import HostSample
from memmon.sampling.base import SourceUnavailable, read_file

_KIB = 1024
_WANTED = frozenset(
    (b"MemTotal", b"MemFree", b"MemAvailable", b"Buffers", b"Cached", b"SwapTotal", b"SwapFree")
)
"""The /proc/meminfo lines a host sample uses; the other ~50 are skipped before any parsing."""


def _percent(used: int, total: int) -> float:
    """psutil's ``usage_percent(used, total, round_=1)``: 0.0 when ``total`` is 0."""
    if total <= 0:
        return 0.0
    return round(used / total * 100.0, 1)


class HostSampler:
    """Reads ``/proc/meminfo`` once per ``sample()``, or at most once per ``max_age`` seconds when shared.

    ``max_age`` > 0: a sample younger than that is returned again (a multi-target agent's targets share one host
    reader: hundreds of targets checked each second need not each parse meminfo). Thread-safe: the cached
    ``(monotonic time, sample)`` pair is replaced as one reference.
    """

    def __init__(
        self,
        meminfo: Path = Path("/proc/meminfo"),
        *,
        max_age: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._meminfo = meminfo
        self._path = str(meminfo)
        self._max_age = max_age
        self._monotonic = monotonic
        self._cached: tuple[float, HostSample] | None = None

    @property
    def path(self) -> Path:
        """The meminfo file read."""
        return self._meminfo

    def sample(self) -> HostSample:
        """Host memory now (or ``max_age`` ago at most); raises ``SourceUnavailable`` when the file is unreadable
        or lacks ``MemTotal``."""
        cached = self._cached
        if cached is not None and self._monotonic() - cached[0] < self._max_age:
            return cached[1]
        now = self._monotonic()
        sample = self._sample()
        if self._max_age > 0:
            self._cached = (now, sample)
        return sample

    def _sample(self) -> HostSample:
        fields = self._read()
        try:
            total = fields["MemTotal"]
        except KeyError:
            raise SourceUnavailable(f"host {self._meminfo}: no MemTotal line") from None
        available = fields.get("MemAvailable", 0)
        if available == 0:
            # MemAvailable exists since Linux 3.14 and has been seen reading 0 (psutil issue 1915). psutil
            # then estimates from zoneinfo; the older "free + buffers + cached" estimate is close enough.
            available = fields.get("MemFree", 0) + fields.get("Buffers", 0) + fields.get("Cached", 0)
        if available > total:
            # Symptomatic of LXC-style containers that fake meminfo (psutil does the same).
            available = fields.get("MemFree", 0)
        swap_total = fields.get("SwapTotal", 0)
        swap_used = max(0, swap_total - fields.get("SwapFree", 0))
        return HostSample(
            total_bytes=total,
            available_bytes=available,
            used_percent=_percent(total - available, total),
            swap_total_bytes=swap_total,
            swap_used_bytes=swap_used,
            swap_percent=_percent(swap_used, swap_total),
        )

    def _read(self) -> dict[str, int]:
        """``{"MemTotal": bytes, ...}`` from lines like ``MemTotal:       24684096 kB``."""
        try:
            data = read_file(self._path)
        except OSError as exc:
            raise SourceUnavailable(f"host {self._meminfo}: {exc.strerror or exc}") from exc
        fields: dict[str, int] = {}
        for line in data.splitlines():
            key, sep, rest = line.partition(b":")
            if not sep or key not in _WANTED:
                continue
            parts = rest.split()
            if not parts:
                continue
            try:
                value = int(parts[0])
            except ValueError:
                continue
            # Sizes are in kB (really KiB); counts such as HugePages_Total carry no unit.
            unit = _KIB if len(parts) > 1 and parts[1] == b"kB" else 1
            fields[key.decode("ascii", "replace")] = value * unit
        return fields
