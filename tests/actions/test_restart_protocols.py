"""Restarts asks a strategy what it is (small protocols), never its name: a probe strategy waits out the grace
time before raising its request and is cleared on recovery, whatever it is called."""

from __future__ import annotations

import asyncio
import time

from memmon.actions.liveness import LivenessRestart
from memmon.actions.restarting import ProbeRestart, Restarts, RestartStrategy
from memmon.config.actions import AutoResponseSettings
from memmon.model import ActionResult, Evaluation, Level
from tests.samples import process_sample


class Strategy:
    """A restart strategy that only records when it was asked to restart."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.restarted = asyncio.Event()

    async def restart(self, reason: str) -> ActionResult:
        self.restarted.set()
        return ActionResult(self.name, True, time.time(), 0.0)


class CustomProbe(Strategy):
    """A probe strategy that is not the built-in liveness one (another name, its own class)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.cleared = 0

    def clear(self) -> None:
        self.cleared += 1


def settings(grace_seconds: float) -> AutoResponseSettings:
    return AutoResponseSettings.model_validate(
        {"emergency_actions": {"graceful_restart": {"strategy": "signal", "grace_seconds": grace_seconds}}}
    )


def emergency() -> Evaluation:
    return Evaluation(process_sample(900), Level.EMERGENCY, Level.CRITICAL, (), (), ())


def restarts_with(
    strategy: RestartStrategy, *, grace_seconds: float, fallback: RestartStrategy | None = None
) -> Restarts:
    return Restarts(
        settings(grace_seconds),
        record=lambda result: result,
        dry=lambda action, level: ActionResult(action, True, time.time(), 0.0),
        strategy=strategy,
        fallback=fallback,
    )


def test_the_liveness_strategy_and_a_custom_probe_are_probe_restarts() -> None:
    """LivenessRestart and any strategy with clear() are ProbeRestart; a plain strategy is not."""
    assert isinstance(LivenessRestart(), ProbeRestart)
    assert isinstance(CustomProbe("restart:my-probe"), ProbeRestart)
    assert not isinstance(Strategy("restart:plain"), ProbeRestart)


async def test_a_probe_strategy_by_any_name_waits_out_the_grace_time() -> None:
    """At emergency a plain strategy restarts at once, while a probe strategy (not named kubernetes-liveness)
    is still waiting for the emergency to last grace_seconds (30 s here); before, only the name was checked."""
    plain, probe = Strategy("restart:plain"), CustomProbe("restart:my-probe")
    plain_restarts = restarts_with(plain, grace_seconds=30)
    probe_restarts = restarts_with(probe, grace_seconds=30)
    plain_restarts.on_evaluation(emergency())
    probe_restarts.on_evaluation(emergency())
    await asyncio.wait_for(plain.restarted.wait(), 10)
    for _ in range(20):  # let the probe's task run as far as it can without time passing
        await asyncio.sleep(0)
    assert not probe.restarted.is_set()
    await probe_restarts.close(0)
    await plain_restarts.close(0)


async def test_a_probe_strategy_is_asked_once_the_grace_time_has_passed() -> None:
    """With a short grace time the probe strategy's request is raised after it."""
    probe = CustomProbe("restart:my-probe")
    restarts = restarts_with(probe, grace_seconds=0.05)
    restarts.on_evaluation(emergency())
    await asyncio.wait_for(probe.restarted.wait(), 10)
    await restarts.close(1)


def test_recovery_clears_every_probe_strategy_and_skips_the_others() -> None:
    """Below emergency, the primary and the fallback are cleared when they are probe strategies (a plain one has
    nothing to clear); at emergency nothing is cleared."""
    primary, fallback = CustomProbe("restart:a"), CustomProbe("restart:b")
    restarts = restarts_with(primary, grace_seconds=0, fallback=fallback)
    restarts.recovered(Level.EMERGENCY)
    assert (primary.cleared, fallback.cleared) == (0, 0)
    restarts.recovered(Level.CRITICAL)
    assert (primary.cleared, fallback.cleared) == (1, 1)
    restarts_with(Strategy("restart:plain"), grace_seconds=0, fallback=primary).recovered(Level.OK)
    assert primary.cleared == 2
