"""The usage watcher and its gauges: real cgroup usage files and real processes' statm, headroom pacing,
crossings with hysteresis, and re-opening a cgroup that was removed and created again."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.sampling.usage_gauge import CgroupUsage, CgroupUsageGauge, ProcessRss, ProcessRssGauge
from memmon.sampling.usage_watch import UsageWatcher, WatchPlan, hysteresis
from tests.cgroups import v1_memory_cgroup

MIB = 2**20

# Joins the cgroup given (if any), then holds as many MiB as each line of stdin says, printing "ok" after each.
HOLDER = r"""
import sys
import threading
if sys.argv[1]:
    with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
        procs.write("0")
held = []
print("ok", flush=True)
for line in sys.stdin:
    held = [b"\x01" * (int(line) << 20)]
    print("ok", flush=True)
"""


class Holder:
    """A child process that holds a given amount of touched memory on request."""

    def __init__(self, cgroup: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(cgroup or "")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._ack()

    def hold(self, mib: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{mib}\n")
        self.proc.stdin.flush()
        self._ack()

    def _ack(self) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A fresh 512 MiB v1 memory cgroup."""
    with v1_memory_cgroup(512 * MIB) as directory:
        yield directory


@pytest.fixture
def holder(cgroup: Path) -> Iterator[Holder]:
    """A memory-holding child inside ``cgroup``."""
    child = Holder(cgroup)
    yield child
    child.stop()


def crossings(watcher_events: queue.Queue[str], timeout: float = 5.0) -> str:
    """The next reason the watcher reported (fails after ``timeout``)."""
    return watcher_events.get(timeout=timeout)


def test_cgroup_gauge_reads_what_the_kernel_file_says(cgroup: Path, holder: Holder) -> None:
    """The kept-open usage fd follows the cgroup's usage file as memory is taken and given back, and
    inactive_file comes from memory.stat."""
    gauge = CgroupUsageGauge(CgroupUsage(cgroup, 1))
    try:
        holder.hold(64)
        assert abs(gauge.read() - int((cgroup / "memory.usage_in_bytes").read_text())) < 4 * MIB
        assert gauge.read() >= 64 * MIB
        holder.hold(0)
        assert gauge.read() < 32 * MIB
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
        assert gauge.inactive_file_bytes() == int(stat["total_inactive_file"])
    finally:
        gauge.close()


def test_process_gauge_sums_resident_size_and_reports_exits() -> None:
    """The statm gauge sums the resident size of several real processes and names a pid that exited once."""
    first, second = Holder(), Holder()
    try:
        first.hold(40)
        second.hold(20)
        gauge = ProcessRssGauge(ProcessRss((first.proc.pid, second.proc.pid)))
        assert gauge.read() >= 60 * MIB
        second.stop()
        with pytest.raises(ProcessLookupError, match=str(second.proc.pid)):
            gauge.read()
        assert 40 * MIB <= gauge.read() < 60 * MIB
        gauge.close()
    finally:
        first.stop()
        second.stop()


def test_pace_follows_headroom_to_the_emergency_line() -> None:
    """The pause is the worst-case leak's time to the emergency line, floored and capped; past the line, its
    time to the limit; without a line, or where the kernel notifies the thresholds itself, the longest pause."""
    watcher = UsageWatcher(lambda _: None, worst_case_bytes_per_second=1000 * MIB, max_interval=1.0)
    plan = WatchPlan(CgroupUsage(Path("/x"), 2), (700 * MIB, 800 * MIB), 800 * MIB, 1000 * MIB, 0)
    assert watcher._interval(plan, 0) == pytest.approx(0.8)
    assert watcher._interval(plan, 790 * MIB) == pytest.approx(0.01)
    assert watcher._interval(plan, 800 * MIB - 1) == watcher.min_interval
    assert watcher._interval(plan, 900 * MIB) == pytest.approx(0.1)
    far = WatchPlan(CgroupUsage(Path("/x"), 2), (), 5000 * MIB, None, 0)
    assert watcher._interval(far, 0) == 1.0
    assert watcher._interval(WatchPlan(CgroupUsage(Path("/x"), 2), (), None, None, 0), 0) == 1.0
    notified = WatchPlan(
        CgroupUsage(Path("/x"), 1), (700 * MIB,), 800 * MIB, 1000 * MIB, 0, kernel_notifies=True
    )
    assert watcher._interval(notified, 790 * MIB) == 1.0  # v1 eventfds armed: a fallback read only


