"""Reading a memory cgroup, v1 or v2: what it uses against its limit (located by ``cgroup_location``).

The limit that kills a container or a systemd unit is its cgroup's, not the host's memory.

What a check reads (all cheap single-page reads, every check):

- v2 (cgroup-v2.rst, "Memory Interface Files"): ``memory.current``; ``memory.max`` (``max`` = no limit);
  ``memory.stat`` ``inactive_file``; ``memory.events`` ``oom_kill`` (the key exists since Linux 4.13).
- v1 (cgroup-v1/memory.rst, section 5): ``memory.usage_in_bytes``; ``memory.limit_in_bytes`` (unlimited reads
  as PAGE_COUNTER_MAX pages, e.g. 9223372036854771712, so anything >= ``huge_limit_bytes`` is no limit);
  ``memory.stat`` ``total_inactive_file`` (hierarchical; else ``inactive_file``) and
  ``hierarchical_memory_limit`` (the tightest limit of the cgroup and its ancestors);
  ``memory.oom_control`` ``oom_kill`` (since 4.13); ``memory.failcnt``.

Usage, limit and ``memory.stat`` are required; the counters are optional (a missing ``memory.events``,
``memory.oom_control``, ``memory.failcnt`` or ``oom_kill`` key gives None).

The working set is usage minus inactive file cache, floored at 0: what cAdvisor and the kubelet judge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from memmon.model import CgroupSample
from memmon.sampling.base import SourceUnavailable, read_file
from memmon.sampling.cgroup_location import CgroupLocation, cgroup_at, cgroup_of_unit, locate_cgroup_of

__all__ = ["CgroupLocation", "CgroupSampler", "cgroup_at", "cgroup_of_unit", "locate_cgroup_of"]


class CgroupSampler:
    """Samples one memory cgroup, given as a fixed location or found by a ``locate`` callback.

    With ``locate`` (a ``--unit`` that has not started yet, the auto-detected cgroup of the target pid), the
    location is looked up at every ``sample()`` until that succeeds, and looked up again after a sample
    finds the directory gone (the unit or pod was recreated). A ``location`` given too is the first guess.
    ``CgroupSample.path`` is the location's hierarchy-relative ``name``.

    ``absent`` says whether the last ``sample()`` failed because the cgroup is not there (its directory does not
    exist, or ``locate`` could not place it): a missing target, as opposed to a file that could not be read.
    """

    def __init__(
        self,
        location: CgroupLocation | None = None,
        *,
        locate: Callable[[], CgroupLocation] | None = None,
        huge_limit_bytes: int = 1 << 60,
    ) -> None:
        if location is None and locate is None:
            raise ValueError("CgroupSampler needs a location or a locate callback")
        self._location = location
        self._locate = locate
        self._huge_limit_bytes = huge_limit_bytes
        self._absent = False

    @property
    def absent(self) -> bool:
        """True when the last sample found no cgroup to read (see the class docstring)."""
        return self._absent

    @property
    def location(self) -> CgroupLocation | None:
        """The cgroup sampled, or None while the ``locate`` callback has not found it."""
        return self._location

    def sample(self) -> CgroupSample:
        """Read the cgroup once; ``SourceUnavailable`` when not located, a dir or file is missing, or bad."""
        self._absent = False
        location = self._location
        if location is None:
            assert self._locate is not None
            try:
                location = self._locate()
            except SourceUnavailable:
                self._absent = True
                raise
            self._location = location
        try:
            if location.version == 2:
                return self._sample_v2(location)
            return self._sample_v1(location)
        except SourceUnavailable:
            if not location.directory.is_dir():
                self._absent = True
                if self._locate is not None:
                    self._location = None
            raise

    def _sample_v2(self, location: CgroupLocation) -> CgroupSample:
        directory = location.directory
        usage = _read_int(directory, "memory.current")
        raw_max = _read_required(directory, "memory.max").strip()
        limit = None if raw_max == "max" else self._limit(_parse_int(directory, "memory.max", raw_max))
        stat = _read_keyed(directory, "memory.stat")
        events = _read_keyed(directory, "memory.events", optional=True)
        return _build(location, usage, limit, stat.get("inactive_file", 0), events.get("oom_kill"), None)

    def _sample_v1(self, location: CgroupLocation) -> CgroupSample:
        directory = location.directory
        # usage_in_bytes is a "fuzz value" batched per cpu (cgroup-v1/memory.rst 5.5); cAdvisor uses it too.
        usage = _read_int(directory, "memory.usage_in_bytes")
        limit = self._limit(_read_int(directory, "memory.limit_in_bytes"))
        stat = _read_keyed(directory, "memory.stat")
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        hierarchical = stat.get("hierarchical_memory_limit")
        if hierarchical is not None and self._limit(hierarchical) is not None:
            limit = hierarchical if limit is None else min(limit, hierarchical)
        oom = _read_keyed(directory, "memory.oom_control", optional=True)
        failcnt_text = _read_or_none(directory, "memory.failcnt")
        failcnt = None if failcnt_text is None else _parse_int(directory, "memory.failcnt", failcnt_text)
        return _build(location, usage, limit, inactive, oom.get("oom_kill"), failcnt)

    def _limit(self, value: int) -> int | None:
        return None if value >= self._huge_limit_bytes else value


def _build(
    location: CgroupLocation,
    usage: int,
    limit: int | None,
    inactive_file: int,
    oom_kill: int | None,
    failcnt: int | None,
) -> CgroupSample:
    return CgroupSample(
        path=location.name,
        version=location.version,
        usage_bytes=usage,
        limit_bytes=limit,
        inactive_file_bytes=inactive_file,
        working_set_bytes=max(0, usage - inactive_file),
        oom_kill_count=oom_kill,
        failcnt=failcnt,
    )


def _read_or_none(directory: Path, name: str) -> str | None:
    """An interface file's text, None when the file (not the directory) is missing."""
    try:
        return read_file(f"{directory}/{name}").decode("ascii", "replace")
    except FileNotFoundError:
        if not directory.is_dir():
            raise SourceUnavailable(f"cgroup {directory}: no such cgroup directory") from None
        return None
    except OSError as exc:
        raise SourceUnavailable(f"cgroup {directory}: {name}: {exc.strerror or exc}") from exc


def _read_required(directory: Path, name: str) -> str:
    """An interface file's text; ``SourceUnavailable`` naming the file when it is missing."""
    text = _read_or_none(directory, name)
    if text is None:
        raise SourceUnavailable(f"cgroup {directory}: {name}: No such file or directory")
    return text


def _parse_int(directory: Path, name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SourceUnavailable(f"cgroup {directory}: {name}: cannot parse {text.strip()[:40]!r}") from None


def _read_int(directory: Path, name: str) -> int:
    return _parse_int(directory, name, _read_required(directory, name))


def _read_keyed(directory: Path, name: str, *, optional: bool = False) -> dict[str, int]:
    """A flat-keyed file (``key value`` lines: memory.stat, memory.events, memory.oom_control)."""
    text = _read_or_none(directory, name) if optional else _read_required(directory, name)
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values
