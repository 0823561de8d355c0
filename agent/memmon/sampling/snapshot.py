"""One check: read every source once and assemble a ``MemorySample``; a failing source degrades, never raises.

The sample says what the thresholds judge (``target_bytes``) and against which limit:

- ``target_bytes``: the summed RSS of the target processes (``TargetKind.PROCESS``) or the cgroup's working
  set (``TargetKind.CGROUP``); None when that source failed this check.
- ``effective_limit_bytes``: the smallest of host memory ("host"), the cgroup's limit ("cgroup") and a
  configured limit ("configured": a sidecar that cannot see the app's cgroup is told the app's limit). Inside a
  container the host's memory is not what kills the service; the cgroup limit is. When ``/proc/meminfo``
  fails too, the last host total read is used, else the physical memory that ``sysconf`` reports.

``target_state`` says whether the target could be judged: ``present`` (``target_bytes`` is set), ``missing``
(the target's own source, the processes or the cgroup, found nothing to read: see ``ProcessSampler.absent`` and
``CgroupSampler.absent``) or ``unreadable`` (it exists but the read failed); ``target_problem`` is that source's
reason. A change of the target's state is logged once: WARNING ``target X not found: ...`` when it goes missing
(also at the first check, i.e. at start-up), WARNING ``target X cannot be read: ...``, INFO ``target X found``
when it is judged again. With a cgroup target the cgroup is read before its member processes, so the members
of a cgroup located (or re-located after a restart of its unit) in this check are read in the same check.

Each source that failed becomes a ``Degradation(source, reason)`` with source "process", "cgroup", "host" or
"pressure" (a process sample that succeeded but lost some pids, or matched nothing, contributes its
``problem``). A degradation is logged once at WARNING when it starts (again if its reason changes) and once at
INFO when the source recovers, never at every check.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from memmon.model import Degradation, MemorySample, TargetKind, TargetState
from memmon.sampling.base import Sampler, SourceUnavailable
from memmon.sampling.cgroup import CgroupSampler
from memmon.sampling.host import HostSampler
from memmon.sampling.pressure import PressureSampler
from memmon.sampling.process import ProcessSampler

T = TypeVar("T")

_SOURCES = ("process", "cgroup", "host", "pressure")
_LOGGER = logging.getLogger("memmon.sampling")


def _physical_memory() -> int:
    """Physical memory from ``sysconf``, 0 when the platform cannot say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


