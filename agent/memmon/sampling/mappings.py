"""Where another process's memory lives: its totals and its biggest mappings, from /proc (agent mode).

proc(5): ``/proc/PID/smaps_rollup`` (Linux >= 4.14) is one record with the process's summed ``Rss``, ``Pss``,
``Anonymous`` and ``Swap``; ``/proc/PID/smaps`` has one record per mapping, a header line::

    7f3a2c000000-7f3a30000000 rw-p 00000000 00:00 0                          [heap]

(address range, permissions, offset, device, inode, path) followed by ``Key:   value kB`` lines. The kernel
shows anonymous memory with no path; it is named ``[anon]`` here, next to the kernel's own ``[heap]``,
``[stack]``, ``[vdso]``, ``[anon:name]`` (prctl) and ``path (deleted)``.

Both files make the kernel walk the process's page tables: a read costs milliseconds for big processes, so
this is an on-request diagnostic, never part of the regular check. ``read_mappings`` never raises for the
process: a process that exited (or is a zombie) or may not be read (EACCES: another user, or ptrace rules)
gives a report with ``problem`` set and whatever could be read. Without ``smaps_rollup`` (older kernels) the
totals are summed from ``smaps``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_KB = 1024


@dataclass(frozen=True)
class MemoryMapping:
    """One mapping: its address range (hex, as the kernel prints it), permissions, path and resident sizes."""

    start: str
    end: str
    perms: str
    path: str
    rss_bytes: int
    pss_bytes: int | None
    anonymous_bytes: int | None


@dataclass(frozen=True)
class MappingReport:
    """A process's memory totals and its ``top`` mappings by RSS, biggest first.

    Totals are None when they could not be read (see ``problem``). ``source`` names the files the figures
    came from.
    """

    pid: int
    rss_bytes: int | None
    pss_bytes: int | None
    anonymous_bytes: int | None
    swap_bytes: int | None
    mappings: tuple[MemoryMapping, ...]
    source: str
    problem: str | None


def read_mappings(pid: int, *, top: int = 10, proc_root: Path = Path("/proc")) -> MappingReport:
    """Totals from ``smaps_rollup`` and the ``top`` mappings by RSS from ``smaps``; ``problem`` instead of
    raising when the process is gone or unreadable."""
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    directory = proc_root / str(pid)
    problems: list[str] = []
    sources: list[str] = []

    totals: dict[str, int] | None = None
    rollup = directory / "smaps_rollup"
    try:
        rollup_records = _parse(_read(rollup))
    except OSError as exc:
        if not directory.is_dir():
            return _nothing(pid, f"pid {pid}: no such process (it exited)")
        if exc.errno != errno.ENOENT:
            return _nothing(pid, _reason(rollup, exc))
    else:
        if rollup_records:
            totals = rollup_records[0][1]
            sources.append(str(rollup))
        else:
            problems.append(f"{rollup}: empty (the process exited and is a zombie, or is a kernel thread)")

    mappings: tuple[MemoryMapping, ...] = ()
    smaps = directory / "smaps"
    if top > 0 or totals is None:
        try:
            records = _parse(_read(smaps))
        except OSError as exc:
            problems.append(_reason(smaps, exc))
        else:
            if records:
                sources.append(str(smaps))
                mappings = _top(records, top)
                if totals is None:
                    totals = _summed(record for _header, record in records)
            elif not problems:
                problems.append(f"{smaps}: empty (the process exited and is a zombie, or is a kernel thread)")

    totals = totals or {}
    rss = totals.get("Rss")
    return MappingReport(
        pid=pid,
        rss_bytes=rss,
        pss_bytes=totals.get("Pss"),
        anonymous_bytes=totals.get("Anonymous"),
        swap_bytes=totals.get("Swap"),
        mappings=mappings,
        source=" + ".join(sources) if sources else "none",
        problem="; ".join(dict.fromkeys(problems)) if problems else None,
    )


def _nothing(pid: int, problem: str) -> MappingReport:
    """The report for a process that could not be read at all."""
    return MappingReport(
        pid=pid,
        rss_bytes=None,
        pss_bytes=None,
        anonymous_bytes=None,
        swap_bytes=None,
        mappings=(),
        source="none",
        problem=problem,
    )


def _read(path: Path) -> str:
    """The file's text; kernel-escaped paths may hold any bytes, shown with backslash escapes."""
    return path.read_bytes().decode("utf-8", "backslashreplace")


def _reason(path: Path, exc: OSError) -> str:
    """A human reason for an unreadable file."""
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return f"{path}: the process exited (a zombie or gone)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied (another user's process, or ptrace rules forbid reading it)"
    return f"{path}: {exc.strerror or exc}"


_Record = tuple[list[str], dict[str, int]]
"""A header line's fields (at most 6: range, perms, offset, device, inode, path) and its ``kB`` values in bytes."""


def _parse(text: str) -> list[_Record]:
    """The records of an smaps or smaps_rollup text, in order."""
    records: list[_Record] = []
    values: dict[str, int] = {}
    for line in text.splitlines():
        first, _, rest = line.partition(" ")
        if first.endswith(":"):
            if records:
                number, _, unit = rest.strip().partition(" ")
                if unit == "kB" and number.isdigit():
                    values[first[:-1]] = int(number) * _KB
        elif first:
            values = {}
            records.append((line.split(None, 5), values))
    return records


def _top(records: list[_Record], top: int) -> tuple[MemoryMapping, ...]:
    """The ``top`` mappings by RSS, biggest first (ties by address)."""
    mappings = []
    for header, values in records:
        start, _, end = header[0].partition("-")
        path = header[5].strip() if len(header) > 5 else ""
        mappings.append(
            MemoryMapping(
                start=start,
                end=end,
                perms=header[1] if len(header) > 1 else "",
                path=path or "[anon]",
                rss_bytes=values.get("Rss", 0),
                pss_bytes=values.get("Pss"),
                anonymous_bytes=values.get("Anonymous"),
            )
        )
    mappings.sort(key=lambda mapping: (-mapping.rss_bytes, mapping.start.rjust(16, "0")))
    return tuple(mappings[:top])


def _summed(records: Iterable[dict[str, int]]) -> dict[str, int]:
    """Per-mapping values summed into process totals (what smaps_rollup would say)."""
    totals: dict[str, int] = {}
    for values in records:
        for key in ("Rss", "Pss", "Anonymous", "Swap"):
            if key in values:
                totals[key] = totals.get(key, 0) + values[key]
    return totals
