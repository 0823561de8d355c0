"""MemoryEvents: kernel notifications of memory levels on a real cgroup v1, v2 paths on fixture trees.

The v1 tests create ``/sys/fs/cgroup/memory/memmon-ev-<random>`` (256 MiB limit) and move a child Python into
it that holds as many MiB as it is told on stdin. Two figures are printed, not asserted (``pytest -s``): the
latency from a threshold crossing to the callback, and how long a ~1 GB/s leak lives after the last threshold.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from memmon.sampling.cgroup_location import CgroupLocation
from memmon.sampling.events import MemoryEvents, adaptive_interval
from tests.cgroups import v1_memory_cgroup
from tests.sampling.support import psi_off_reason

MIB = 1 << 20
HOST_PSI = Path("/proc/pressure/memory")

# Moves itself into the cgroup argv[1]; each stdin line is the MiB to hold, in 1 MiB chunks whose every page
# is written; answers "<monotonic at start> <monotonic when held>". With MALLOC_MMAP_THRESHOLD_ below 1 MiB
# every chunk is its own mmap, so dropping one gives the memory back to the kernel at once.
GROWER = """
import os, sys, time
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
chunks = []
print("ready", flush=True)
while line := sys.stdin.readline():
    mib = int(line)
    start = time.monotonic()
    while len(chunks) < mib:
        chunks.append(b"\\x01" * (1 << 20))
    del chunks[mib:]
    print(start, time.monotonic(), flush=True)
"""

# Leaks 10 MiB chunks as fast as it can, reporting "<monotonic> <MiB held>" after each, until killed.
LEAKER = """
import os, sys, time
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
chunks = []
while True:
    chunks.append(b"\\x01" * (10 << 20))
    print(time.monotonic(), len(chunks) * 10, flush=True)
"""

# Reads a file mapped from disk over and over inside a small cgroup: its pages are reclaimed and read back
# (refaults), which the kernel accounts as memory stall (psi.rst: reclaim and thrashing).
THRASHER = """
import mmap, os, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
with open(sys.argv[2], "rb") as data:
    pages = mmap.mmap(data.fileno(), 0, prot=mmap.PROT_READ)
total = 0
while True:
    for offset in range(0, len(pages), 4096):
        total += pages[offset]
"""


def _make_cgroup(limit: int) -> Iterator[CgroupLocation]:
    """A fresh v1 memory cgroup with ``limit``, as a location; removed afterwards."""
    with v1_memory_cgroup(limit, prefix="memmon-ev") as directory:
        yield CgroupLocation(directory, 1, "/" + directory.name)


@pytest.fixture
def memcg() -> Iterator[CgroupLocation]:
    """A fresh ``/sys/fs/cgroup/memory/memmon-ev-<random>`` with a 256 MiB limit, removed afterwards."""
    yield from _make_cgroup(256 * MIB)


@pytest.fixture
def small_memcg() -> Iterator[CgroupLocation]:
    """A fresh v1 memory cgroup with a 32 MiB limit, removed afterwards."""
    yield from _make_cgroup(32 * MIB)


class Recorder:
    """The ``on_event`` callback: keeps (monotonic time, reason) and wakes waiters."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.events.append((time.monotonic(), reason))
        self._changed.set()

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason in self.events]

    def mark(self) -> int:
        return len(self.events)

    async def wait_for(self, reason: str, since: int = 0, within: float = 5.0) -> float:
        """The time of the first ``reason`` recorded at index ``since`` or later, waiting for it."""
        async with asyncio.timeout(within):
            while True:
                for when, seen in self.events[since:]:
                    if seen == reason:
                        return when
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def make_events() -> Iterator[MakeEvents]:
    """Builds MemoryEvents with a Recorder callback; all are closed afterwards."""
    made: list[MemoryEvents] = []

    def make(location: CgroupLocation) -> tuple[MemoryEvents, Recorder]:
        recorder = Recorder()
        events = MemoryEvents(location, recorder)
        made.append(events)
        return events, recorder

    yield make
    for events in made:
        events.close()


class Child:
    """A child process in the cgroup, spoken to over its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(10):
            return (await self.process.stdout.readline()).decode().strip()

    async def hold(self, mib: int) -> tuple[float, float]:
        """Make the child hold ``mib`` MiB; (monotonic time it started, monotonic time it was done)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{mib}\n".encode())
        await self.process.stdin.drain()
        start, done = (float(field) for field in (await self.line()).split())
        return start, done


