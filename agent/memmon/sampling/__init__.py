"""The sampling stage: read process, cgroup, host and pressure memory into frozen ``memmon.model`` records.

Each sampler reads one source and raises ``SourceUnavailable`` when it cannot; ``SnapshotSampler`` reads them
all once per check into a ``MemorySample`` and turns failures into degradations. This package imports nothing
from memmon but ``memmon.model``.
"""

from memmon.sampling.base import Sampler, SourceUnavailable
from memmon.sampling.cgroup import CgroupLocation, CgroupSampler, cgroup_at, cgroup_of_unit, locate_cgroup_of
from memmon.sampling.host import HostSampler
from memmon.sampling.pressure import PressureSampler
from memmon.sampling.process import ProcessSampler
from memmon.sampling.snapshot import SnapshotSampler

__all__ = [
    "CgroupLocation",
    "CgroupSampler",
    "HostSampler",
    "PressureSampler",
    "ProcessSampler",
    "Sampler",
    "SnapshotSampler",
    "SourceUnavailable",
    "cgroup_at",
    "cgroup_of_unit",
    "locate_cgroup_of",
]
