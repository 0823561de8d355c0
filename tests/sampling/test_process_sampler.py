"""ProcessSampler: memmon itself, fixed pids, and --match, on real processes."""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable

import psutil
import pytest

from memmon.sampling import ProcessSampler, SourceUnavailable

from .support import MIB, Spawn, wait_zombie


def test_own_process_agrees_with_psutil() -> None:
    """With no pids and no match the sampler watches its own process, as psutil sees it."""
    sampler = ProcessSampler()
    sample = sampler.sample()
    info = psutil.Process().memory_info()
    assert sampler.label == "self"
    assert sampler.is_own_process
    assert sampler.pids == (os.getpid(),)
    assert [p.pid for p in sample.processes] == [os.getpid()]
    assert abs(sample.rss_bytes - info.rss) < 16 * MIB
    assert abs(sample.vms_bytes - info.vms) < 64 * MIB
    assert sampler.problem is None


def test_own_process_carries_gc_figures() -> None:
    """The own process's sample has gc collections (summed over generations) and a timed object count."""
    sampler = ProcessSampler(clock=lambda: 1234.5)
    before = sum(generation["collections"] for generation in gc.get_stats())
    sample = sampler.sample()
    assert sample.gc_collections is not None and sample.gc_collections >= before
    assert sample.gc_objects is not None and sample.gc_objects > 1000
    assert sample.gc_objects_at == 1234.5


def _count_get_objects(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real: Callable[..., list[object]] = gc.get_objects

    def counting(*args: object, **kwargs: object) -> list[object]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gc, "get_objects", counting)
    return calls


def test_gc_objects_counted_every_n_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """gc.get_objects() (O(heap)) runs at the first check and then every gc_objects_every checks only."""
    calls = _count_get_objects(monkeypatch)
    now = [100.0]
    sampler = ProcessSampler(gc_objects_every=3, clock=lambda: now[0])
    stamps = []
    for _ in range(7):
        stamps.append(sampler.sample().gc_objects_at)
        now[0] += 1.0
    assert len(calls) == 3  # checks 1, 4 and 7
    assert stamps == [100.0, 100.0, 100.0, 103.0, 103.0, 103.0, 106.0]


def test_gc_objects_counted_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """count_gc_objects() counts now and the next samples return that cached figure with its time."""
    calls = _count_get_objects(monkeypatch)
    now = [10.0]
    sampler = ProcessSampler(gc_objects_every=5, clock=lambda: now[0])
    sampler.sample()
    now[0] = 20.0
    counted = sampler.count_gc_objects()
    now[0] = 30.0
    sample = sampler.sample()
    assert len(calls) == 2
    assert sample.gc_objects == counted
    assert sample.gc_objects_at == 20.0


def test_gc_fields_absent_for_other_processes(spawn: Spawn, marker: str) -> None:
    """Watching another process gives no gc figures: they would describe memmon, not the target."""
    child = spawn(marker, mib=1)
    sample = ProcessSampler([child.pid]).sample()
    assert (sample.gc_collections, sample.gc_objects, sample.gc_objects_at) == (None, None, None)


def test_pid_child_rss_then_gone(spawn: Spawn, marker: str) -> None:
    """A --pid child holding 50 MiB shows rss >= 50 MiB; once it exited and was reaped, sample() raises."""
    child = spawn(marker, mib=50)
    sampler = ProcessSampler([child.pid])
    assert sampler.label == f"pid:{child.pid}"
    assert not sampler.is_own_process
    sample = sampler.sample()
    assert sample.rss_bytes >= 50 * MIB
    assert sample.processes[0].name.startswith("python")
    child.kill()
    child.wait()
    with pytest.raises(SourceUnavailable, match=f"pid {child.pid} exited"):
        sampler.sample()
    assert sampler.lost == (child.pid,)
    assert sampler.pids == ()


