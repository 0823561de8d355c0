"""What every target shares (host memory and swap, the store, the host reading) is exposed once by a multi-target
agent, as ``target="host"``, and as the target's own by a single-target agent, as before."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from memmon.exposition.metrics import target_families
from memmon.exposition.metrics.samples import SHARED_SOURCES, TARGET_SOURCES
from memmon.exposition.metrics.view import target_views
from tests.test_store_shutdown import _fill, _tmpfs

HOST_FAMILIES = {
    "memmon_host_memory_total_bytes",
    "memmon_host_memory_available_bytes",
    "memmon_host_swap_total_bytes",
    "memmon_host_swap_used_bytes",
}


def series(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of every series of the family ``name``, values under ``value``."""
    out = []
    for family in text_string_to_metric_families(text):
        if family.name == name:
            out += [{**sample.labels, "value": str(sample.value)} for sample in family.samples]
    return out


def two_targets(sleeper: int, **more: Any) -> dict[str, Any]:
    """This test process as ``api`` and a sleep as ``worker`` (and, from the default host thresholds, ``host``)."""
    return {
        "targets": [{"pids": [os.getpid()], "name": "api"}, {"pids": [sleeper], "name": "worker"}],
        **more,
    }


async def test_several_targets_expose_the_host_once_and_only_their_own_sources(
    start_agent: Any, sleeper: int
) -> None:
    """Two targets and the host watch: each host family has one series, ``target="host"``, with the host's
    memory; each target's memmon_source_degraded lists its own sources only, and ``host`` lists the host watch's
    and the shared ones, none twice."""
    agent = await start_agent(two_targets(sleeper))
    assert set(agent.monitor.watches) == {"api", "worker", "host"}
    status, text = await agent.get("/metrics")
    assert status == 200
    for name in HOST_FAMILIES:
        assert [s["target"] for s in series(text, name)] == ["host"], name
    total = series(text, "memmon_host_memory_total_bytes")[0]["value"]
    assert float(total) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    degraded = series(text, "memmon_source_degraded")
    for target in ("api", "worker"):
        assert sorted(s["source"] for s in degraded if s["target"] == target) == sorted(TARGET_SOURCES), (
            target
        )
    host = [s["source"] for s in degraded if s["target"] == "host"]
    assert sorted(host) == sorted(TARGET_SOURCES + SHARED_SOURCES)
    assert {s["value"] for s in degraded} == {"0.0"}


async def test_without_a_host_watch_the_shared_series_still_appear_once(
    start_agent: Any, sleeper: int
) -> None:
    """Targets without a host watch among them (no host thresholds): the host families and the shared sources
    appear once, as ``target="host"``, from the freshest of the targets' host readings."""
    agent = await start_agent(two_targets(sleeper))
    views = [view for view in target_views(agent.monitor) if view.name != "host"]
    assert [view.shares_agent_series for view in views] == [False, False]
    families = {family.name: family for family in target_families(views, agent.monitor.degraded)}
    for name in HOST_FAMILIES:
        assert [sample.labels for sample in families[name].samples] == [{"target": "host"}], name
    freshest = max(views, key=lambda view: view.latest.sample.timestamp).latest.sample.host
    assert freshest is not None
    assert families["memmon_host_memory_available_bytes"].samples[0].value == freshest.available_bytes
    host = [
        s.labels["source"] for s in families["memmon_source_degraded"].samples if s.labels["target"] == "host"
    ]
    assert sorted(host) == sorted(SHARED_SOURCES)


async def test_a_full_store_of_a_multi_target_agent_is_a_degraded_source(
    start_agent: Any, sleeper: int, tmp_path: Path
) -> None:
    """A store that cannot write (a full disk) is ``memmon_source_degraded{source="store",target="host"} 1`` with
    several targets too (before, each target showed the store at 0 whatever happened)."""
    with _tmpfs(tmp_path) as mount:
        storage = {"state_dir": str(mount / "state"), "flush_interval_seconds": 3600}
        agent = await start_agent(two_targets(sleeper, storage=storage))
        await agent.monitor.recorder.flush()
        _fill(mount)
        for _ in range(3):
            await agent.monitor.check_now()
        await agent.monitor.recorder.flush()
        assert agent.monitor.recorder.problem is not None, "a write to a full store must fail"
        _status, text = await agent.get("/metrics")
        await agent.monitor.stop_monitoring()
    store = [s for s in series(text, "memmon_source_degraded") if s["source"] == "store"]
    assert store == [{"source": "store", "target": "host", "value": "1.0"}]


async def test_a_single_target_keeps_the_shared_series_as_its_own(start_agent: Any) -> None:
    """One target: the host families and every known source carry that target, as before (no ``host`` target)."""
    agent = await start_agent()
    _status, text = await agent.get("/metrics")
    name = agent.monitor.primary.name
    for family in HOST_FAMILIES:
        assert [s["target"] for s in series(text, family)] == [name], family
    degraded = series(text, "memmon_source_degraded")
    assert {s["target"] for s in degraded} == {name}
    assert sorted(s["source"] for s in degraded) == sorted(TARGET_SOURCES + SHARED_SOURCES)
