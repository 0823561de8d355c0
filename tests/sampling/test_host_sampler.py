"""HostSampler: one read of /proc/meminfo, psutil's definitions."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from memmon.sampling import HostSampler, SourceUnavailable

from .support import FIXTURES, MIB

KIB = 1024


def test_real_meminfo_agrees_with_psutil() -> None:
    """On the real /proc/meminfo, totals equal psutil's and available/percent agree within memory's drift."""
    sample = HostSampler().sample()
    virtual = psutil.virtual_memory()
    swap = psutil.swap_memory()
    assert sample.total_bytes == virtual.total
    assert abs(sample.available_bytes - virtual.available) < 64 * MIB
    assert abs(sample.used_percent - virtual.percent) < 1.0
    assert sample.swap_total_bytes == swap.total
    assert abs(sample.swap_used_bytes - swap.used) < 64 * MIB
    assert abs(sample.swap_percent - swap.percent) < 1.0


def test_swap_and_percent_from_recorded_meminfo() -> None:
    """used_percent = (total - available) / total; swap used = SwapTotal - SwapFree; one decimal."""
    sample = HostSampler(FIXTURES / "proc" / "meminfo_swap").sample()
    assert sample.total_bytes == 8048600 * KIB
    assert sample.available_bytes == 2012150 * KIB
    assert sample.used_percent == round((8048600 - 2012150) / 8048600 * 100, 1) == 75.0
    assert sample.swap_total_bytes == 4194300 * KIB
    assert sample.swap_used_bytes == (4194300 - 3145724) * KIB
    assert sample.swap_percent == 25.0


def test_old_kernel_without_memavailable_estimates_it() -> None:
    """Without MemAvailable (kernels before 3.14) available = MemFree + Buffers + Cached; no swap is 0 %."""
    sample = HostSampler(FIXTURES / "proc" / "meminfo_no_available").sample()
    assert sample.available_bytes == (812344 + 104880 + 1303212) * KIB
    assert sample.swap_total_bytes == 0
    assert sample.swap_percent == 0.0


def test_missing_meminfo_is_source_unavailable(tmp_path: Path) -> None:
    """An unreadable meminfo raises SourceUnavailable naming the file."""
    missing = tmp_path / "meminfo"
    with pytest.raises(SourceUnavailable, match=f"{missing}: No such file or directory"):
        HostSampler(missing).sample()


def test_meminfo_without_memtotal_is_source_unavailable(tmp_path: Path) -> None:
    """A meminfo without MemTotal cannot give percentages and is reported, not guessed."""
    broken = tmp_path / "meminfo"
    broken.write_text("MemFree:  100 kB\n")
    with pytest.raises(SourceUnavailable, match="no MemTotal"):
        HostSampler(broken).sample()


def test_a_shared_reader_reuses_a_reading_younger_than_max_age(tmp_path: Path) -> None:
    """max_age: a second sample within it is the first reading; after it, the file is read again."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1000 kB\nMemAvailable: 400 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    now = [100.0]
    sampler = HostSampler(meminfo, max_age=0.25, monotonic=lambda: now[0])
    first = sampler.sample()
    meminfo.write_text("MemTotal: 1000 kB\nMemAvailable: 100 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    now[0] += 0.2
    assert sampler.sample() is first
    now[0] += 0.1
    assert sampler.sample().available_bytes == 100 * 1024
    assert HostSampler(meminfo).sample() is not HostSampler(meminfo).sample()  # no max_age: every call reads