def test_zombie_counts_as_gone(spawn: Spawn, marker: str) -> None:
    """A pid that exited but is not reaped yet (a zombie) is reported gone, not as 0 bytes."""
    child = spawn(marker, mib=1)
    sampler = ProcessSampler([child.pid])
    sampler.sample()
    child.kill()
    wait_zombie(child.pid)
    with pytest.raises(SourceUnavailable, match="zombie"):
        sampler.sample()


def test_partial_loss_is_a_problem_not_a_failure(spawn: Spawn, marker: str) -> None:
    """With two pids and one gone, sample() reads the other and `problem`/`lost` name the lost pid."""
    first = spawn(marker, mib=1)
    second = spawn(marker, mib=1)
    sampler = ProcessSampler([first.pid, second.pid])
    assert len(sampler.sample().processes) == 2
    first.kill()
    first.wait()
    sample = sampler.sample()
    assert [p.pid for p in sample.processes] == [second.pid]
    assert sampler.lost == (first.pid,)
    assert sampler.problem == f"pid {first.pid} exited"


def test_pid_that_never_existed() -> None:
    """A pid that does not exist raises SourceUnavailable saying so."""
    pid = 2**22 + 12345  # above the default pid_max range used in practice
    with pytest.raises(SourceUnavailable, match=f"pid {pid} does not exist"):
        ProcessSampler([pid]).sample()


def test_match_finds_child_and_picks_up_restart(spawn: Spawn, marker: str) -> None:
    """--match finds the child by argv; after it exits nothing matches; a restarted child is found again."""
    sampler = ProcessSampler(match=re.escape(marker))
    assert sampler.label == f"match:{re.escape(marker)}"
    first = spawn(marker, mib=50)
    sample = sampler.sample()
    assert sampler.pids == (first.pid,)
    assert sample.rss_bytes >= 50 * MIB
    first.kill()
    first.wait()
    with pytest.raises(SourceUnavailable, match="no process matches"):
        sampler.sample()
    assert sampler.problem is not None and "no process matches" in sampler.problem
    second = spawn(marker, mib=50)
    sample = sampler.sample()
    assert sampler.pids == (second.pid,)
    assert sample.rss_bytes >= 50 * MIB
    assert sampler.problem is None


def test_match_replaces_an_exited_process_in_the_same_check(spawn: Spawn, marker: str) -> None:
    """When a matched process exits and a new one already runs, the same check re-resolves and reads it."""
    sampler = ProcessSampler(match=re.escape(marker), match_refresh_checks=1000)
    first = spawn(marker, mib=1)
    sampler.sample()
    second = spawn(marker, mib=1)
    first.kill()
    first.wait()
    sample = sampler.sample()
    assert [p.pid for p in sample.processes] == [second.pid]


def test_match_refresh_finds_new_workers(spawn: Spawn, marker: str) -> None:
    """A new matching process is added at the periodic re-resolve (every match_refresh_checks checks)."""
    sampler = ProcessSampler(match=re.escape(marker), match_refresh_checks=2)
    first = spawn(marker, mib=1)
    sampler.sample()  # check 1 resolves
    second = spawn(marker, mib=1)
    assert sampler.sample().processes[0].pid == first.pid  # check 2: not due yet
    assert sampler.pids == (first.pid,)
    sampler.sample()  # check 3: two checks since the last resolve
    assert set(sampler.pids) == {first.pid, second.pid}


def test_match_never_matches_own_process() -> None:
    """A regex matching everything still leaves out memmon's own pid."""
    sampler = ProcessSampler(match=".")
    sampler.sample()
    assert os.getpid() not in sampler.pids
    assert sampler.pids


def test_bad_arguments_are_value_errors() -> None:
    """pids together with a match, or an invalid regex, are rejected at construction."""
    with pytest.raises(ValueError, match="not both"):
        ProcessSampler([1], match="x")
    with pytest.raises(ValueError, match="invalid --match regex"):
        ProcessSampler(match="(")
