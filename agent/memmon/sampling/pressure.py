"""PSI memory pressure: the share of wall time tasks stalled waiting for memory.

Documentation/accounting/psi.rst: ``/proc/pressure/memory`` (and, on cgroup v2, each cgroup's
``memory.pressure``) reads::

    some avg10=0.00 avg60=0.00 avg300=0.00 total=0
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0

"some" is the share of time at least one task stalled, "full" the share all non-idle tasks stalled at once;
avg10/60/300 are percents over 10 s, 60 s and 300 s windows, total is microseconds. The memory file has had
both lines since PSI appeared (Linux 4.20); "full" is still parsed as optional (the cpu file lacked it before
5.13). A kernel booted with ``psi=0`` has the file, but reading it fails with EOPNOTSUPP.

Pressure alone misleads without swap (memory can fill with no stall until the OOM killer acts), so it is a
confirming signal next to headroom, never the only one.
"""

from __future__ import annotations

from pathlib import Path

from memmon.model import PressureSample
from memmon.sampling.base import SourceUnavailable
from memmon.sampling.cgroup_location import CgroupLocation

_HOST_PRESSURE = Path("/proc/pressure/memory")


class PressureSampler:
    """Reads one PSI memory file per ``sample()``."""

    def __init__(self, path: Path = _HOST_PRESSURE) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        """The PSI file read."""
        return self._path

    @classmethod
    def for_cgroup(cls, location: CgroupLocation | None, *, host: Path = _HOST_PRESSURE) -> PressureSampler:
        """The pressure of a v2 cgroup (its ``memory.pressure``) when that file exists, else the host's.

        cgroup v1 has no PSI files (its ``memory.pressure_level`` is an eventfd notifier, not a reading).
        """
        if location is not None and location.version == 2:
            candidate = location.directory / "memory.pressure"
            if candidate.is_file():
                return cls(candidate)
        return cls(host)

    def sample(self) -> PressureSample:
        """Parse the file now; ``SourceUnavailable`` when it is missing, unreadable or has no "some" line."""
        try:
            text = self._path.read_bytes().decode("ascii", "replace")
        except OSError as exc:
            raise SourceUnavailable(f"pressure {self._path}: {exc.strerror or exc}") from exc
        averages: dict[str, float] = {}
        for line in text.splitlines():
            kind, _, rest = line.partition(" ")
            for item in rest.split():
                key, _, value = item.partition("=")
                if key == "avg10":
                    try:
                        averages[kind] = float(value)
                    except ValueError:
                        raise SourceUnavailable(
                            f"pressure {self._path}: cannot parse {line.strip()[:60]!r}"
                        ) from None
        if "some" not in averages:
            raise SourceUnavailable(f"pressure {self._path}: no 'some avg10=' line")
        return PressureSample(
            source=str(self._path), some_avg10=averages["some"], full_avg10=averages.get("full")
        )
