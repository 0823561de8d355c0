"""Kernel notifications that a memory cgroup crossed a level, delivered to a callback on the asyncio loop.

A leak of 200 MB/s to 1 GB/s crosses the last thresholds of a 256 MiB limit in tens of milliseconds and the OOM
killer acts in milliseconds: polling cannot see it coming, the kernel has to tell us.

cgroup v1 (Documentation/admin-guide/cgroup-v1/memory.rst) registers eventfds through ``cgroup.event_control``:

- section 9 "Memory thresholds": write ``"<event_fd> <fd of memory.usage_in_bytes> <threshold>"``; the eventfd
  is signalled "when memory usage crosses threshold in any direction". The kernel checks the thresholds every
  128 page charges/uncharges per CPU (THRESHOLDS_EVENTS_TARGET, mm/memcontrol-v1.c): about half a MiB. Measured
  here, the callback runs under half a millisecond after the crossing.
- section 10 "OOM Control": write ``"<event_fd> <fd of memory.oom_control>"``; signalled "when OOM happens"
  (not available for the root cgroup).
- section 11 "Memory Pressure": write ``"<event_fd> <fd of memory.pressure_level> <level[,mode]>"``; we use the
  "hierarchy" mode so that pressure in descendant cgroups reaches us too. (Any listener, in whatever mode,
  keeps "default"-mode listeners of ancestor cgroups from being signalled: that is the kernel's design.)

Closing an eventfd unregisters it (memcg_event_wake() sees EPOLLHUP); when the cgroup is removed the kernel
signals each eventfd one last time ("Notify userspace the event is going away", mm/memcontrol-v1.c).

cgroup v2 (Documentation/admin-guide/cgroup-v2.rst) has no usage thresholds; "memory.events ... A value change
in this file generates a file modified event" (high, max, oom, oom_kill), watched here with inotify IN_MODIFY,
and a PSI trigger on the cgroup's ``memory.pressure`` (Documentation/accounting/psi.rst, "Userspace monitor
usage") wakes us when tasks stall on memory. ``arm()`` on v2 only records the thresholds; the caller polls
adaptively (``adaptive_interval``) and re-checks on every wakeup.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import math
import os
import select
import struct
import time
from collections.abc import Callable, Sequence

from memmon.sampling.cgroup_location import CgroupLocation

# <sys/inotify.h>: IN_NONBLOCK/IN_CLOEXEC equal O_NONBLOCK/O_CLOEXEC; struct inotify_event is
# {int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[len]}.
_IN_MODIFY = 0x00000002
_IN_IGNORED = 0x00008000
_INOTIFY_EVENT = struct.Struct("iIII")

# psi.rst: "<some|full> <stall amount in us> <time window in us>": 150 ms of stall within 1 s. "Unprivileged
# users can also create monitors, with the only limitation that the window size must be a multiple of 2s":
# the fallback keeps the same 15% share over a 2 s window.
_PSI_TRIGGERS = (b"some 150000 1000000", b"some 300000 2000000")

# Busy sources are reported at most once per this many seconds, the last one of a burst at the end of the quiet
# time (never dropped): v1 vmpressure signals a level on every reclaim window, near the limit hundreds of times in
# 10 ms (measured here); v2 memory.events changes at every reclaim over memory.high, about 40 times a second in
# the make test-kernel VM (1046 in 25 s under the memory.high guard).
_QUIET = 0.1

_EVENTFD, _INOTIFY, _PSI = "eventfd", "inotify", "psi"
CGROUP_REMOVED = "cgroup removed"


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library (already loaded into the interpreter) with the two inotify calls typed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    return libc


class MemoryEvents:
    """Arms kernel notifications for a memory cgroup and reports them to a callback on the event loop.

    Reasons passed to ``on_event``: ``"usage crossed <bytes>"`` (the usage was at or above it when the
    notification was read), ``"usage fell below <bytes>"`` (below it: v1 signals both directions), ``"oom"``,
    ``"pressure medium"``, ``"pressure critical"``, ``"memory.events changed"``, ``"psi trigger"``, and once
    ``"cgroup removed"`` when the cgroup went away (no notification follows); a pressure level and a
    ``memory.events`` change are reported at most every 100 ms, the last of a burst at the end of that time. A
    reason says "look now": the caller re-reads the cgroup. What could not be armed is described in
    ``problems`` (the caller then relies on polling and reports it); ``arm()`` and ``attach()`` never raise for
    a vanished cgroup or a refusal.
    Use it from the event loop's thread.
    """

    def __init__(self, location: CgroupLocation, on_event: Callable[[str], None]) -> None:
        self.location = location
        self.problems: list[str] = []
        self._on_event = on_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sources: dict[int, tuple[str, str]] = {}  # fd given to add_reader -> (kind, reason)
        self._thresholds: dict[int, int] = {}  # v1: threshold -> its eventfd
        self._recorded: tuple[int, ...] = ()  # v2: thresholds the kernel cannot arm
        self._files: dict[str, int] = {}  # control files kept open: name -> fd
        self._psi_epoll: select.epoll | None = None
        self._reported: dict[str, float] = {}  # busy source -> when last reported (monotonic)
        self._trailing: dict[str, asyncio.TimerHandle] = {}  # busy source -> its report at the end of quiet
        self._ended = False
        self._closed = False

    @property
    def ended(self) -> bool:
        """True once the cgroup went away (``"cgroup removed"`` was reported): re-arm on its successor."""
        return self._ended

    @property
    def armed(self) -> tuple[int, ...]:
        """The usage thresholds in force, ascending: on v1 those the kernel accepted, on v2 the recorded ones."""
        return tuple(sorted(self._thresholds)) if self.location.version == 1 else self._recorded

    def arm(self, thresholds_bytes: Sequence[int]) -> None:
        """(Re)arm usage thresholds, replacing the previous ones, and the OOM/pressure notifications once."""
        if self._closed:
            raise RuntimeError("MemoryEvents.arm() after close()")
        values = sorted({int(value) for value in thresholds_bytes})
        if values and values[0] < 0:
            raise ValueError(f"thresholds must be >= 0 bytes: {values[0]}")
        if self.location.version == 1:
            self._arm_v1(values)
        else:
            self._recorded = tuple(values)
            if not any(kind == _INOTIFY for kind, _ in self._sources.values()):
                self._watch_memory_events()
            if self._psi_epoll is None:
                self._arm_psi_trigger()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch every armed fd on ``loop`` (and those armed later); readiness calls ``on_event``."""
        if self._closed or self._ended or loop is self._loop:
            return
        self._remove_readers()
        self._loop = loop
        for fd in list(self._sources):
            self._add_reader(fd)

    def close(self) -> None:
        """Remove the readers and close every fd; the kernel drops the registrations. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._remove_readers()
        for fd in self._sources:
            if self._psi_epoll is None or fd != self._psi_epoll.fileno():
                os.close(fd)
        if self._psi_epoll is not None:
            self._psi_epoll.close()
        for fd in self._files.values():
            os.close(fd)
        self._sources.clear()
        self._thresholds.clear()
        self._files.clear()
        self._psi_epoll = None
        self._loop = None

    # -- cgroup v1 -------------------------------------------------------------------------------------------

    def _arm_v1(self, values: list[int]) -> None:
        for threshold in [t for t in self._thresholds if t not in values]:
            self._drop_source(self._thresholds.pop(threshold))
        wanted = [(f"usage crossed {t}", "memory.usage_in_bytes", str(t)) for t in values]
        if "oom" not in self._reasons():
            wanted.append(("oom", "memory.oom_control", ""))
        if (self.location.directory / "memory.pressure_level").exists():  # "where the kernel has it"
            for level in ("medium", "critical"):
                if f"pressure {level}" not in self._reasons():
                    wanted.append((f"pressure {level}", "memory.pressure_level", f"{level},hierarchy"))
        wanted = [item for item in wanted if item[0] not in self._reasons()]
        if not wanted:
            return
        control = self._open("cgroup.event_control", os.O_WRONLY)
        if control is None:
            return
        try:
            for reason, name, args in wanted:
                target = self._files.get(name)
                if target is None and (target := self._open(name, os.O_RDONLY)) is not None:
                    self._files[name] = target
                if target is not None:
                    self._register(control, target, reason, args)
        finally:
            os.close(control)

    def _register(self, control: int, target: int, reason: str, args: str) -> None:
        """One ``"<event_fd> <fd of file> [args]"`` line to cgroup.event_control, written in one write()."""
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            os.write(control, f"{efd} {target} {args}".rstrip().encode())
        except OSError as exc:
            os.close(efd)
            self._problem(f"{reason}: cgroup.event_control refused the registration: {exc.strerror or exc}")
            return
        if reason.startswith("usage crossed "):
            self._thresholds[int(reason.rpartition(" ")[2])] = efd
        self._add_source(efd, _EVENTFD, reason)

    def _open(self, name: str, flags: int) -> int | None:
        path = self.location.directory / name
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except OSError as exc:
            self._problem(f"{path}: {exc.strerror or exc}")
            return None

    # -- cgroup v2 -------------------------------------------------------------------------------------------

    def _watch_memory_events(self) -> None:
        path = self.location.directory / "memory.events"
        libc = _libc()
        ifd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if ifd < 0:
            self._problem(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
            return
        if int(libc.inotify_add_watch(ifd, os.fsencode(path), _IN_MODIFY)) < 0:
            os.close(ifd)
            self._problem(f"{path}: inotify watch: {os.strerror(ctypes.get_errno())}")
            return
        self._add_source(ifd, _INOTIFY, "memory.events changed")

    def _arm_psi_trigger(self) -> None:
        path = self.location.directory / "memory.pressure"
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._problem(f"{path}: psi trigger: {exc.strerror or exc}")
            return
        for attempt, trigger in enumerate(_PSI_TRIGGERS):
            try:
                # psi.rst writes strlen(trig) + 1 bytes: the kernel overwrites the last byte written with NUL.
                os.write(fd, trigger + b"\0")
                break
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.EINVAL) and attempt + 1 < len(_PSI_TRIGGERS):
                    continue
                os.close(fd)
                self._problem(f"{path}: psi trigger {trigger.decode()!r} refused: {exc.strerror or exc}")
                return
        # PSI signals POLLPRI (psi.rst: poll() the fd for POLLPRI), but add_reader waits for EPOLLIN: an epoll set
        # watching EPOLLPRI becomes readable when the trigger fires, and that epoll fd goes to add_reader.
        epoll = select.epoll()
        try:
            epoll.register(fd, select.EPOLLPRI)
        except OSError as exc:  # a regular file cannot be polled (EPERM)
            epoll.close()
            os.close(fd)
            self._problem(f"{path}: psi trigger cannot be polled: {exc.strerror or exc}")
            return
        self._files["memory.pressure"] = fd
        self._psi_epoll = epoll
        self._add_source(epoll.fileno(), _PSI, "psi trigger")

    # -- readiness -------------------------------------------------------------------------------------------

    def _ready(self, fd: int) -> None:
        kind, reason = self._sources.get(fd, ("", ""))
        if kind == _EVENTFD:
            try:
                os.eventfd_read(fd)  # resets the counter, so the level-triggered reader stops firing
            except BlockingIOError:
                return
            if not self.location.directory.is_dir():
                self._end(f"cgroup {self.location.directory} was removed: its notifications ended")
                return
            if reason.startswith("pressure "):
                self._report_quietly(reason)
                return
            if reason.startswith("usage crossed "):
                reason = self._direction(reason)
        elif kind == _INOTIFY:
            if self._drain_inotify(fd) & _IN_IGNORED:
                self._end(f"{self.location.directory / 'memory.events'}: watch removed (cgroup removed?)")
                return
            self._report_quietly(reason)
            return
        elif kind == _PSI and self._psi_epoll is not None:
            # Checking the epoll fd's readiness already consumed the trigger's event (psi_trigger_poll() resets
            # it), so readiness itself is the report; an error (PSI gone or disabled) would persist: drop it.
            if any(mask & (select.EPOLLERR | select.EPOLLHUP) for _, mask in self._psi_epoll.poll(0)):
                self._problem("psi trigger: the kernel reported an error; trigger dropped")
                self._drop_source(fd)
                return
        else:
            return
        self._on_event(reason)

    def _direction(self, reason: str) -> str:
        """``usage crossed N`` when the usage is at or above N now, ``usage fell below N`` when below: the kernel
        signals a v1 threshold in either direction (cgroup-v1 memory.rst section 9) and a fall (a restarted
        service freeing its memory) must not read as a rise. One pread of the open ``memory.usage_in_bytes``;
        when it fails the reason stays a crossing (a check looks either way)."""
        threshold = int(reason.rpartition(" ")[2])
        usage_fd = self._files.get("memory.usage_in_bytes")
        if usage_fd is None:
            return reason
        try:
            usage = int(os.pread(usage_fd, 32, 0))
        except (OSError, ValueError):
            return reason
        return reason if usage >= threshold else f"usage fell below {threshold}"

    def _report_quietly(self, reason: str) -> None:
        """Report now, or, within the quiet time after the last report, once at its end."""
        wait = self._reported.get(reason, -math.inf) + _QUIET - time.monotonic()
        if wait <= 0:
            # A trailing report may be due in this same loop turn (asyncio runs ready I/O callbacks before due
            # timers): this report covers it, so it must not follow 0.1 ms later.
            pending = self._trailing.pop(reason, None)
            if pending is not None:
                pending.cancel()
            self._report_trailing(reason)
        elif reason not in self._trailing and self._loop is not None:
            self._trailing[reason] = self._loop.call_later(wait, self._report_trailing, reason)

    def _report_trailing(self, reason: str) -> None:
        self._trailing.pop(reason, None)
        if self._ended or self._closed:
            return
        self._reported[reason] = time.monotonic()
        self._on_event(reason)

    def _drain_inotify(self, fd: int) -> int:
        """Read every queued inotify event; the OR of their masks."""
        masks = 0
        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return masks
            offset = 0
            while offset + _INOTIFY_EVENT.size <= len(data):
                _, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
                masks |= mask
                offset += _INOTIFY_EVENT.size + length

    def _end(self, problem: str) -> None:
        """The cgroup went away: report it once, stop watching (fds stay until close())."""
        if self._ended:
            return
        self._ended = True
        self._problem(problem)
        self._remove_readers()
        self._loop = None
        self._on_event(CGROUP_REMOVED)

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def _reasons(self) -> set[str]:
        return {reason for _, reason in self._sources.values()}

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _add_source(self, fd: int, kind: str, reason: str) -> None:
        self._sources[fd] = (kind, reason)
        if self._loop is not None:
            self._add_reader(fd)

    def _drop_source(self, fd: int) -> None:
        self._sources.pop(fd, None)
        if self._loop is not None:
            self._loop.remove_reader(fd)
        if self._psi_epoll is not None and fd == self._psi_epoll.fileno():
            self._psi_epoll.close()
            self._psi_epoll = None
            os.close(self._files.pop("memory.pressure"))
        else:
            os.close(fd)

    def _add_reader(self, fd: int) -> None:
        assert self._loop is not None
        try:
            self._loop.add_reader(fd, self._ready, fd)
        except (OSError, NotImplementedError, RuntimeError) as exc:  # closed loop; no add_reader (Proactor)
            self._problem(f"cannot watch fd {fd} on the event loop: {exc}")

    def _remove_readers(self) -> None:
        for handle in self._trailing.values():
            handle.cancel()
        self._trailing.clear()
        if self._loop is not None and not self._loop.is_closed():
            for fd in self._sources:
                self._loop.remove_reader(fd)


def adaptive_interval(
    base: float, headroom_bytes: int | None, fill_rate_bytes_per_s: float | None, *, floor: float = 0.05
) -> float:
    """Poll faster as the limit nears: at most `base`; when memory grows toward the limit, about a tenth of the
    time left before the limit at the current fill rate, never below `floor`.

    Without a limit (``headroom_bytes`` None), a known rate, or growth (rate <= 0), the answer is ``base``; at or
    over the limit it is ``floor``. A ``floor`` above ``base`` is lowered to ``base``.
    """
    if not base > 0 or not math.isfinite(base):
        raise ValueError(f"base interval must be a positive number of seconds: {base}")
    floor = min(max(floor, 0.0), base)
    rate = fill_rate_bytes_per_s
    if headroom_bytes is None or rate is None or math.isnan(rate) or rate <= 0:
        return base
    if headroom_bytes <= 0:
        return floor
    return max(floor, min(base, headroom_bytes / rate / 10))
