"""CgroupSampler: usage, limit, working set and OOM counters of v1 and v2 memory cgroups."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memmon.sampling import CgroupLocation, CgroupSampler, SourceUnavailable, cgroup_at, locate_cgroup_of

from .support import FIXTURES, MIB, Spawn

V2 = FIXTURES / "cgroup_v2" / "system.slice"
V1 = FIXTURES / "cgroup_v1"


def v1(name: str) -> CgroupLocation:
    return CgroupLocation(V1 / name, 1, f"/{name}")


def test_v2_unlimited() -> None:
    """v2: memory.current, "max" as no limit, inactive_file from memory.stat, oom_kill from memory.events."""
    sample = CgroupSampler(CgroupLocation(V2 / "app.service", 2, "/system.slice/app.service")).sample()
    assert sample.path == "/system.slice/app.service"
    assert sample.version == 2
    assert sample.usage_bytes == 734003200
    assert sample.limit_bytes is None
    assert sample.inactive_file_bytes == 157286400
    assert sample.working_set_bytes == 734003200 - 157286400
    assert sample.oom_kill_count == 2
    assert sample.failcnt is None


def test_v2_numeric_limit_and_no_oom_kill_key() -> None:
    """v2: a numeric memory.max is the limit; memory.events without oom_kill (before 4.13) gives None."""
    sample = CgroupSampler(
        CgroupLocation(V2 / "limited.service", 2, "/system.slice/limited.service")
    ).sample()
    assert sample.limit_bytes == 512 * MIB
    assert sample.working_set_bytes == 268435456 - 41943040
    assert sample.oom_kill_count is None


def test_v1_huge_limit_is_no_limit() -> None:
    """v1: 9223372036854771712 (PAGE_COUNTER_MAX) is no limit; total_inactive_file wins; counters read."""
    sample = CgroupSampler(v1("unlimited")).sample()
    assert sample.version == 1
    assert sample.usage_bytes == 125829120
    assert sample.limit_bytes is None
    assert sample.inactive_file_bytes == 20971520 + MIB  # the hierarchical total_ figure
    assert sample.working_set_bytes == 125829120 - 20971520 - MIB
    assert sample.oom_kill_count == 3
    assert sample.failcnt == 17


def test_v1_old_kernel_without_oom_kill_line() -> None:
    """v1: no oom_kill line in memory.oom_control gives None; without total_ lines inactive_file is used."""
    sample = CgroupSampler(v1("old_kernel")).sample()
    assert sample.limit_bytes == 1024 * MIB
    assert sample.inactive_file_bytes == 10485760
    assert sample.oom_kill_count is None
    assert sample.failcnt == 0


def test_v1_parent_limit_binds() -> None:
    """v1: an unlimited cgroup under a limited parent reports hierarchical_memory_limit as its limit."""
    assert CgroupSampler(v1("child_of_limited")).sample().limit_bytes == 768 * MIB


def test_huge_limit_threshold_is_configurable() -> None:
    """A limit at or above huge_limit_bytes counts as no limit."""
    assert CgroupSampler(v1("old_kernel"), huge_limit_bytes=1024 * MIB).sample().limit_bytes is None


def test_missing_file_names_it() -> None:
    """A missing interface file raises SourceUnavailable naming the cgroup directory and the file."""
    directory = V1 / "missing_usage"
    with pytest.raises(SourceUnavailable) as caught:
        CgroupSampler(v1("missing_usage")).sample()
    assert str(caught.value) == f"cgroup {directory}: memory.usage_in_bytes: No such file or directory"


def test_missing_directory(tmp_path: Path) -> None:
    """A cgroup directory that does not exist raises SourceUnavailable saying so."""
    with pytest.raises(SourceUnavailable, match="no such cgroup directory"):
        CgroupSampler(CgroupLocation(tmp_path / "gone", 2, "/gone")).sample()


def test_garbled_value_is_a_parse_error(tmp_path: Path) -> None:
    """Content that is not a number raises SourceUnavailable quoting it."""
    directory = tmp_path / "app"
    shutil.copytree(V2 / "limited.service", directory)
    (directory / "memory.max").write_text("lots\n")
    with pytest.raises(SourceUnavailable, match=r"memory\.max: cannot parse 'lots'"):
        CgroupSampler(CgroupLocation(directory, 2, "/app")).sample()


def test_working_set_floors_at_zero(tmp_path: Path) -> None:
    """inactive_file above usage (v1 usage is a batched fuzz value) gives a working set of 0, not negative."""
    directory = tmp_path / "app"
    shutil.copytree(V1 / "old_kernel", directory)
    (directory / "memory.usage_in_bytes").write_text("4096\n")
    assert CgroupSampler(CgroupLocation(directory, 1, "/app")).sample().working_set_bytes == 0


def test_locate_is_retried_until_it_succeeds_and_after_the_dir_vanishes(tmp_path: Path) -> None:
    """A locate callback runs at each sample until it finds the cgroup, and again once its dir is gone."""
    directory = tmp_path / "app.service"
    calls: list[int] = []

    def locate() -> CgroupLocation:
        calls.append(1)
        if not directory.is_dir():
            raise SourceUnavailable("unit app.service has not started")
        return CgroupLocation(directory, 2, "/system.slice/app.service")

    sampler = CgroupSampler(locate=locate)
    for _ in range(2):
        with pytest.raises(SourceUnavailable, match="has not started"):
            sampler.sample()
    assert sampler.location is None
    shutil.copytree(V2 / "app.service", directory)
    assert sampler.sample().usage_bytes == 734003200
    assert sampler.sample().usage_bytes == 734003200
    assert len(calls) == 3
    shutil.rmtree(directory)
    with pytest.raises(SourceUnavailable, match="no such cgroup directory"):
        sampler.sample()
    assert sampler.location is None
    with pytest.raises(SourceUnavailable, match="has not started"):
        sampler.sample()
    assert len(calls) == 4


def test_needs_a_location_or_a_callback() -> None:
    """CgroupSampler() with neither a location nor a locate callback is a ValueError."""
    with pytest.raises(ValueError, match="location or a locate"):
        CgroupSampler()


def test_real_v1_cgroup_with_child(v1_cgroup: Path, spawn: Spawn, marker: str) -> None:
    """A child holding 64 MiB in a fresh 256 MiB v1 cgroup: usage >= 64 MiB, limit 256 MiB, int counters."""
    child = spawn(marker, mib=64, cgroup=v1_cgroup)
    location = locate_cgroup_of(child.pid)
    assert location == CgroupLocation(v1_cgroup, 1, f"/{v1_cgroup.name}")
    assert cgroup_at(v1_cgroup) == location
    assert cgroup_at(f"/{v1_cgroup.name}") == location
    sample = CgroupSampler(location).sample()
    assert sample.version == 1
    assert sample.usage_bytes >= 64 * MIB
    assert sample.limit_bytes == 256 * MIB
    assert 0 <= sample.working_set_bytes <= sample.usage_bytes
    assert isinstance(sample.failcnt, int)
    assert isinstance(sample.oom_kill_count, int)