class SnapshotSampler:
    """Reads every source once and assembles a MemorySample; a failing source degrades, never raises."""

    def __init__(
        self,
        *,
        process: ProcessSampler | None,
        cgroup: CgroupSampler | None,
        host: HostSampler,
        pressure: PressureSampler | None,
        target_kind: TargetKind,
        target_label: str,
        configured_limit_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        logger: logging.Logger = _LOGGER,
    ) -> None:
        if target_kind is TargetKind.PROCESS and process is None:
            raise ValueError("target kind 'process' needs a ProcessSampler")
        if target_kind is TargetKind.CGROUP and cgroup is None:
            raise ValueError("target kind 'cgroup' needs a CgroupSampler")
        self._process = process
        self._cgroup = cgroup
        self._host = host
        self._pressure = pressure
        self._target_kind = target_kind
        self._target_label = target_label
        self._configured_limit = configured_limit_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._logger = logger
        self._last_host_total: int | None = None
        self._degraded: dict[str, str] = {}
        """Source -> reason of the degradations already logged."""
        self._target_state = TargetState.PRESENT
        """The target state already logged (present until a check says otherwise: nothing to log then)."""

    @property
    def process(self) -> ProcessSampler | None:
        """The process sampler (its pids, the own-process gc counters)."""
        return self._process

    @property
    def cgroup(self) -> CgroupSampler | None:
        """The cgroup sampler (its location, once found)."""
        return self._cgroup

    @property
    def target_label(self) -> str:
        """The label of what is watched, as it appears in samples and metrics."""
        return self._target_label

    @property
    def degraded_sources(self) -> tuple[str, ...]:
        """The sources that failed at the last check."""
        return tuple(self._degraded)

    def sample(self) -> MemorySample:
        """Read process, cgroup, host and pressure (those configured) once each; never raises."""
        timestamp = self._clock()
        monotonic = self._monotonic()
        failures: dict[str, tuple[str, BaseException | None]] = {}

        if self._target_kind is TargetKind.CGROUP:
            # The members of a cgroup target are those of the location this check found.
            cgroup = self._read("cgroup", self._cgroup, failures)
            process = self._read("process", self._process, failures)
        else:
            process = self._read("process", self._process, failures)
            cgroup = self._read("cgroup", self._cgroup, failures)
        if process is not None and self._process is not None and self._process.problem:
            failures["process"] = (self._process.problem, None)
        host = self._read("host", self._host, failures)
        pressure = self._read("pressure", self._pressure, failures)

        if host is not None:
            self._last_host_total = host.total_bytes
        host_total = self._last_host_total if self._last_host_total is not None else _physical_memory()
        limit, limit_source = host_total, "host"
        if cgroup is not None and cgroup.limit_bytes is not None and cgroup.limit_bytes < limit:
            limit, limit_source = cgroup.limit_bytes, "cgroup"
        if self._configured_limit is not None and self._configured_limit < limit:
            limit, limit_source = self._configured_limit, "configured"

        if self._target_kind is TargetKind.PROCESS:
            target_bytes = process.rss_bytes if process is not None else None
            source, absent = "process", self._process is not None and self._process.absent
        elif self._target_kind is TargetKind.HOST:
            target_bytes = host.total_bytes - host.available_bytes if host is not None else None
            source, absent = "host", False
        else:
            target_bytes = cgroup.working_set_bytes if cgroup is not None else None
            source, absent = "cgroup", self._cgroup is not None and self._cgroup.absent
        state, problem = TargetState.PRESENT, None
        if target_bytes is None:
            state = TargetState.MISSING if absent else TargetState.UNREADABLE
            problem = failures[source][0] if source in failures else f"{source} not read"

        self._log_transitions(failures)
        self._log_target(state, problem)
        return MemorySample(
            timestamp=timestamp,
            monotonic=monotonic,
            target=self._target_label,
            target_kind=self._target_kind,
            target_bytes=target_bytes,
            effective_limit_bytes=limit,
            limit_source=limit_source,
            process=process,
            cgroup=cgroup,
            host=host,
            pressure=pressure,
            degraded=tuple(
                Degradation(source, failures[source][0]) for source in _SOURCES if source in failures
            ),
            target_state=state,
            target_problem=problem,
        )

    def _read(
        self,
        source: str,
        sampler: Sampler[T] | None,
        failures: dict[str, tuple[str, BaseException | None]],
    ) -> T | None:
        """One source's record, or None with the reason recorded in ``failures``."""
        if sampler is None:
            return None
        try:
            return sampler.sample()
        except SourceUnavailable as exc:
            failures[source] = (str(exc), None)
        except Exception as exc:
            # A bug or an unforeseen OS error must not stop the watchdog; it is logged with its traceback.
            failures[source] = (f"unexpected {type(exc).__name__}: {exc}", exc)
        return None

    def _log_target(self, state: TargetState, problem: str | None) -> None:
        """One line when the target goes missing or unreadable (or its state changes between those), one when
        it is judged again."""
        previous, self._target_state = self._target_state, state
        if state is previous:
            return
        label = self._target_label
        if state is TargetState.MISSING:
            self._logger.warning(
                "target %s not found: %s; /health says status unknown and /health/ready is 503 until it is "
                "there, its firing alerts are resolved",
                label,
                problem,
            )
        elif state is TargetState.UNREADABLE:
            self._logger.warning(
                "target %s cannot be read: %s; /health says status unknown and /health/ready is 503 until it "
                "is read again, its alerts keep their state",
                label,
                problem,
            )
        else:
            self._logger.info("target %s found: judged again (was %s)", label, previous.value)

    def _log_transitions(self, failures: dict[str, tuple[str, BaseException | None]]) -> None:
        """WARNING when a source starts failing (or its reason changes), INFO when it recovers."""
        for source in _SOURCES:
            previous = self._degraded.get(source)
            if source in failures:
                reason, exc = failures[source]
                if previous is None:
                    self._logger.warning("%s source degraded: %s", source, reason, exc_info=exc)
                elif previous != reason:
                    self._logger.warning("%s source still degraded, now: %s", source, reason, exc_info=exc)
            elif previous is not None:
                self._logger.info("%s source recovered (was: %s)", source, previous)
        self._degraded = {source: reason for source, (reason, _) in failures.items()}
