"""SnapshotSampler: one MemorySample per check; failing sources degrade, are logged once, and recover."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from memmon.model import HostSample, TargetKind
from memmon.sampling import (
    CgroupLocation,
    CgroupSampler,
    HostSampler,
    PressureSampler,
    ProcessSampler,
    SnapshotSampler,
)

from .support import FIXTURES, MIB, Spawn

APP = CgroupLocation(FIXTURES / "cgroup_v2" / "system.slice" / "app.service", 2, "/system.slice/app.service")
LIMITED = CgroupLocation(
    FIXTURES / "cgroup_v2" / "system.slice" / "limited.service", 2, "/system.slice/limited.service"
)
HOST_TOTAL = 8048600 * 1024  # MemTotal of the recorded meminfo_swap


def snapshot(
    *,
    process: ProcessSampler | None = None,
    cgroup: CgroupSampler | None = None,
    host: HostSampler | None = None,
    pressure: PressureSampler | None = None,
    kind: TargetKind = TargetKind.CGROUP,
) -> SnapshotSampler:
    return SnapshotSampler(
        process=process,
        cgroup=cgroup,
        host=host or HostSampler(FIXTURES / "proc" / "meminfo_swap"),
        pressure=pressure,
        target_kind=kind,
        target_label="test",
        clock=lambda: 1000.0,
        monotonic=lambda: 5.0,
    )


class BrokenHost(HostSampler):
    """A host sampler with a bug: sample() raises something other than SourceUnavailable."""

    def sample(self) -> HostSample:
        raise RuntimeError("boom")


def test_dead_pid_degrades_process_while_host_still_reads(spawn: Spawn, marker: str) -> None:
    """A --pid that exited leaves target_bytes None and a "process" degradation; the host is still read."""
    child = spawn(marker, mib=1)
    child.kill()
    child.wait()
    sample = snapshot(process=ProcessSampler([child.pid]), kind=TargetKind.PROCESS).sample()
    assert sample.target_bytes is None
    assert sample.process is None
    assert sample.host is not None
    assert [d.source for d in sample.degraded] == ["process"]
    assert f"pid {child.pid}" in sample.degraded[0].reason
    assert (sample.timestamp, sample.monotonic, sample.target) == (1000.0, 5.0, "test")


def test_process_target_is_the_rss_sum() -> None:
    """TargetKind.PROCESS judges the processes' summed RSS, against host memory without a cgroup."""
    sample = snapshot(process=ProcessSampler(), kind=TargetKind.PROCESS).sample()
    assert sample.process is not None
    assert sample.target_bytes == sample.process.rss_bytes
    assert (sample.effective_limit_bytes, sample.limit_source) == (HOST_TOTAL, "host")
    assert sample.degraded == ()


def test_cgroup_limit_below_host_is_the_effective_limit() -> None:
    """A cgroup limit below host memory is the effective limit ("cgroup"); the target is the working set."""
    sample = snapshot(cgroup=CgroupSampler(LIMITED)).sample()
    assert (sample.effective_limit_bytes, sample.limit_source) == (512 * MIB, "cgroup")
    assert sample.cgroup is not None
    assert sample.target_bytes == sample.cgroup.working_set_bytes


def test_unlimited_or_larger_cgroup_limit_falls_back_to_host(tmp_path: Path) -> None:
    """No cgroup limit, or one above host memory, leaves host memory as the effective limit."""
    assert snapshot(cgroup=CgroupSampler(APP)).sample().limit_source == "host"
    big = tmp_path / "big"
    shutil.copytree(LIMITED.directory, big)
    (big / "memory.max").write_text(f"{HOST_TOTAL * 2}\n")
    sample = snapshot(cgroup=CgroupSampler(CgroupLocation(big, 2, "/big"))).sample()
    assert (sample.effective_limit_bytes, sample.limit_source) == (HOST_TOTAL, "host")


