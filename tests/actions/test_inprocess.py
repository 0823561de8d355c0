"""In-process actions: registered caches, the throttle, non-essential workers and gc cycles."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from memmon.actions.inprocess import (
    CacheRegistry,
    NonessentialWorkers,
    Throttle,
    run_gc_cycles,
    self_rss_bytes,
)
from memmon.model import ActionResult, Level
from tests.waiting import wait_until

JOIN = 10.0
"""Generous bound for joins and waits: reached only when something is broken."""


def assert_timed(result: ActionResult, before: float) -> None:
    assert before <= result.started_at <= time.time()
    assert result.duration_seconds >= 0


# --- caches -------------------------------------------------------------------------------------------------


def test_lru_cache_and_functools_cache_are_cleared_and_measured() -> None:
    """lru_cache / functools.cache wrappers are cleared by cache_clear() and measured by cache_info().currsize."""

    @functools.lru_cache(maxsize=128)
    def square(x: int) -> int:
        return x * x

    @functools.cache
    def cube(x: int) -> int:
        return x**3

    for x in range(3):
        square(x)
    cube(2)
    registry = CacheRegistry()
    registry.register("square", square)
    registry.register("cube", cube)
    before = time.time()

    result = registry.clear()

    assert (result.action, result.success, result.error) == ("clear_caches", True, None)
    assert_timed(result, before)
    assert result.detail["cleared"] == ["square", "cube"]
    assert result.detail["failed"] == {}
    assert result.detail["entries_before"] == {"square": 3, "cube": 1}
    assert square.cache_info().currsize == 0
    assert cube.cache_info().currsize == 0


def test_mapping_and_clear_function_are_cleared() -> None:
    """A dict is cleared by .clear() and measured by len(); a clear function is called and not measured."""
    sessions = {"a": 1, "b": 2}
    calls: list[str] = []
    registry = CacheRegistry()
    registry.register("sessions", sessions)
    registry.register("templates", lambda: calls.append("cleared"))

    result = registry.clear()

    assert result.success
    assert result.detail["cleared"] == ["sessions", "templates"]
    assert result.detail["entries_before"] == {"sessions": 2}
    assert sessions == {}
    assert calls == ["cleared"]


def test_a_failing_clear_does_not_stop_the_others() -> None:
    """A clear that raises is reported as 'ExcType: msg', the caches around it are still cleared, and it fails."""
    first, last = {"x": 1}, {"y": 2}

    def broken() -> None:
        raise OSError("disk gone")

    registry = CacheRegistry()
    registry.register("first", first)
    registry.register("broken", broken)
    registry.register("last", last)

    result = registry.clear()

    assert not result.success
    assert result.detail["cleared"] == ["first", "last"]
    assert result.detail["failed"] == {"broken": "OSError: disk gone"}
    assert result.error is not None and "broken" in result.error
    assert first == {} and last == {}


def test_clear_named_caches_only() -> None:
    """clear(names) clears just those; an unknown name is reported failed."""
    kept, dropped = {"k": 1}, {"d": 1}
    registry = CacheRegistry()
    registry.register("kept", kept)
    registry.register("dropped", dropped)

    result = registry.clear(["dropped", "missing"])

    assert result.detail["cleared"] == ["dropped"]
    assert list(result.detail["failed"]) == ["missing"]  # type: ignore[call-overload]
    assert not result.success
    assert kept == {"k": 1} and dropped == {}


def test_an_object_that_cannot_be_cleared_is_refused() -> None:
    """Registering something with no clear function names what is accepted in the TypeError."""
    registry = CacheRegistry()
    with pytest.raises(TypeError, match=r"cache_clear.*clear\(\)"):
        registry.register("answer", 42)
    with pytest.raises(TypeError, match="instance"):
        registry.register("type", dict)
    assert registry.names() == ()


def test_duplicate_names_are_refused_until_unregistered() -> None:
    """A second cache under a taken name raises ValueError; after unregister the name is free again."""
    registry = CacheRegistry()
    registry.register("c", {})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("c", {})
    registry.unregister("c")
    registry.unregister("c")  # unknown names are ignored
    registry.register("c", {})
    assert registry.names() == ("c",)


# --- throttle -----------------------------------------------------------------------------------------------


class Peak:
    """Counts who is inside, remembering the most at once (under a lock: threads and tasks both use it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.entries = 0

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.entries += 1
            self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


def start_threads(throttle: Throttle, peak: Peak, count: int, rounds: int) -> list[threading.Thread]:
    def work() -> None:
        for _ in range(rounds):
            with throttle:
                peak.enter()
                time.sleep(0.001)
                peak.leave()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


async def task_work(throttle: Throttle, peak: Peak, rounds: int) -> None:
    for _ in range(rounds):
        async with throttle:
            peak.enter()
            await asyncio.sleep(0.001)
            peak.leave()


async def test_tasks_only_never_exceed_the_limit() -> None:
    """Many tasks through ``async with`` never have more than ``capacity`` inside at once."""
    throttle = Throttle(3)
    peak = Peak()

    await asyncio.gather(*(task_work(throttle, peak, 10) for _ in range(10)))

    assert peak.entries == 100
    assert 1 <= peak.peak <= 3
    assert (throttle.in_use, throttle.waiting) == (0, 0)


def test_threads_only_never_exceed_the_limit() -> None:
    """Many threads through ``with`` never have more than ``capacity`` inside at once."""
    throttle = Throttle(2)
    peak = Peak()

    threads = start_threads(throttle, peak, count=6, rounds=20)
    for thread in threads:
        thread.join(JOIN)

    assert not any(thread.is_alive() for thread in threads)
    assert peak.entries == 120
    assert 1 <= peak.peak <= 2
    assert (throttle.in_use, throttle.waiting) == (0, 0)


async def test_threads_and_tasks_share_one_limit() -> None:
    """8 threads and 8 tasks on one throttle of capacity 4: never more than 4 inside, and all get through."""
    throttle = Throttle(4)
    peak = Peak()

    threads = start_threads(throttle, peak, count=8, rounds=15)
    await asyncio.gather(*(task_work(throttle, peak, 15) for _ in range(8)))
    for thread in threads:
        await asyncio.to_thread(thread.join, JOIN)

    assert not any(thread.is_alive() for thread in threads)
    assert peak.entries == 16 * 15
    assert 1 <= peak.peak <= 4
    assert (throttle.in_use, throttle.waiting) == (0, 0)


async def test_a_thread_release_wakes_a_waiting_task() -> None:
    """A slot released by a thread is handed to a task waiting on the event loop."""
    throttle = Throttle(1)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with throttle:
            held.set()
            release.wait(JOIN)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert await asyncio.to_thread(held.wait, JOIN)
    waiter = asyncio.create_task(throttle.acquire())
    await wait_until(lambda: throttle.waiting == 1)

    release.set()

    assert await asyncio.wait_for(waiter, JOIN) is True
    await asyncio.to_thread(thread.join, JOIN)
    assert throttle.in_use == 1
    throttle.release()


async def test_shrinking_admits_nobody_until_below_the_new_limit_and_recovery_wakes_waiters() -> None:
    """At critical with 4 inside, no one enters until in_use < the new limit; back at ok the waiters go in."""
    throttle = Throttle(4, critical_factor=0.5)
    for _ in range(4):
        assert await throttle.acquire()

    shrunk = throttle.set_level(Level.CRITICAL)

    assert shrunk.detail == {"limit": 2, "previous_limit": 4, "in_use": 4}
    first = asyncio.create_task(throttle.acquire())
    await wait_until(lambda: throttle.waiting == 1)
    throttle.release()  # 3 inside
    throttle.release()  # 2 inside: still not below the limit of 2
    assert (throttle.in_use, throttle.waiting) == (2, 1)
    throttle.release()  # 1 inside: the waiter is handed the slot
    assert (throttle.in_use, throttle.waiting) == (2, 0)
    assert await asyncio.wait_for(first, JOIN) is True

    later = [asyncio.create_task(throttle.acquire()) for _ in range(3)]
    await wait_until(lambda: throttle.waiting == 3)
    restored = throttle.set_level(Level.OK)

    assert restored.detail == {"limit": 4, "previous_limit": 2, "in_use": 4}
    assert throttle.waiting == 1
    await wait_until(lambda: sum(task.done() for task in later) == 2)
    throttle.release()
    assert await asyncio.wait_for(asyncio.gather(*later), JOIN) == [True, True, True]
    assert (throttle.in_use, throttle.waiting) == (4, 0)


async def test_acquire_timeout_returns_false_and_leaves_the_line() -> None:
    """A full throttle makes acquire(timeout) return False, from a task and from a thread, without queueing."""
    throttle = Throttle(1)
    assert await throttle.acquire()

    assert await throttle.acquire(timeout=0.05) is False
    assert await throttle.acquire(timeout=0) is False
    assert await asyncio.to_thread(throttle.acquire_blocking, 0.05) is False
    assert (throttle.in_use, throttle.waiting) == (1, 0)

    throttle.release()
    assert throttle.acquire_blocking(timeout=0) is True
    throttle.release()
    assert throttle.in_use == 0


async def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    """Cancelling a task that waits for a slot removes it from the line; the slot goes to the next one."""
    throttle = Throttle(1)
    assert await throttle.acquire()
    cancelled = asyncio.create_task(throttle.acquire())
    second = asyncio.create_task(throttle.acquire())
    await wait_until(lambda: throttle.waiting == 2)

    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    throttle.release()

    assert await asyncio.wait_for(second, JOIN) is True
    assert (throttle.in_use, throttle.waiting) == (1, 0)


async def test_blocking_acquire_on_the_event_loop_is_refused() -> None:
    """``with throttle:`` inside a coroutine would freeze the loop when full, so it raises instead."""
    throttle = Throttle(1)
    assert await throttle.acquire()
    with pytest.raises(RuntimeError, match="async with"), throttle:
        pass
    assert (throttle.in_use, throttle.waiting) == (1, 0)


def test_set_level_results() -> None:
    """Limits: floor(capacity * factor) at least 1 at critical/emergency, full capacity at ok and warning."""
    throttle = Throttle()
    before = time.time()

    results = {level: throttle.set_level(level) for level in (Level.CRITICAL, Level.EMERGENCY, Level.WARNING)}

    assert {level: r.detail["limit"] for level, r in results.items()} == {
        Level.CRITICAL: 32,
        Level.EMERGENCY: 6,
        Level.WARNING: 64,
    }
    assert results[Level.WARNING].detail["previous_limit"] == 6
    for result in results.values():
        assert (result.action, result.success, result.error) == ("throttle", True, None)
        assert_timed(result, before)
    tiny = Throttle(3, emergency_factor=0.1)
    assert tiny.set_level(Level.EMERGENCY).detail == {"limit": 1, "previous_limit": 3, "in_use": 0}
    assert tiny.set_level(Level.OK).detail["limit"] == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": 0}, {"critical_factor": 0}, {"emergency_factor": 1.5}, {"critical_factor": float("nan")}],
)
def test_invalid_throttle_settings_are_refused(kwargs: dict[str, Any]) -> None:
    """Capacity below 1 and factors outside (0, 1] raise ValueError."""
    with pytest.raises(ValueError):
        Throttle(**kwargs)


