"""read_mappings: a process's totals and biggest mappings from /proc, on real processes and a fixture tree."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.sampling.mappings import read_mappings

from .support import MIB, wait_zombie

# Maps 64 MiB of anonymous memory, writes one byte per page (so all of it is resident), prints the region's
# address, then sleeps until killed.
MMAP_CHILD = """
import ctypes, mmap, sys, time
size = 64 << 20
region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for offset in range(0, size, mmap.PAGESIZE):
    region[offset] = 1
print(ctypes.addressof(ctypes.c_char.from_buffer(region)), flush=True)
time.sleep(300)
"""


@pytest.fixture
def mmap_child() -> Iterator[tuple[int, int]]:
    """A child holding a touched 64 MiB anonymous mapping: ``(pid, address of the mapping)``."""
    child = subprocess.Popen([sys.executable, "-c", MMAP_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 20)
        line = child.stdout.readline() if ready else ""
        assert line.strip().isdigit(), f"child did not report its mapping: {line!r}"
        yield child.pid, int(line)
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_own_process_has_anonymous_mappings_sorted_by_rss() -> None:
    """This process: RSS > 0, a [heap] or [anon] mapping among the top, top mappings by descending RSS."""
    report = read_mappings(os.getpid(), top=10)
    assert report.problem is None
    assert report.pid == os.getpid()
    assert report.rss_bytes is not None and report.rss_bytes > 0
    assert report.pss_bytes is not None and 0 < report.pss_bytes <= report.rss_bytes
    assert report.anonymous_bytes is not None and report.anonymous_bytes > 0
    assert report.swap_bytes is not None
    assert report.source == f"/proc/{os.getpid()}/smaps_rollup + /proc/{os.getpid()}/smaps"
    assert 0 < len(report.mappings) <= 10
    assert {"[heap]", "[anon]"} & {mapping.path for mapping in report.mappings}
    sizes = [mapping.rss_bytes for mapping in report.mappings]
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) <= report.rss_bytes
    for mapping in report.mappings:
        assert int(mapping.start, 16) < int(mapping.end, 16)
        assert len(mapping.perms) == 4


def test_child_mmap_region_is_among_the_top_mappings(mmap_child: tuple[int, int]) -> None:
    """A child's touched 64 MiB anonymous mmap is a top mapping, named [anon], with RSS >= 60 MiB."""
    pid, address = mmap_child
    report = read_mappings(pid, top=5)
    assert report.problem is None
    assert report.rss_bytes is not None and report.rss_bytes >= 64 * MIB
    holding = [m for m in report.mappings if int(m.start, 16) <= address < int(m.end, 16)]
    assert len(holding) == 1, report.mappings
    region = holding[0]
    assert region.path == "[anon]"
    assert region.perms.startswith("rw")
    assert region.rss_bytes >= 60 * MIB
    assert region.anonymous_bytes is not None and region.anonymous_bytes >= 60 * MIB
    assert report.mappings[0] == region