def test_host_failure_keeps_the_last_known_total(tmp_path: Path) -> None:
    """When meminfo fails the last host total read is the limit; before any read, sysconf's memory size."""
    meminfo = tmp_path / "meminfo"
    shutil.copy(FIXTURES / "proc" / "meminfo_swap", meminfo)
    sampler = snapshot(cgroup=CgroupSampler(APP), host=HostSampler(meminfo))
    assert sampler.sample().effective_limit_bytes == HOST_TOTAL
    meminfo.unlink()
    sample = sampler.sample()
    assert sample.host is None
    assert [d.source for d in sample.degraded] == ["host"]
    assert sample.effective_limit_bytes == HOST_TOTAL
    fresh = snapshot(cgroup=CgroupSampler(APP), host=HostSampler(meminfo)).sample()
    assert fresh.effective_limit_bytes == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_unexpected_error_degrades_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    """A sampler raising something unforeseen degrades its source and is logged with the traceback."""
    caplog.set_level(logging.INFO, logger="memmon.sampling")
    sample = snapshot(cgroup=CgroupSampler(APP), host=BrokenHost()).sample()
    assert sample.degraded[0].source == "host"
    assert sample.degraded[0].reason == "unexpected RuntimeError: boom"
    assert caplog.records[0].exc_info is not None


def test_partial_process_loss_is_a_degradation(spawn: Spawn, marker: str) -> None:
    """A process sample that lost one of its pids is kept; ProcessSampler.problem becomes a degradation."""
    alive = spawn(marker, mib=1)
    dead = spawn(marker, mib=1)
    sampler = snapshot(process=ProcessSampler([alive.pid, dead.pid]), kind=TargetKind.PROCESS)
    assert sampler.sample().degraded == ()
    dead.kill()
    dead.wait()
    sample = sampler.sample()
    assert sample.process is not None and sample.target_bytes == sample.process.rss_bytes
    assert [(d.source, d.reason) for d in sample.degraded] == [("process", f"pid {dead.pid} exited")]


def test_degradation_logged_once_and_recovery_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing source logs one WARNING however many checks it fails, then one INFO when it recovers."""
    caplog.set_level(logging.INFO, logger="memmon.sampling")
    pressure_file = tmp_path / "memory"
    sampler = snapshot(cgroup=CgroupSampler(APP), pressure=PressureSampler(pressure_file))
    for _ in range(4):
        sample = sampler.sample()
        assert [d.source for d in sample.degraded] == ["pressure"]
        assert sample.cgroup is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "pressure" in warnings[0].getMessage() and "No such file or directory" in warnings[0].getMessage()
    shutil.copy(FIXTURES / "proc" / "pressure" / "memory", pressure_file)
    for _ in range(3):
        sample = sampler.sample()
        assert sample.degraded == ()
        assert sample.pressure is not None
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "pressure source recovered" in infos[0].getMessage()
    assert len(caplog.records) == 2


def test_target_kind_needs_its_sampler() -> None:
    """A process target without a ProcessSampler, or a cgroup one without a CgroupSampler, is a ValueError."""
    with pytest.raises(ValueError, match="needs a ProcessSampler"):
        snapshot(kind=TargetKind.PROCESS)
    with pytest.raises(ValueError, match="needs a CgroupSampler"):
        snapshot(kind=TargetKind.CGROUP)


def test_configured_limit_is_the_effective_limit_when_lowest() -> None:
    """A configured limit (a sidecar's view of the app container's limit) below host memory becomes the
    effective limit, named "configured", and headroom is counted against it."""
    from memmon.model import TargetKind
    from memmon.sampling.host import HostSampler
    from memmon.sampling.process import ProcessSampler
    from memmon.sampling.snapshot import SnapshotSampler

    sampler = SnapshotSampler(
        process=ProcessSampler(),
        cgroup=None,
        host=HostSampler(),
        pressure=None,
        target_kind=TargetKind.PROCESS,
        target_label="self",
        configured_limit_bytes=256 * 2**20,
    )
    sample = sampler.sample()
    assert (sample.effective_limit_bytes, sample.limit_source) == (256 * 2**20, "configured")
    assert sample.target_bytes is not None
    assert sample.available_bytes == max(0, 256 * 2**20 - sample.target_bytes)
