"""Pre-fork servers found by process tree: the master (or masters) and its workers, never by command-line text.

gunicorn's arbiter, uWSGI's master and Celery's prefork main process fork their workers, so the workers are the
master's children. Text is a poor guide: without ``setproctitle`` a gunicorn worker's command line is the
master's (``gunicorn app:app``), and the shell or script that launched memmon often contains the pattern too.

- **Masters** come from fixed pids (``--pid``), from a regex (the matched processes whose parent did not match:
  the top of each matched tree), or from a cgroup (its members whose parent is outside it: a unit's or a
  container's main process). memmon's own process and its ancestors never count.
- **Workers** are the masters' children, read from ``/proc/<pid>/task/<tid>/children`` (one small read per
  thread; the kernel lists the children each thread forked, Documentation/filesystems/proc.rst "children"),
  falling back to a scan of ``/proc/*/stat`` where that file does not exist (``CONFIG_PROC_CHILDREN=n``).
- **What a recycle frees**: a worker's unique set size (USS, its private pages, what its exit returns to the
  cgroup), from ``/proc/<pid>/smaps_rollup`` (Linux 4.14). It walks the page tables, so it is read only for the
  workers an action is about to choose among, never every check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def parent_of(pid: int, *, proc_root: Path = PROC) -> int | None:
    """The parent pid from ``/proc/<pid>/stat`` (field 4), None when the process is gone."""
    try:
        raw = (proc_root / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = raw.rsplit(b")", 1)[-1].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def lineage(pid: int | None = None, *, proc_root: Path = PROC) -> frozenset[int]:
    """``pid`` (default: this process) and all its ancestors up to init: processes memmon must never act on
    (the shell or script that started it contains ``--match``'s pattern in its arguments)."""
    current: int | None = os.getpid() if pid is None else pid
    seen: set[int] = set()
    while current is not None and current > 0 and current not in seen:
        seen.add(current)
        current = parent_of(current, proc_root=proc_root)
    return frozenset(seen)


def children_of(pid: int, *, proc_root: Path = PROC) -> tuple[int, ...]:
    """The live children of ``pid`` (empty when it is gone)."""
    task_dir = proc_root / str(pid) / "task"
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return ()
    found: list[int] = []
    for tid in tasks:
        try:
            text = (task_dir / tid / "children").read_text()
        except FileNotFoundError:
            if (task_dir / tid).is_dir():
                return _children_by_scan(pid, proc_root)  # the kernel has no children file
            continue
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return tuple(dict.fromkeys(found))


def _children_by_scan(pid: int, proc_root: Path) -> tuple[int, ...]:
    children = []
    for entry in os.listdir(proc_root):
        if entry.isdigit() and parent_of(int(entry), proc_root=proc_root) == pid:
            children.append(int(entry))
    return tuple(children)


def age_seconds(pid: int, *, proc_root: Path = PROC) -> float | None:
    """Seconds since ``pid`` started: ``/proc/uptime`` minus its start time (``/proc/<pid>/stat`` field 22, in
    clock ticks since boot; proc(5)), None when it is gone."""
    try:
        fields = (proc_root / str(pid) / "stat").read_bytes().rsplit(b")", 1)[-1].split()
        uptime = float((proc_root / "uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError):
        return None


WRAPPERS = frozenset(
    {"sh", "dash", "bash", "ash", "tini", "dumb-init", "catatonit", "su", "sudo", "runuser", "env"}
)
"""Processes that start a server without being it: a Dockerfile's shell-form CMD (``/bin/sh -c "gunicorn ..."``,
where dash forks rather than execs), an init for containers, a user switch."""


def through_wrappers(pid: int, *, proc_root: Path = PROC) -> int:
    """``pid``, or, while it is a known wrapper (``WRAPPERS``, by ``/proc/<pid>/comm``) with exactly one child,
    that child: the process whose children are the workers."""
    seen = {pid}
    while True:
        try:
            name = (proc_root / str(pid) / "comm").read_text().strip()
        except OSError:
            return pid
        if name not in WRAPPERS:
            return pid
        children = children_of(pid, proc_root=proc_root)
        if len(children) != 1 or children[0] in seen:
            return pid
        pid = children[0]
        seen.add(pid)


def tree_tops(pids: Iterable[int], *, proc_root: Path = PROC) -> tuple[int, ...]:
    """The pids whose parent is not among ``pids``: the masters of a set of matched processes or of a cgroup's
    members (order kept)."""
    members = tuple(dict.fromkeys(pids))
    inside = set(members)
    return tuple(pid for pid in members if parent_of(pid, proc_root=proc_root) not in inside)


def unique_bytes(pid: int, *, proc_root: Path = PROC) -> int | None:
    """USS: ``Private_Clean + Private_Dirty + Private_Hugetlb`` of ``smaps_rollup`` (what the process's exit
    frees). ``smaps_rollup`` needs ptrace read access (an agent of another user without CAP_SYS_PTRACE is
    refused) and Linux 4.14: then the resident size from ``statm``, which anyone may read, stands in (an upper
    bound: it counts pages shared with the master too). None when the process is gone."""
    try:
        text = (proc_root / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return resident_bytes(pid, proc_root=proc_root)
    total = 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
            total += int(rest.split()[0]) * 1024  # smaps reports kB (fs/proc/task_mmu.c SEQ_PUT_DEC " kB")
    return total


def resident_bytes(pid: int, *, proc_root: Path = PROC) -> int | None:
    """RSS from ``statm`` (field 2, pages; proc(5)), None when the process is gone."""
    try:
        pages = int((proc_root / str(pid) / "statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