def test_release_without_acquire_is_an_error() -> None:
    """Releasing more often than acquiring raises instead of raising the capacity."""
    with pytest.raises(RuntimeError):
        Throttle(2).release()


# --- non-essential workers ----------------------------------------------------------------------------------


@pytest.fixture
def unblock() -> Iterator[threading.Event]:
    """Set at teardown so that a stop function deliberately left hanging in its helper thread returns."""
    event = threading.Event()
    yield event
    event.set()


async def test_sync_and_async_stop_functions_are_called_and_leave_the_registry() -> None:
    """Both kinds of stop function are called once; stopped workers are removed and not stopped again."""
    calls: list[str] = []

    async def stop_async() -> None:
        await asyncio.sleep(0)
        calls.append("async")

    workers = NonessentialWorkers()
    workers.register("sync", lambda: calls.append("sync"))
    workers.register("async", stop_async)
    before = time.time()

    result = await workers.stop_all(timeout=JOIN)

    assert (result.action, result.success, result.error) == ("stop_nonessential", True, None)
    assert_timed(result, before)
    assert result.detail == {"stopped": ["sync", "async"], "failed": {}}
    assert sorted(calls) == ["async", "sync"]
    assert workers.names() == ()
    again = await workers.stop_all(timeout=JOIN)
    assert again.detail == {"stopped": [], "failed": {}}
    assert sorted(calls) == ["async", "sync"]


