"""The fixed-rate check loop: no drift, no stacking, errors contained."""

from __future__ import annotations

import asyncio
import time

from memmon.kits.schedule import FixedRateLoop


async def test_ticks_keep_their_cadence_when_each_tick_takes_time() -> None:
    """Ticks start at start + k*interval even though each one takes 80 % of the interval (no drift)."""
    starts: list[float] = []

    async def tick() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.04)

    loop = FixedRateLoop(tick, 0.05)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.6)
    loop.stop()
    await asyncio.wait_for(task, 1)
    offsets = [s - starts[0] for s in starts]
    # Tick 9 is due at 0.40 s; a loop sleeping a full interval after each run would start it near 0.72 s.
    # The bound sits half-way, so scheduler noise on a busy machine does not decide the outcome.
    assert len(starts) >= 9
    assert 0.39 <= offsets[8] < 0.56


async def test_overrunning_tick_is_not_stacked_and_is_reported() -> None:
    """A tick longer than the interval skips the covered ticks, never runs two at once, and calls on_overrun."""
    running = 0
    peak = 0
    overruns: list[int] = []

    async def tick() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.12)
        running -= 1

    loop = FixedRateLoop(
        tick, 0.05, overrun_after=0.1, on_overrun=lambda _d, skipped: overruns.append(skipped)
    )
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.3)
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert peak == 1
    assert overruns and all(skipped >= 2 for skipped in overruns)
    assert loop.skipped_ticks >= 2


async def test_a_failing_tick_does_not_end_the_loop() -> None:
    """An exception in one tick is reported to on_error and the next tick still runs."""
    calls = 0
    errors: list[BaseException] = []

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("transient")

    loop = FixedRateLoop(tick, 0.02, on_error=errors.append)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.1)
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert calls >= 3 and len(errors) == 1 and loop.last_completed is not None


async def test_trigger_runs_a_tick_at_once() -> None:
    """trigger() starts the next tick without waiting for the interval, even when set during a tick."""
    ticks: list[float] = []
    loop: FixedRateLoop

    async def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 1:
            loop.trigger()  # set while the first tick runs: must not be lost

    loop = FixedRateLoop(tick, 30.0)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.1)
    loop.trigger()
    await asyncio.sleep(0.1)
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert len(ticks) == 3  # a 30 s interval would have allowed only the first


async def test_next_interval_shortens_the_wait() -> None:
    """An adaptive hint shorter than the interval makes ticks come sooner."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    loop = FixedRateLoop(tick, 30.0, next_interval=lambda: 0.02)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.3)
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert ticks >= 3


async def test_triggers_within_the_gap_are_coalesced_but_a_higher_rank_is_not_held() -> None:
    """A storm of same-rank triggers waits for trigger_gap (one tick); a higher-ranked trigger ticks at once."""
    ticks = 0
    ticked = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        ticked.set()

    async def next_tick() -> None:
        await asyncio.wait_for(ticked.wait(), 5)
        ticked.clear()

    loop = FixedRateLoop(tick, 3600.0, trigger_gap=3600.0)
    task = asyncio.create_task(loop.run())
    await next_tick()  # the first, scheduled tick
    loop.trigger(100)  # a crossing at 100: nothing served in this burst yet, so at once
    await next_tick()
    for _ in range(50):  # a storm at the same line: held for the gap
        loop.trigger(100)
        await asyncio.sleep(0)
    loop.trigger(0)
    await asyncio.sleep(0.2)
    assert ticks == 2
    loop.trigger(200)  # a higher line: at once, and it serves the held triggers too
    await next_tick()
    await asyncio.sleep(0.2)
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert ticks == 3
    assert loop.triggered_ticks == 2


async def test_held_triggers_run_one_tick_at_the_end_of_the_gap() -> None:
    """Triggers held by the gap are never dropped: they run exactly one tick once the gap has passed."""
    starts: list[float] = []
    ticked = asyncio.Event()

    async def tick() -> None:
        starts.append(time.monotonic())
        ticked.set()

    async def next_tick() -> None:
        await asyncio.wait_for(ticked.wait(), 5)
        ticked.clear()

    loop = FixedRateLoop(tick, 3600.0, trigger_gap=0.3)
    task = asyncio.create_task(loop.run())
    await next_tick()  # scheduled
    loop.trigger()
    await next_tick()  # the first trigger of a burst: at once
    for _ in range(20):
        loop.trigger()
        await asyncio.sleep(0)
    await next_tick()  # the held ones: one tick, at the end of the gap
    await asyncio.sleep(0.5)
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert len(starts) == 3
    assert starts[2] - starts[1] >= 0.3


async def test_a_trigger_the_tick_found_to_be_noise_is_held_but_a_confirmed_one_is_not() -> None:
    """A tick triggered for rank 100 that then serves only 50 (memory was below the line again) holds further
    rank-100 triggers for the gap; a higher line still ticks at once."""
    ticks = 0
    ticked = asyncio.Event()
    serve = 50.0

    loop: FixedRateLoop

    async def tick() -> None:
        nonlocal ticks
        ticks += 1
        loop.served(serve)
        ticked.set()

    async def next_tick() -> None:
        await asyncio.wait_for(ticked.wait(), 5)
        ticked.clear()

    loop = FixedRateLoop(tick, 3600.0, trigger_gap=3600.0)
    task = asyncio.create_task(loop.run())
    await next_tick()  # the first, scheduled tick: serves 50
    loop.trigger(100)  # above what was served: at once
    await next_tick()  # ... and it found memory below the line again (served 50 < 100): noise
    loop.trigger(100)
    await asyncio.sleep(0.2)
    assert ticks == 2  # the same crossing again is held for the gap, not run at once
    loop.trigger(150)  # a higher line is news: at once
    await next_tick()
    loop.stop()
    await asyncio.wait_for(task, 1)
    assert ticks == 3