def test_exited_and_zombie_processes_give_a_problem_not_an_error() -> None:
    """A reaped pid and a zombie both give a report with ``problem`` set and no mappings; nothing raises."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_zombie(child.pid)
    zombie = read_mappings(child.pid)
    assert zombie.problem is not None and "exited" in zombie.problem
    assert zombie.mappings == ()
    assert zombie.rss_bytes is None
    child.wait()
    gone = read_mappings(child.pid)
    assert gone.problem == f"pid {child.pid}: no such process (it exited)"
    assert (gone.mappings, gone.rss_bytes, gone.source) == ((), None, "none")


def test_unreadable_process_gives_permission_problem() -> None:
    """A process this one may not inspect (pid 1 where the sandbox forbids it) gives a permission problem."""
    try:
        Path("/proc/1/smaps_rollup").read_bytes()
    except PermissionError:
        pass
    else:
        pytest.skip("pid 1's smaps_rollup is readable here (root without ptrace restrictions)")
    report = read_mappings(1)
    assert report.problem is not None and "permission denied" in report.problem
    assert report.mappings == ()


ROLLUP = """\
55d0c0a6e000-7ffd3b5fe000 ---p 00000000 00:00 0                          [rollup]
Rss:              204800 kB
Pss:              150000 kB
Pss_Anon:         140000 kB
Pss_File:          10000 kB
Pss_Shmem:             0 kB
Shared_Clean:      50000 kB
Shared_Dirty:          0 kB
Private_Clean:      4800 kB
Private_Dirty:    150000 kB
Referenced:       204800 kB
Anonymous:        140000 kB
LazyFree:              0 kB
AnonHugePages:     65536 kB
Swap:               2048 kB
SwapPss:            2048 kB
Locked:                0 kB
"""

# An anonymous mapping's header ends "0 " (no path after the inode): kept as \x20.
SMAPS = """\
55d0c0a6e000-55d0c0a70000 r--p 00000000 fe:00 260386                     /usr/bin/my service
Size:                  8 kB
Rss:                   8 kB
Pss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd mr mw me
55d0c1000000-55d0c5000000 rw-p 00000000 00:00 0                          [heap]
Size:              65536 kB
Rss:               60000 kB
Pss:               60000 kB
Anonymous:         60000 kB
Swap:               1024 kB
THPeligible:           1
VmFlags: rd wr mr mw me ac
7f0000000000-7f0008000000 rw-p 00000000 00:00 0\x20
Size:             131072 kB
Rss:              120000 kB
Pss:              120000 kB
Anonymous:        120000 kB
Swap:               1024 kB
VmFlags: rd wr mr mw me nr
7f0010000000-7f0010100000 rw-s 00000000 00:01 1234                       /memfd:cache (deleted)
Size:               1024 kB
Rss:                1000 kB
Pss:                 500 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd wr sh mr mw me ms
7ffd3b5dd000-7ffd3b5fe000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                 100 kB
Pss:                 100 kB
Anonymous:           100 kB
Swap:                  0 kB
VmFlags: rd wr mr mw me gd ac
"""


def fixture_proc(tmp_path: Path, *, rollup: bool = True) -> Path:
    """A ``proc_root`` with pid 4242's smaps (and smaps_rollup unless ``rollup`` is False)."""
    directory = tmp_path / "proc" / "4242"
    directory.mkdir(parents=True)
    (directory / "smaps").write_text(SMAPS)
    if rollup:
        (directory / "smaps_rollup").write_text(ROLLUP)
    return tmp_path / "proc"


def test_fixture_smaps_rollup_and_smaps_parse(tmp_path: Path) -> None:
    """Totals come from smaps_rollup (kB -> bytes); the top 3 of smaps by RSS, blank paths named [anon]."""
    root = fixture_proc(tmp_path)
    report = read_mappings(4242, top=3, proc_root=root)
    assert report.problem is None
    assert (report.rss_bytes, report.pss_bytes, report.anonymous_bytes, report.swap_bytes) == (
        204800 * 1024, 150000 * 1024, 140000 * 1024, 2048 * 1024,
    )  # fmt: skip
    assert report.source == f"{root}/4242/smaps_rollup + {root}/4242/smaps"
    assert [(m.path, m.rss_bytes // 1024) for m in report.mappings] == [
        ("[anon]", 120000), ("[heap]", 60000), ("/memfd:cache (deleted)", 1000),
    ]  # fmt: skip
    anon = report.mappings[0]
    assert (anon.start, anon.end, anon.perms) == ("7f0000000000", "7f0008000000", "rw-p")
    assert (anon.pss_bytes, anon.anonymous_bytes) == (120000 * 1024, 120000 * 1024)
    paths = {m.path for m in read_mappings(4242, top=10, proc_root=root).mappings}
    assert "/usr/bin/my service" in paths and "[stack]" in paths


def test_without_smaps_rollup_totals_are_summed_from_smaps(tmp_path: Path) -> None:
    """No smaps_rollup (kernel < 4.14): the totals are the sums over smaps, and the source says so."""
    root = fixture_proc(tmp_path, rollup=False)
    report = read_mappings(4242, top=1, proc_root=root)
    assert report.problem is None
    assert report.source == f"{root}/4242/smaps"
    assert report.rss_bytes == (8 + 60000 + 120000 + 1000 + 100) * 1024
    assert report.pss_bytes == (4 + 60000 + 120000 + 500 + 100) * 1024
    assert report.anonymous_bytes == (60000 + 120000 + 100) * 1024
    assert report.swap_bytes == 2048 * 1024
    assert len(report.mappings) == 1