async def test_a_raising_stop_is_reported_and_kept() -> None:
    """A stop that raises is reported as 'ExcType: msg', stays registered, and the others are stopped."""

    def broken() -> None:
        raise RuntimeError("boom")

    async def broken_async() -> None:
        raise ValueError("bad state")

    workers = NonessentialWorkers()
    workers.register("broken", broken)
    workers.register("broken_async", broken_async)
    workers.register("fine", lambda: None)

    result = await workers.stop_all(timeout=JOIN)

    assert not result.success
    assert result.detail["stopped"] == ["fine"]
    assert result.detail["failed"] == {
        "broken": "RuntimeError: boom",
        "broken_async": "ValueError: bad state",
    }
    assert result.error is not None and "broken" in result.error
    assert workers.names() == ("broken", "broken_async")


async def test_a_hanging_stop_times_out_while_the_others_stop(unblock: threading.Event) -> None:
    """Sync and async stops that hang past the timeout are reported failed; the others are still stopped."""
    never = asyncio.Event()
    stopped = threading.Event()

    async def hang_async() -> None:
        await never.wait()

    workers = NonessentialWorkers()
    workers.register("hang_sync", lambda: unblock.wait(JOIN))
    workers.register("hang_async", hang_async)
    workers.register("quick", stopped.set)

    result = await workers.stop_all(timeout=0.2)

    assert not result.success
    assert result.detail["stopped"] == ["quick"]
    failed = result.detail["failed"]
    assert isinstance(failed, dict) and sorted(failed) == ["hang_async", "hang_sync"]
    assert all(text.startswith("TimeoutError") for text in failed.values())
    assert stopped.is_set()
    assert workers.names() == ("hang_sync", "hang_async")

    again = await workers.stop_all(
        timeout=0.2
    )  # the sync stop still has not returned: it is not called twice
    assert again.detail["failed"]["hang_sync"].startswith("RuntimeError")  # type: ignore[index]