def test_crossings_fire_once_and_falls_need_hysteresis() -> None:
    """Rising past a threshold reports it once; hovering just under it reports nothing; falling clearly below
    reports the fall."""
    reasons: list[str] = []
    watcher = UsageWatcher(reasons.append, worst_case_bytes_per_second=1000 * MIB)
    t = 500 * MIB
    plan = WatchPlan(CgroupUsage(Path("/x"), 2), (t,), t, 1000 * MIB, 0)
    band = watcher._judge(plan, 0, t - 1)
    band = watcher._judge(plan, band, t)
    band = watcher._judge(plan, band, t + MIB)
    band = watcher._judge(plan, band, t - hysteresis(t) + 1)
    band = watcher._judge(plan, band, t + 1)
    assert reasons == [f"usage crossed {t}"]
    band = watcher._judge(plan, band, t - hysteresis(t) - 1)
    assert reasons[-1] == f"usage fell below {t}" and band == 0


def test_a_check_just_under_a_crossed_threshold_keeps_the_crossing() -> None:
    """After a crossing, a check that saw usage within hysteresis under that threshold (the fuzz of a hovering
    usage) keeps the crossing latched; one that saw it clearly below starts from there."""
    watcher = UsageWatcher(lambda _: None, worst_case_bytes_per_second=1000 * MIB)
    t = 500 * MIB

    def plan(seen: int) -> WatchPlan:
        return WatchPlan(CgroupUsage(Path("/x"), 2), (t,), t, 1000 * MIB, seen)

    assert watcher._rebase(plan(t - 1), 1) == 1
    assert watcher._rebase(plan(t - hysteresis(t) - 1), 1) == 0
    assert watcher._rebase(plan(t + 1), 0) == 1


def test_watcher_reports_a_rise_between_checks(cgroup: Path, holder: Holder) -> None:
    """With a plan from a check that saw an idle cgroup, taking memory past a threshold makes the watcher report
    the crossing on its own thread, without any check in between."""
    events: queue.Queue[str] = queue.Queue()
    watcher = UsageWatcher(events.put, worst_case_bytes_per_second=2000 * MIB)
    watcher.follow(WatchPlan(CgroupUsage(cgroup, 1), (100 * MIB, 200 * MIB), 200 * MIB, 512 * MIB, 0))
    watcher.start()
    try:
        holder.hold(128)
        assert crossings(events) == f"usage crossed {100 * MIB}"
        holder.hold(256)
        assert crossings(events) == f"usage crossed {200 * MIB}"
        assert watcher.interval <= 0.2  # past the line: paced toward the limit
    finally:
        watcher.stop()


def test_watcher_reopens_a_recreated_cgroup(cgroup: Path) -> None:
    """The cgroup removed: the watcher says the source is lost (a problem); created again: it says it is back,
    clears the problem, and reports a rise in the new cgroup."""
    events: queue.Queue[str] = queue.Queue()
    watcher = UsageWatcher(events.put, worst_case_bytes_per_second=2000 * MIB, retry_interval=0.01)
    watcher.follow(WatchPlan(CgroupUsage(cgroup, 1), (100 * MIB,), 100 * MIB, 512 * MIB, 0))
    watcher.start()
    child: Holder | None = None
    try:
        time.sleep(0.1)
        cgroup.rmdir()
        assert crossings(events) == "usage source lost"
        assert watcher.problem is not None and str(cgroup) in watcher.problem
        cgroup.mkdir()
        (cgroup / "memory.limit_in_bytes").write_text(str(512 * MIB))
        assert crossings(events) == "usage source back"
        assert watcher.problem is None
        child = Holder(cgroup)
        child.hold(128)
        assert crossings(events) == f"usage crossed {100 * MIB}"
    finally:
        watcher.stop()
        if child is not None:
            child.stop()


def test_watcher_thread_ends_on_stop_and_closes_its_fds(cgroup: Path) -> None:
    """stop() ends the thread within its timeout and no fd of the cgroup stays open."""
    watcher = UsageWatcher(lambda _: None, worst_case_bytes_per_second=MIB, max_interval=5)
    watcher.follow(WatchPlan(CgroupUsage(cgroup, 1), (400 * MIB,), 400 * MIB, 512 * MIB, 0))
    watcher.start()
    deadline = time.monotonic() + 5
    while not watcher.reads:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    watcher.stop()
    assert not [t for t in threading.enumerate() if t.name == "memmon-usage-watch"]
    open_files = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd of the listing itself
            open_files.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert not [f for f in open_files if f.startswith(str(cgroup))]
