"""The memory.high guard's rules, on a directory laid out like a v2 cgroup (the host's cgroup v2 mount has no
memory controller; the real kernel's throttling is tested under User-Mode Linux in tests/v2)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from memmon.actions.memory_high import MemoryHighGuard
from memmon.assembly import build_memory_high_guard, build_thresholds
from memmon.config import load_settings
from memmon.evaluation.rules import ThresholdRule
from memmon.kernelwatch import KernelWatch
from memmon.model import Evaluation, Level
from memmon.sampling.cgroup_location import CgroupLocation
from tests.samples import process_sample

MIB = 2**20
LIMIT = 256 * MIB
EMERGENCY = 200 * MIB  # + 2 % of 256 MiB = 205.12 MiB, page-aligned
GUARD = (EMERGENCY + LIMIT * 2 // 100) // os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def cgroup(tmp_path: Path) -> Path:
    """A directory with a ``memory.high`` of ``max``, as a fresh v2 cgroup has."""
    directory = tmp_path / "app.service"
    directory.mkdir()
    (directory / "memory.high").write_text("max\n")
    return directory


def high(directory: Path) -> str:
    return (directory / "memory.high").read_text().strip()


def test_guard_applied_moved_and_released(cgroup: Path) -> None:
    """From max the guard is set to emergency + margin (page-aligned), follows a changed threshold, and release
    writes max back."""
    guard = MemoryHighGuard(2.0)
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    assert high(cgroup) == str(GUARD) and guard.applied_bytes == GUARD
    guard.follow(cgroup, 2, EMERGENCY - 10 * MIB, LIMIT)
    assert high(cgroup) == str(GUARD - 10 * MIB)
    guard.release()
    assert high(cgroup) == "max" and guard.applied_bytes is None


def test_never_touches_a_value_someone_else_set(cgroup: Path) -> None:
    """A memory.high set by someone else (lower or higher) is left as it is, and not restored over later."""
    for theirs in (str(100 * MIB), str(250 * MIB)):
        (cgroup / "memory.high").write_text(theirs)
        guard = MemoryHighGuard(2.0)
        guard.follow(cgroup, 2, EMERGENCY, LIMIT)
        guard.release()
        assert high(cgroup) == theirs and guard.problem is None


def test_someone_changing_the_guard_wins(cgroup: Path) -> None:
    """When the value memmon wrote is changed by someone else, memmon stops managing it: no rewrite, no restore."""
    guard = MemoryHighGuard(2.0)
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    (cgroup / "memory.high").write_text(str(240 * MIB))
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    guard.release()
    assert high(cgroup) == str(240 * MIB)


def test_guard_reset_to_max_is_set_again(cgroup: Path) -> None:
    """memory.high written back to max by someone (systemd re-applying MemoryHigh=infinity): the next check sets
    the guard again, and release still puts max back."""
    guard = MemoryHighGuard(2.0)
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    (cgroup / "memory.high").write_text("max")
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    assert high(cgroup) == str(GUARD)
    guard.release()
    assert high(cgroup) == "max"


def test_recreated_cgroup_gets_the_guard_again(cgroup: Path) -> None:
    """The cgroup removed and created again (a new inode, memory.high max): the guard is applied to the new one."""
    guard = MemoryHighGuard(2.0)
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    shutil.rmtree(cgroup)
    cgroup.mkdir()
    (cgroup / "memory.high").write_text("max")
    guard.follow(cgroup, 2, EMERGENCY, LIMIT)
    assert high(cgroup) == str(GUARD)


def test_refused_write_is_a_problem_and_monitoring_goes_on() -> None:
    """An unprivileged memmon that may read but not write memory.high (as with a read-only cgroupfs): the guard
    reports a problem naming the file, follow() does not raise, and the value stays max."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the guard as another user")
    directory = Path(tempfile.mkdtemp(prefix="memmon-test-guard-"))
    try:
        os.chmod(directory, 0o755)
        (directory / "memory.high").write_text("max\n")
        os.chmod(directory / "memory.high", 0o644)
        script = (
            "from pathlib import Path; from memmon.actions.memory_high import MemoryHighGuard\n"
            "guard = MemoryHighGuard(2.0)\n"
            f"guard.follow(Path({str(directory)!r}), 2, {EMERGENCY}, {LIMIT})\n"
            "print(guard.problem)\n"
        )
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert result.stdout.strip() == f"cannot write {directory}/memory.high: Permission denied"
        assert high(directory) == "max"
    finally:
        shutil.rmtree(directory)


def test_no_guard_on_v1_or_without_room(cgroup: Path, caplog: pytest.LogCaptureFixture) -> None:
    """cgroup v1 has no memory.high: nothing is written (a problem only when the guard is configured on); an
    emergency so close to the limit that the margin reaches it sets nothing."""
    auto, explicit = MemoryHighGuard(2.0), MemoryHighGuard(2.0, explicit=True)
    auto.follow(cgroup, 1, EMERGENCY, LIMIT)
    explicit.follow(cgroup, 1, EMERGENCY, LIMIT)
    assert high(cgroup) == "max" and auto.problem is None
    assert explicit.problem is not None and "v1" in explicit.problem
    with caplog.at_level(logging.INFO, "memmon.actions"):
        auto.follow(cgroup, 2, LIMIT - MIB, LIMIT)
    assert high(cgroup) == "max" and "reaches the limit" in caplog.text


@pytest.mark.parametrize(
    ("guard", "strategy", "dry_run", "built"),
    [("auto", "signal", False, True), ("auto", "none", False, False), ("auto", "signal", True, False),
     ("on", "none", False, True), ("off", "signal", False, False)],
)  # fmt: skip
def test_auto_means_with_a_restart_that_really_runs(
    guard: str, strategy: str, dry_run: bool, built: bool
) -> None:
    """``auto`` builds the guard only with a graceful restart strategy and not in a dry run; on/off force it."""
    settings = load_settings(
        None,
        overrides={
            "auto_response": {
                "dry_run": dry_run,
                "memory_high_guard": {"enabled": guard},
                "emergency_actions": {"graceful_restart": {"strategy": strategy}},
            }
        },
    )
    assert (build_memory_high_guard(settings) is not None) is built


def test_a_check_finishing_after_stop_does_not_set_the_guard_again(cgroup: Path) -> None:
    """KernelWatch.stop() puts max back; a check that was still running and finishes afterwards changes nothing
    (it used to set the guard again, left behind when memmon exited)."""
    settings = load_settings(
        None,
        overrides={
            "auto_response": {"memory_high_guard": {"enabled": "on"}},
            "monitoring": {"kernel_events": False, "usage_watch": {"enabled": False}},
        },
    )
    sample = process_sample(100, cgroup_limit_mb=256)
    evaluation = Evaluation(sample, Level.OK, Level.OK, (), (), ())
    location = CgroupLocation(cgroup, 2, "/app")
    watch = KernelWatch(settings, ThresholdRule(build_thresholds(settings)), lambda _reason: None)
    watch.follow(evaluation, location, ())
    assert high(cgroup) != "max"
    watch.stop()
    assert high(cgroup) == "max"
    watch.follow(evaluation, location, ())
    assert high(cgroup) == "max"