async def test_a_real_worker_thread_exits_when_stopped() -> None:
    """A worker whose loop checks an Event that its stop function sets actually returns (joined)."""
    stop = threading.Event()
    rounds = 0

    def worker() -> None:
        nonlocal rounds
        while not stop.is_set():
            rounds += 1
            stop.wait(0.01)

    thread = threading.Thread(target=worker, name="nonessential", daemon=True)
    thread.start()
    workers = NonessentialWorkers()
    workers.register("reindexer", stop.set)

    result = await workers.stop_all()
    await asyncio.to_thread(thread.join, JOIN)

    assert result.detail["stopped"] == ["reindexer"]
    assert not thread.is_alive()
    assert rounds >= 1


def test_duplicate_or_uncallable_workers_are_refused() -> None:
    """A taken name raises ValueError and a stop that is not callable raises TypeError."""
    workers = NonessentialWorkers()
    workers.register("w", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        workers.register("w", lambda: None)
    with pytest.raises(TypeError):
        workers.register("x", "stop")  # type: ignore[arg-type]
    workers.unregister("w")
    workers.unregister("w")
    assert workers.names() == ()


# --- gc cycles ----------------------------------------------------------------------------------------------


class Node:
    def __init__(self) -> None:
        self.me = self


def test_gc_cycles_collect_real_cyclic_garbage_and_use_the_measure() -> None:
    """Cyclic garbage made here is collected (collected > 0); RSS is read before and after."""
    readings = iter([50_000_000, 40_000_000])
    calls = 0

    def measure() -> int:
        nonlocal calls
        calls += 1
        return next(readings)

    enabled = gc.isenabled()
    gc.disable()  # keep the automatic collector from finding the garbage first
    try:
        for _ in range(1000):
            Node()
        before = time.time()
        result = run_gc_cycles(3, measure=measure)
    finally:
        if enabled:
            gc.enable()

    assert (result.action, result.success, result.error) == ("gc_cycles", True, None)
    assert_timed(result, before)
    assert result.detail["collected"] >= 1000  # type: ignore[operator]
    assert 1 <= result.detail["cycles_run"] <= 3  # type: ignore[operator]
    assert calls == 2
    assert (result.detail["rss_before"], result.detail["rss_after"]) == (50_000_000, 40_000_000)
    assert result.detail["freed_bytes"] == 10_000_000


def test_gc_cycles_stop_when_a_cycle_collects_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cycles stop early at the first one that collects nothing; growth in RSS is reported as 0 freed."""
    found = iter([5, 3, 0, 7])
    monkeypatch.setattr(gc, "collect", lambda generation=2: next(found))
    readings = iter([100, 150])

    result = run_gc_cycles(4, measure=lambda: next(readings))

    assert result.detail == {
        "cycles_run": 3,
        "collected": 8,
        "rss_before": 100,
        "rss_after": 150,
        "freed_bytes": 0,
    }


def test_gc_cycles_without_a_measure_and_with_the_statm_reader() -> None:
    """Without a measure RSS is None and freed_bytes absent; self_rss_bytes reads a positive RSS here."""
    plain = run_gc_cycles(1)
    assert (plain.detail["rss_before"], plain.detail["rss_after"]) == (None, None)
    assert "freed_bytes" not in plain.detail

    rss = self_rss_bytes()
    assert rss is not None and rss > 0
    measured = run_gc_cycles(1, measure=self_rss_bytes)
    assert isinstance(measured.detail["rss_before"], int) and isinstance(measured.detail["rss_after"], int)
    assert "freed_bytes" in measured.detail
    with pytest.raises(ValueError):
        run_gc_cycles(0)
