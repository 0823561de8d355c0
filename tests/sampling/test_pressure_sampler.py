"""PressureSampler: PSI memory files, host-wide or a v2 cgroup's."""

from __future__ import annotations

from pathlib import Path

import pytest

from memmon.sampling import CgroupLocation, PressureSampler, SourceUnavailable

from .support import FIXTURES, psi_off_reason

HOST = Path("/proc/pressure/memory")
APP = FIXTURES / "cgroup_v2" / "system.slice" / "app.service"


@pytest.mark.skipif(not HOST.is_file(), reason=f"no {HOST}: {psi_off_reason()}")
def test_real_host_pressure_parses() -> None:
    """The real /proc/pressure/memory gives a some avg10 percent and a full one."""
    try:
        sample = PressureSampler().sample()
    except SourceUnavailable as exc:  # PSI off at boot on an older kernel: the file exists, reads fail
        pytest.skip(f"{exc}: {psi_off_reason()}")
    assert sample.source == str(HOST)
    assert 0.0 <= sample.some_avg10 <= 100.0
    assert sample.full_avg10 is not None and 0.0 <= sample.full_avg10 <= 100.0


def test_some_and_full_lines() -> None:
    """avg10 of the some and the full lines are read."""
    sample = PressureSampler(FIXTURES / "proc" / "pressure" / "memory").sample()
    assert (sample.some_avg10, sample.full_avg10) == (12.5, 3.75)


def test_full_line_is_optional() -> None:
    """A file with only the some line gives full_avg10 None."""
    sample = PressureSampler(FIXTURES / "proc" / "pressure" / "memory_some_only").sample()
    assert (sample.some_avg10, sample.full_avg10) == (0.4, None)


def test_garbled_file_is_source_unavailable() -> None:
    """A value that is not a number raises SourceUnavailable quoting the line."""
    with pytest.raises(SourceUnavailable, match="cannot parse 'some avg10=abc"):
        PressureSampler(FIXTURES / "proc" / "pressure" / "memory_garbled").sample()


def test_missing_file_is_source_unavailable(tmp_path: Path) -> None:
    """A missing PSI file raises SourceUnavailable naming it."""
    with pytest.raises(SourceUnavailable, match="No such file or directory"):
        PressureSampler(tmp_path / "memory").sample()


def test_for_cgroup_prefers_a_v2_cgroups_own_file() -> None:
    """A v2 cgroup with memory.pressure is read there; its numbers are the cgroup's."""
    sampler = PressureSampler.for_cgroup(CgroupLocation(APP, 2, "/system.slice/app.service"))
    assert sampler.path == APP / "memory.pressure"
    assert sampler.sample().some_avg10 == 1.53


def test_for_cgroup_falls_back_to_the_host_file(tmp_path: Path) -> None:
    """No location, a v1 cgroup, or a v2 cgroup without memory.pressure all read the host file."""
    host = tmp_path / "host-pressure"
    limited = FIXTURES / "cgroup_v2" / "system.slice" / "limited.service"
    assert PressureSampler.for_cgroup(None, host=host).path == host
    assert PressureSampler.for_cgroup(CgroupLocation(APP, 1, "/x"), host=host).path == host
    assert PressureSampler.for_cgroup(CgroupLocation(limited, 2, "/l"), host=host).path == host
