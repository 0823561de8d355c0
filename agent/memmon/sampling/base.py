"""The contract every sampler keeps: ``sample()`` returns one frozen record or raises ``SourceUnavailable``.

A sampler reads one data source (``/proc/meminfo``, a process, a memory cgroup, a PSI file) once per call.
Its data sources (paths, clocks) are constructor arguments with production defaults, so tests feed fixture
trees and real tests read the real files. Samplers never log and never swallow a failure: they raise
``SourceUnavailable`` with a human reason, and ``SnapshotSampler`` turns that into a ``Degradation``.
"""

from __future__ import annotations

import os
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class SourceUnavailable(Exception):
    """A source could not be read; ``str(exc)`` is the human reason.

    The reason names the source and the file, e.g.
    ``cgroup /sys/fs/cgroup/memory/x: memory.usage_in_bytes: No such file or directory``.
    """


class Sampler(Protocol[T_co]):
    """Anything that reads one source into one record (``HostSample``, ``CgroupSample``...)."""

    def sample(self) -> T_co:
        """Read the source now; raise ``SourceUnavailable`` when it cannot be read."""
        ...


def read_file(path: str) -> bytes:
    """A small kernel file's content with plain ``os.read`` (no buffered file object: this runs every check).

    Raises ``OSError`` like ``open()`` does. /proc and /sys files are generated on read, so read until EOF.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return b"".join(chunks)
