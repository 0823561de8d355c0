"""Resident and virtual memory of the watched processes: memmon itself, fixed pids, or a command-line regex.

Three ways to name the target (the CLI's defaults, ``--pid`` and ``--match``), and a pre-fork server on top:

- **self**: no pids and no match: memmon's own process (``own_pid``, default ``os.getpid()``). Only then, when
  the target is exactly this interpreter, the sample carries ``gc`` figures.
- **pid**: fixed pids. A pid that exits (or turns zombie, or is reused by another process) is dropped for good
  and named in ``problem``; ``sample()`` raises ``SourceUnavailable`` only when none is left.
- **match**: every process whose joined command line (or, when that is unreadable or empty, its name) contains
  a ``re.search`` match, never memmon's own pid. The set is re-resolved when a matched process exits, when
  nothing matched, and every ``match_refresh_checks`` checks: a restarted service gets a new pid and new
  workers appear. memmon's ancestors never match (the shell that started it has the pattern in its arguments).
- **server** (``server=True``): the pids, the top of the matched trees, or ``tops()`` (a cgroup's main
  processes) are the masters; their children, re-read at every check (one small file per thread, see
  ``memmon.sampling.prefork``), are the workers. Each ``ProcessMemory`` says which it is (``role``).
- **members** (``members=``): the processes of a cgroup target (``--cgroup``/``--unit`` without pids, match or
  server), so that ``/health/memory``'s ``rss_mb`` and ``processes`` describe the target and not memmon. Every
  member is read (memmon too, when it runs inside the cgroup: its memory is part of the cgroup's), at most
  ``members_limit`` of them; an empty cgroup is an empty sample, a cgroup that is not there raises.

``absent`` says whether the last ``sample()`` found no target process because there is none (every pid exited
or never existed, nothing matches, no main process, no cgroup): the target is *missing*, as opposed to a
process that exists but could not be read.

RSS and VMS come from ``psutil.Process.memory_info()`` (one read of ``/proc/<pid>/statm``); ``psutil.Process``
objects are cached between checks so identity (pid + start time) is checked and pid reuse is noticed.
USS/PSS (``memory_full_info()``) walk smaps and are deliberately not read here.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import psutil

from memmon.model import ProcessMemory, ProcessSample
from memmon.sampling.base import SourceUnavailable
from memmon.sampling.prefork import children_of, lineage, through_wrappers, tree_tops


class _Gone(Exception):
    """A watched process no longer exists (exited, zombie, or its pid reused); the message says which."""


class _Denied(Exception):
    """A watched process exists but may not be read."""


class ProcessSampler:
    """Samples the summed RSS/VMS of the target processes; see the module docstring for the three modes."""

    def __init__(
        self,
        pids: Sequence[int] = (),
        match: str | None = None,
        *,
        own_pid: int | None = None,
        gc_objects_every: int = 10,
        clock: Callable[[], float] = time.time,
        match_refresh_checks: int = 10,
        server: bool = False,
        tops: Callable[[], Sequence[int]] | None = None,
        members: Callable[[], Sequence[int] | None] | None = None,
        members_limit: int = 512,
    ) -> None:
        if pids and match is not None:
            raise ValueError("watch either fixed pids or a --match regex, not both")
        if gc_objects_every < 1:
            raise ValueError(f"gc_objects_every must be >= 1, got {gc_objects_every}")
        if match_refresh_checks < 1:
            raise ValueError(f"match_refresh_checks must be >= 1, got {match_refresh_checks}")
        if tops is not None and (pids or match is not None or not server):
            raise ValueError("tops() names the masters of a server target without pids or a match")
        if members is not None and (pids or match is not None or server or tops is not None):
            raise ValueError("members() names a cgroup target's processes, without pids, match or server")
        if members_limit < 1:
            raise ValueError(f"members_limit must be >= 1, got {members_limit}")
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._never = lineage(self._own_pid)
        self._server = server
        self._tops = tops
        self._members = members
        self._members_limit = members_limit
        self._member_count = 0
        self._absent = False
        self._pattern: re.Pattern[str] | None = None
        if match is not None:
            try:
                self._pattern = re.compile(match)
            except re.error as exc:
                raise ValueError(f"invalid --match regex {match!r}: {exc}") from None
        self._requested: tuple[int, ...] = tuple(dict.fromkeys(pids)) or (
            () if match is not None or members is not None else (self._own_pid,)
        )
        self._self_mode = not pids and match is None and tops is None and members is None
        self._gc_objects_every = gc_objects_every
        self._match_refresh_checks = match_refresh_checks
        self._clock = clock
        self._lock = threading.RLock()

        self._procs: dict[int, psutil.Process] = {}
        self._attached = False
        self._lost: dict[int, str] = {}
        self._denied: dict[int, str] = {}
        self._denied_at_attach: set[int] = set()
        self._nothing_matched = False
        self._checks_since_resolve = 0
        self._masters: tuple[int, ...] = ()
        self._children: dict[int, psutil.Process] = {}
        self._workers: tuple[int, ...] = ()

        self._gc_objects: int | None = None
        self._gc_objects_at: float | None = None
        self._checks_since_gc_count = 0

    # --- description -------------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """``self`` (stable across restarts, so metric series do not churn), ``pid:12,34`` or ``match:REGEX``."""
        if self._pattern is not None:
            return f"match:{self._pattern.pattern}"
        if self._tops is not None:
            return "server"
        if self._members is not None:
            return "cgroup members"
        if self._self_mode:
            return "self"
        return "pid:" + ",".join(str(pid) for pid in self._requested)

    @property
    def pids(self) -> tuple[int, ...]:
        """The pids watched now (before the first sample: the requested ones; with a match: none yet)."""
        with self._lock:
            if not self._attached:
                return self._requested
            if self._server:
                return self._masters + self._workers
            return tuple(self._procs)

    @property
    def server(self) -> bool:
        """True when the target is a pre-fork server (masters and their workers)."""
        return self._server

    @property
    def masters(self) -> tuple[int, ...]:
        """Server mode: the masters found by the latest sample (empty before, or in other modes)."""
        with self._lock:
            return self._masters

    @property
    def workers(self) -> tuple[int, ...]:
        """Server mode: the masters' children as the latest sample found them."""
        with self._lock:
            return self._workers

    def current_workers(self) -> tuple[tuple[int, int], ...]:
        """Server mode: (worker pid, its master) read now, for an action that must not act on a stale list."""
        with self._lock:
            masters = self._masters
        return tuple((child, master) for master in masters for child in children_of(master))

    @property
    def is_own_process(self) -> bool:
        """True when the target is exactly memmon's own process, so ``gc`` figures describe it."""
        return self._pattern is None and self._requested == (self._own_pid,)

    @property
    def lost(self) -> tuple[int, ...]:
        """Requested pids (``--pid``/self mode) that are gone for good; always empty with ``--match``."""
        with self._lock:
            return tuple(self._lost)

    @property
    def absent(self) -> bool:
        """True when the last sample found no target process because none exists (see the module docstring)."""
        with self._lock:
            return self._absent

    @property
    def problem(self) -> str | None:
        """Why some requested pids are gone or unreadable, or why nothing matched; None when all is well."""
        with self._lock:
            if self._members is not None:
                if self._member_count <= self._members_limit:
                    return None
                return f"read {self._members_limit} of the {self._member_count} processes of the cgroup"
            if self._tops is not None:
                return None if self._masters else "no main process in the cgroup"
            if self._pattern is not None:
                return f"no process matches {self._pattern.pattern!r}" if self._nothing_matched else None
            reasons = [*self._lost.values(), *self._denied.values()]
            return "; ".join(reasons) if reasons else None

    # --- sampling ----------------------------------------------------------------------------------------

    def sample(self) -> ProcessSample:
        """Read every watched process once; raises ``SourceUnavailable`` when none can be read."""
        with self._lock:
            self._absent = False
            if self._pattern is not None:
                memories = self._sample_match()
            elif self._members is not None:
                memories = self._sample_members()
            elif self._tops is not None:
                memories = self._sample_tops()
            else:
                memories = self._sample_fixed()
            if self._server:
                memories = self._with_workers(memories)
            gc_collections: int | None = None
            gc_objects: int | None = None
            gc_objects_at: float | None = None
            if self.is_own_process:
                gc_collections = sum(int(generation["collections"]) for generation in gc.get_stats())
                if self._gc_objects is None or self._checks_since_gc_count >= self._gc_objects_every:
                    self._count_gc_objects_locked()
                self._checks_since_gc_count += 1
                gc_objects, gc_objects_at = self._gc_objects, self._gc_objects_at
            return ProcessSample(
                processes=tuple(memories),
                rss_bytes=sum(memory.rss_bytes for memory in memories),
                vms_bytes=sum(memory.vms_bytes for memory in memories),
                gc_collections=gc_collections,
                gc_objects=gc_objects,
                gc_objects_at=gc_objects_at,
            )

    def refresh(self) -> None:
        """Re-resolve ``--match`` at the next sample (after an action changed the processes); server mode
        reads the workers at every sample anyway."""
        with self._lock:
            self._checks_since_resolve = self._match_refresh_checks

    def count_gc_objects(self) -> int:
        """Count this interpreter's gc-tracked objects now (O(heap)) and refresh the cached figure."""
        with self._lock:
            return self._count_gc_objects_locked()

    def _count_gc_objects_locked(self) -> int:
        count = len(gc.get_objects())
        self._gc_objects = count
        self._gc_objects_at = self._clock()
        self._checks_since_gc_count = 0
        return count

    def _sample_fixed(self) -> list[ProcessMemory]:
        """Self and ``--pid`` modes: drop pids that are gone, raise when nothing readable is left."""
        if not self._attached:
            self._attached = True
            for pid in self._requested:
                try:
                    self._procs[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    self._lost[pid] = f"pid {pid} does not exist"
                except psutil.AccessDenied:
                    self._lost[pid] = f"pid {pid}: access denied"
                    self._denied_at_attach.add(pid)
        memories: list[ProcessMemory] = []
        self._denied.clear()
        for pid, proc in list(self._procs.items()):
            try:
                memories.append(_read(proc, verify=pid != self._own_pid))
            except _Gone as exc:
                del self._procs[pid]
                self._lost[pid] = str(exc)
            except _Denied as exc:
                self._denied[pid] = str(exc)
        if not memories:
            self._absent = not self._denied and not self._denied_at_attach
            raise SourceUnavailable(f"process {self.label}: {self.problem or 'nothing to read'}")
        return memories

    def _sample_match(self) -> list[ProcessMemory]:
        """``--match`` mode: resolve when due, read, and re-resolve once if a matched process went away."""
        self._checks_since_resolve += 1
        if not self._attached or not self._procs or self._checks_since_resolve >= self._match_refresh_checks:
            self._resolve()
        memories: dict[int, ProcessMemory] = {}
        gone = self._read_matched(memories)
        if gone:
            self._resolve()
            self._read_matched(memories)
        self._nothing_matched = not memories
        if not memories:
            self._absent = True
            raise SourceUnavailable(f"process {self.label}: {self.problem}")
        return list(memories.values())

    def _read_matched(self, memories: dict[int, ProcessMemory], *, verify: bool = True) -> bool:
        """Read matched processes not yet in ``memories``; drop the unreadable; True if one was gone."""
        gone = False
        for pid, proc in list(self._procs.items()):
            if pid in memories:
                continue
            try:
                memories[pid] = _read(proc, verify=verify)
            except _Gone:
                del self._procs[pid]
                gone = True
            except _Denied:
                del self._procs[pid]
        return gone

    def _resolve(self) -> None:
        """Find the processes whose command line matches now, reusing cached ``psutil.Process`` objects."""
        assert self._pattern is not None
        self._attached = True
        self._checks_since_resolve = 0
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.pid in self._never:
                continue
            cmdline = proc.info.get("cmdline")
            text = " ".join(cmdline) if cmdline else (proc.info.get("name") or "")
            if not text or self._pattern.search(text) is None:
                continue
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            cached = self._procs.get(proc.pid)
            found[proc.pid] = cached if cached is not None and cached == proc else proc
        if self._server:
            # The top of each matched tree is a master; its matched children are found again as workers.
            found = {pid: found[pid] for pid in tree_tops(found)}
        self._procs = found

    def _sample_tops(self) -> list[ProcessMemory]:
        """Server mode over a cgroup: its main processes now, then read like fixed pids."""
        assert self._tops is not None
        self._attached = True
        procs: dict[int, psutil.Process] = {}
        for pid in tree_tops(pid for pid in self._tops() if pid not in self._never):
            proc = self._cached(pid)
            if proc is not None:
                procs[pid] = proc
        self._procs = procs
        memories: dict[int, ProcessMemory] = {}
        self._read_matched(memories)
        if not memories:
            self._masters = self._workers = ()
            self._absent = True
            raise SourceUnavailable(f"process {self.label}: no main process in the cgroup")
        return list(memories.values())

    def _sample_members(self) -> list[ProcessMemory]:
        """Members mode: the cgroup's processes now (reusing cached ``psutil.Process`` objects), each read once."""
        assert self._members is not None
        self._attached = True
        members = self._members()
        if members is None:
            self._procs = {}
            self._member_count = 0
            self._absent = True
            raise SourceUnavailable(f"process {self.label}: the cgroup is not there")
        pids = list(dict.fromkeys(members))
        self._member_count = len(pids)
        procs: dict[int, psutil.Process] = {}
        for pid in pids[: self._members_limit]:
            proc = self._procs.get(pid)
            if proc is None:
                try:
                    proc = psutil.Process(pid)
                except psutil.Error:
                    continue  # exited since cgroup.procs was read
            procs[pid] = proc
        self._procs = procs
        memories: dict[int, ProcessMemory] = {}
        # cgroup.procs was read just now, so the exit and pid-reuse checks (two more /proc reads per process,
        # 4x the cost) are skipped: a task leaves cgroup.procs when it exits, before it is reaped (cgroup_exit()
        # in kernel/cgroup/cgroup.c; no zombie is listed), and one that exits meanwhile raises _Gone.
        self._read_matched(memories, verify=False)
        return list(memories.values())

    def _with_workers(self, tops: list[ProcessMemory]) -> list[ProcessMemory]:
        """The masters (a top, or below the wrappers that started it) and their children, read now; a child that
        exits meanwhile is skipped; a wrapper counts as neither."""
        masters = []
        for top in tops:
            master = through_wrappers(top.pid)
            proc = self._cached(master) if master != top.pid else None
            try:
                masters.append(top if proc is None else _read(proc))
            except (_Gone, _Denied):
                continue
        self._masters = tuple(memory.pid for memory in masters)
        result = [replace(memory, role="master") for memory in masters]
        workers: list[int] = []
        for master in self._masters:
            for child in children_of(master):
                if child in self._never or child in self._masters:
                    continue
                proc = self._cached(child)
                if proc is None:
                    continue
                try:
                    result.append(replace(_read(proc), role="worker"))
                except (_Gone, _Denied):
                    self._children.pop(child, None)
                    continue
                workers.append(child)
        self._workers = tuple(workers)
        live = set(workers)
        for pid in [pid for pid in self._children if pid not in live]:
            del self._children[pid]
        return result

    def _cached(self, pid: int) -> psutil.Process | None:
        """A cached ``psutil.Process`` for ``pid`` (identity checked by ``_read``), None when it is gone."""
        proc = self._procs.get(pid) or self._children.get(pid)
        if proc is None:
            try:
                proc = psutil.Process(pid)
            except psutil.Error:
                return None
            self._children[pid] = proc
        return proc


def _read(proc: psutil.Process, *, verify: bool = True) -> ProcessMemory:
    """One process's memory; ``_Gone`` when it exited, is a zombie or its pid now names another process.

    ``verify=False`` skips the exit and pid-reuse checks: only for memmon's own process, which is alive
    while it samples (this saves two /proc reads per check).
    """
    pid = proc.pid
    try:
        # is_running() compares pid + start time with a fresh read, so a reused pid counts as gone.
        if verify and not proc.is_running():
            raise _Gone(f"pid {pid} exited")
        with proc.oneshot():
            if verify and proc.status() == psutil.STATUS_ZOMBIE:
                # A zombie keeps its pid until reaped but has no memory left: it has exited.
                raise _Gone(f"pid {pid} exited (zombie)")
            info = proc.memory_info()
            name = proc.name()
    except psutil.ZombieProcess:
        raise _Gone(f"pid {pid} exited (zombie)") from None
    except psutil.NoSuchProcess:
        raise _Gone(f"pid {pid} exited") from None
    except psutil.AccessDenied:
        raise _Denied(f"pid {pid}: access denied") from None
    return ProcessMemory(pid=pid, name=str(name), rss_bytes=int(info.rss), vms_bytes=int(info.vms))