@pytest.fixture
async def spawn_child() -> AsyncIterator[SpawnChild]:
    """Starts ``python -c <script> <args>`` with pipes (``GROWER`` waits until "ready"); killed and reaped after."""
    children: list[asyncio.subprocess.Process] = []

    async def start(script: str, *args: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        )
        children.append(process)
        child = Child(process)
        if script == GROWER:
            assert await child.line() == "ready"
        return child

    yield start
    for process in children:
        if process.returncode is None:
            process.kill()
        await process.wait()


MakeEvents = Callable[[CgroupLocation], tuple[MemoryEvents, Recorder]]
SpawnChild = Callable[..., Awaitable[Child]]


def oom_kills(location: CgroupLocation) -> int:
    """The ``oom_kill`` counter of memory.oom_control (memory.rst section 10)."""
    for line in (location.directory / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    raise AssertionError("memory.oom_control has no oom_kill line")


def crossed(mib: int) -> str:
    return f"usage crossed {mib * MIB}"


def fell(mib: int) -> str:
    return f"usage fell below {mib * MIB}"


async def test_v1_thresholds_fire_as_usage_grows_past_each(
    memcg: CgroupLocation, make_events: MakeEvents, spawn_child: SpawnChild
) -> None:
    """Each v1 usage threshold calls back when the cgroup's usage grows past it; OOM and pressure arm too."""
    events, recorder = make_events(memcg)
    events.arm([192 * MIB, 64 * MIB, 128 * MIB])
    events.attach(asyncio.get_running_loop())
    assert events.problems == []
    assert events.armed == (64 * MIB, 128 * MIB, 192 * MIB)
    child = await spawn_child(GROWER, str(memcg.directory))
    for hold, threshold in ((96, 64), (160, 128), (224, 192)):
        mark = recorder.mark()
        await child.hold(hold)
        await recorder.wait_for(crossed(threshold), since=mark)
    assert "oom" not in recorder.reasons


async def test_v1_thresholds_fire_again_when_usage_falls_back_below(
    memcg: CgroupLocation, make_events: MakeEvents, spawn_child: SpawnChild
) -> None:
    """The kernel signals a threshold crossing in either direction: shrinking below one calls back too, as a fall
    ("usage fell below N", from the usage read at the notification), never as a rise."""
    events, recorder = make_events(memcg)
    events.arm([64 * MIB, 128 * MIB, 192 * MIB])
    events.attach(asyncio.get_running_loop())
    child = await spawn_child(GROWER, str(memcg.directory))
    await child.hold(224)
    await recorder.wait_for(crossed(192))
    mark = recorder.mark()
    await child.hold(160)
    await recorder.wait_for(fell(192), since=mark)
    mark = recorder.mark()
    await child.hold(16)
    await recorder.wait_for(fell(128), since=mark)
    await recorder.wait_for(fell(64), since=mark)
    assert not [reason for reason in recorder.reasons[mark:] if reason.startswith("usage crossed")]


async def test_v1_rearm_replaces_the_previous_thresholds(
    memcg: CgroupLocation, make_events: MakeEvents, spawn_child: SpawnChild
) -> None:
    """arm() after attach() replaces the thresholds: the dropped one stays silent, the new one calls back."""
    events, recorder = make_events(memcg)
    events.arm([64 * MIB])
    events.attach(asyncio.get_running_loop())
    events.arm([128 * MIB])
    assert events.armed == (128 * MIB,)
    child = await spawn_child(GROWER, str(memcg.directory))
    await child.hold(160)
    await recorder.wait_for(crossed(128))
    await asyncio.sleep(0.05)
    assert crossed(64) not in recorder.reasons
    events.arm([])
    assert not events.armed


async def test_v1_threshold_latency_is_measured(
    memcg: CgroupLocation, make_events: MakeEvents, spawn_child: SpawnChild
) -> None:
    """Every one of 20 crossings of one threshold (10 up, 10 down) calls back; the latency is printed."""
    events, recorder = make_events(memcg)
    events.attach(asyncio.get_running_loop())
    child = await spawn_child(GROWER, str(memcg.directory))
    await child.hold(120)
    # The threshold lies 1.5 MiB above the usage now and each step moves 3 MiB across it, so the crossing
    # happens between the step's start and end (a few tenths of a ms apart): they bracket the latency.
    threshold = int((memcg.directory / "memory.usage_in_bytes").read_text()) + 3 * MIB // 2
    events.arm([threshold])
    upper: list[float] = []
    lower: list[float] = []
    steps: list[float] = []
    for _ in range(10):
        for hold, reason in ((123, "usage crossed"), (120, "usage fell below")):
            mark = recorder.mark()
            start, done = await child.hold(hold)
            when = await recorder.wait_for(f"{reason} {threshold}", since=mark)
            upper.append(1000 * (when - start))
            lower.append(1000 * (when - done))
            steps.append(1000 * (done - start))
    print(
        f"\nthreshold callback latency over {len(upper)} crossings: median between"
        f" {statistics.median(lower):.3f} and {statistics.median(upper):.3f} ms (callback after the 3 MiB step"
        f" ended / began; the step took {statistics.median(steps):.3f} ms); worst {max(upper):.3f} ms after a"
        f" step began"
    )


async def test_v1_fast_leak_crosses_thresholds_then_the_oom_killer_acts_and_is_reported(
    memcg: CgroupLocation, make_events: MakeEvents, spawn_child: SpawnChild
) -> None:
    """A ~1 GB/s leak fires every threshold, then the OOM kill at the limit fires the oom eventfd."""
    before = oom_kills(memcg)
    events, recorder = make_events(memcg)
    events.arm([64 * MIB, 128 * MIB, 192 * MIB])
    events.attach(asyncio.get_running_loop())
    child = await spawn_child(LEAKER, str(memcg.directory))
    assert child.process.stdout is not None
    async with asyncio.timeout(10):
        output = (await child.process.stdout.read()).decode().split()
        returncode = await child.process.wait()
    exited = time.monotonic()
    assert returncode == -signal.SIGKILL
    oom = await recorder.wait_for("oom")
    last_threshold = await recorder.wait_for(crossed(192))
    first_threshold = await recorder.wait_for(crossed(64))
    assert oom_kills(memcg) > before
    reports = [(float(when), int(mib)) for when, mib in zip(output[::2], output[1::2], strict=True)]
    (first_when, first_mib), (last_when, last_mib) = reports[0], reports[-1]
    rate = (last_mib - first_mib) / (last_when - first_when)
    print(
        f"\nfast leak at {rate:.0f} MiB/s ({rate * MIB / 1e9:.2f} GB/s): 64 -> 192 MiB events"
        f" {1000 * (last_threshold - first_threshold):.1f} ms apart; after the 192 MiB event the child"
        f" reported {1000 * (last_when - last_threshold):.1f} ms more progress (last at {last_mib} MiB),"
        f" the oom event came {1000 * (oom - last_threshold):.1f} ms after it and the exit was seen"
        f" {1000 * (exited - last_threshold):.1f} ms after it"
    )


async def test_v1_removed_cgroup_is_reported_once(memcg: CgroupLocation, make_events: MakeEvents) -> None:
    """Removing an armed cgroup calls back "cgroup removed" once and records a problem."""
    events, recorder = make_events(memcg)
    events.arm([64 * MIB, 128 * MIB])
    events.attach(asyncio.get_running_loop())
    memcg.directory.rmdir()
    await recorder.wait_for("cgroup removed")
    await asyncio.sleep(0.1)
    assert recorder.reasons == ["cgroup removed"]
    assert any("removed" in problem for problem in events.problems)


@pytest.mark.parametrize("version", [1, 2])
async def test_vanished_cgroup_directory_records_problems_without_raising(
    tmp_path: Path, version: int, make_events: MakeEvents
) -> None:
    """arm() and attach() on a missing cgroup directory record problems and raise nothing; close() twice is fine."""
    events, _ = make_events(CgroupLocation(tmp_path / "gone", version, "/gone"))
    events.arm([64 * MIB])
    events.attach(asyncio.get_running_loop())
    assert events.problems
    assert all("gone" in problem for problem in events.problems)
    assert events.armed == (() if version == 1 else (64 * MIB,))
    events.close()
    events.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_close_releases_every_fd_and_is_idempotent(
    memcg: CgroupLocation, make_events: MakeEvents
) -> None:
    """close() removes the readers and closes every eventfd and control file; a second close() is harmless."""
    before = open_fds()
    events, _ = make_events(memcg)
    events.arm([64 * MIB, 128 * MIB])
    events.attach(asyncio.get_running_loop())
    assert open_fds() > before
    events.close()
    assert open_fds() == before
    events.close()
    assert events.armed == ()


@pytest.fixture
def v2_tree(tmp_path: Path) -> CgroupLocation:
    """A cgroup v2 directory of regular files (memory.events, memory.pressure, memory.current)."""
    directory = tmp_path / "cg"
    directory.mkdir()
    (directory / "memory.current").write_text(f"{10 * MIB}\n")
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    (directory / "memory.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    return CgroupLocation(directory, 2, "/cg")


async def test_v2_memory_events_modification_calls_back(
    v2_tree: CgroupLocation, make_events: MakeEvents
) -> None:
    """A modification of memory.events (inotify IN_MODIFY) calls back; arm() only records v2 thresholds."""
    events, recorder = make_events(v2_tree)
    events.arm([200 * MIB, 100 * MIB])
    events.attach(asyncio.get_running_loop())
    assert events.armed == (100 * MIB, 200 * MIB)
    (v2_tree.directory / "memory.events").write_text("low 0\nhigh 3\nmax 1\noom 1\noom_kill 1\n")
    await recorder.wait_for("memory.events changed")


async def test_v2_psi_trigger_on_a_regular_file_records_a_problem(
    v2_tree: CgroupLocation, make_events: MakeEvents
) -> None:
    """A memory.pressure that cannot take a PSI trigger is a recorded problem, not an exception."""
    events, _ = make_events(v2_tree)
    events.arm([100 * MIB])
    events.attach(asyncio.get_running_loop())
    assert len(events.problems) == 1
    assert "memory.pressure" in events.problems[0]
    events.arm([100 * MIB, 150 * MIB])  # re-arming does not repeat the problem
    assert len(events.problems) == 1


def psi_stall_us() -> int:
    """The host's total "some" memory stall in microseconds (psi.rst)."""
    some = HOST_PSI.read_text().splitlines()[0]
    return int(some.rpartition("total=")[2])


async def test_v2_psi_trigger_on_a_real_psi_file_reports_memory_stall(
    tmp_path: Path,
    v2_tree: CgroupLocation,
    small_memcg: CgroupLocation,
    make_events: MakeEvents,
    spawn_child: SpawnChild,
) -> None:
    """On a real PSI file (the host's, standing in for a v2 memory.pressure) the trigger arms and calls back."""
    if not os.access(HOST_PSI, os.F_OK):
        pytest.skip(f"no {HOST_PSI}: {psi_off_reason()}")
    if not os.access(HOST_PSI, os.R_OK | os.W_OK):
        pytest.skip(f"{HOST_PSI} is not writable: a PSI trigger needs root here")
    pressure = v2_tree.directory / "memory.pressure"
    pressure.unlink()
    pressure.symlink_to(HOST_PSI)
    events, recorder = make_events(v2_tree)
    events.arm([])
    events.attach(asyncio.get_running_loop())
    assert events.problems == []
    # A 128 MiB file, out of the page cache, read in a loop from a 32 MiB cgroup: reclaim and refaults stall.
    data = tmp_path / "data.bin"
    with data.open("wb") as out:
        for _ in range(16):
            out.write(os.urandom(8 * MIB))
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    stall = psi_stall_us()
    started = time.monotonic()
    await spawn_child(THRASHER, str(small_memcg.directory), str(data))
    try:
        await recorder.wait_for("psi trigger", within=6.0)
    except TimeoutError:
        stalled = (psi_stall_us() - stall) / 1e6
        if stalled < 1.2:  # 3 windows of 2 s: below 1.2 s of stall, none need have reached 300 ms
            pytest.skip(f"only {stalled:.2f} s of memory stall in 6 s here: too little to trip the trigger")
        raise
    print(f"\npsi trigger reported {time.monotonic() - started:.2f} s after the thrashing child started")


async def test_v2_change_seen_when_its_trailing_report_is_due_is_reported_once(
    v2_tree: CgroupLocation, make_events: MakeEvents
) -> None:
    """A change read in the same loop turn as the pending trailing report's due time is one report, not two
    (the immediate report cancels the trailing one; CI once saw two reports 7 µs apart)."""
    events, recorder = make_events(v2_tree)
    events.arm([])
    events.attach(asyncio.get_running_loop())
    path = v2_tree.directory / "memory.events"
    path.write_text("low 0\nhigh 1\nmax 0\noom 0\noom_kill 0\n")
    await recorder.wait_for("memory.events changed")
    path.write_text("low 0\nhigh 2\nmax 0\noom 0\noom_kill 0\n")
    await asyncio.sleep(0.02)  # the second change is read: a trailing report is now pending
    # Block the loop past the trailing report's due time and change the file meanwhile: when the loop runs again
    # the inotify reader (I/O callbacks run first in asyncio's _run_once) and the due timer are ready together.
    time.sleep(0.15)  # noqa: ASYNC251 -- blocking the loop is the point
    path.write_text("low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n")
    await asyncio.sleep(0.3)
    reports = [at for at, reason in recorder.events if reason == "memory.events changed"]
    assert len(reports) == 2, reports
    assert reports[1] - reports[0] >= 0.099, reports


def test_adaptive_interval_is_base_without_growth_or_limit() -> None:
    """No limit, no known rate, or no growth: poll at the base interval."""
    assert adaptive_interval(5.0, None, 1e6) == 5.0
    assert adaptive_interval(5.0, 100 * MIB, None) == 5.0
    assert adaptive_interval(5.0, 100 * MIB, 0.0) == 5.0
    assert adaptive_interval(5.0, 100 * MIB, -1e6) == 5.0
    assert adaptive_interval(5.0, 100 * MIB, float("nan")) == 5.0


def test_adaptive_interval_is_a_tenth_of_the_time_left() -> None:
    """Growing toward the limit: a tenth of headroom / fill rate, capped at base."""
    assert adaptive_interval(5.0, 100 * MIB, 100 * MIB / 20) == pytest.approx(2.0)
    assert adaptive_interval(5.0, 100 * MIB, 100 * MIB / 1000) == 5.0
    assert adaptive_interval(30.0, 640 * MIB, 200e6) == pytest.approx(640 * MIB / 200e6 / 10)


def test_adaptive_interval_never_goes_below_the_floor() -> None:
    """A fast leak, or no headroom left, polls at the floor; a floor above base yields base."""
    assert adaptive_interval(5.0, 10 * MIB, 1e9) == 0.05
    assert adaptive_interval(5.0, 10 * MIB, 1e9, floor=0.2) == 0.2
    assert adaptive_interval(5.0, 0, 1e6) == 0.05
    assert adaptive_interval(5.0, -MIB, 1e6) == 0.05
    assert adaptive_interval(5.0, 10 * MIB, float("inf")) == 0.05
    assert adaptive_interval(0.02, 10 * MIB, 1e9) == 0.02


def test_adaptive_interval_rejects_a_non_positive_base() -> None:
    """A base interval must be a positive number of seconds."""
    with pytest.raises(ValueError):
        adaptive_interval(0.0, None, None)


async def test_v2_burst_of_memory_events_is_reported_at_most_every_100_ms(
    v2_tree: CgroupLocation, make_events: MakeEvents
) -> None:
    """memory.events changing 50 times in a burst (reclaim over memory.high does that) is reported at once and
    then at most every 100 ms, the last report after the burst's last change: nothing of it is lost."""
    events, recorder = make_events(v2_tree)
    events.arm([])
    events.attach(asyncio.get_running_loop())
    path = v2_tree.directory / "memory.events"
    started = time.monotonic()
    for high in range(1, 51):
        path.write_text(f"low 0\nhigh {high}\nmax 0\noom 0\noom_kill 0\n")
        await asyncio.sleep(0.001)
    ended = time.monotonic()
    await asyncio.sleep(0.25)
    reports = [at for at, reason in recorder.events if reason == "memory.events changed"]
    assert 2 <= len(reports) <= 2 + math.ceil((ended - started) / 0.1), (reports, ended - started)
    assert reports[-1] >= ended  # the last change of the burst is reported, after it happened
    assert all(b - a >= 0.099 for a, b in itertools.pairwise(reports)), reports
