"""The monitor in a pod, against the strict Kubernetes API stand-in: level changes annotate the pod and emit
Events; the kubernetes-evict restart evicts it, and falls back to the liveness probe when a PDB blocks it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.actions.kube_standin import KubeStandin
from tests.waiting import wait_until

EMERGENCY = {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 3}


@pytest.fixture
def in_pod(kube_api: KubeStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubeStandin:
    """Environment of a pod whose API server is the stand-in (memmon's out-of-cluster override variables)."""
    token = tmp_path / "token"
    token.write_text(kube_api.token)
    monkeypatch.setenv("MEMMON_KUBE_API", kube_api.url)
    monkeypatch.setenv("MEMMON_KUBE_TOKEN_FILE", str(token))
    monkeypatch.setenv("POD_NAME", kube_api.pod_name)
    monkeypatch.setenv("POD_NAMESPACE", kube_api.namespace)
    return kube_api


def restart(**options: Any) -> dict[str, Any]:
    return {
        "thresholds": EMERGENCY,
        "auto_response": {"emergency_actions": {"graceful_restart": {"grace_seconds": 0, **options}}},
    }


async def test_level_change_annotates_the_pod_and_emits_an_event(in_pod: KubeStandin, make_monitor) -> None:
    """Entering emergency sets memmon.io/level and emits a MemoryEmergency Warning event on the own pod."""
    monitor = make_monitor({"thresholds": EMERGENCY})
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        await wait_until(lambda: in_pod.annotations.get("memmon.io/level") == "emergency")
        await wait_until(lambda: any(e["reason"] == "MemoryEmergency" for e in in_pod.events))
    finally:
        await monitor.stop_monitoring()
    event = next(e for e in in_pod.events if e["reason"] == "MemoryEmergency")
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == in_pod.pod_name
    assert "memmon.io/since" in in_pod.annotations


async def test_evict_restart_evicts_the_own_pod(in_pod: KubeStandin, make_monitor) -> None:
    """kubernetes-evict posts a policy/v1 Eviction for the own pod and records a GracefulRestart event."""
    monitor = make_monitor(restart(strategy="kubernetes-evict"))
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        await wait_until(
            lambda: any(r.action == "restart:kubernetes-evict" for r in monitor.recent_actions())
        )
        await wait_until(lambda: any(e["reason"] == "GracefulRestart" for e in in_pod.events))
    finally:
        await monitor.stop_monitoring()
    assert [e["metadata"]["name"] for e in in_pod.evictions] == [in_pod.pod_name]
    assert all(r.success for r in monitor.recent_actions() if r.action == "restart:kubernetes-evict")


async def test_blocked_eviction_falls_back_to_the_liveness_probe(in_pod: KubeStandin, start_agent) -> None:
    """When a PodDisruptionBudget blocks every eviction attempt, the fallback fails the app's liveness probe."""
    in_pod.pdb_blocks = 100
    agent = await start_agent(
        restart(strategy="kubernetes-evict", fallback="kubernetes-liveness", evict_attempts=1)
    )
    await wait_until(lambda: agent.monitor.liveness is not None and agent.monitor.liveness.failing, within=15)
    assert (await agent.get("/health/live"))[0] == 503
    actions = [r for r in agent.monitor.recent_actions() if r.action.startswith("restart:")]
    assert [r.action for r in actions][:2] == ["restart:kubernetes-evict", "restart:kubernetes-liveness"]
    assert not actions[0].success and "PodDisruptionBudget" in (actions[0].error or "")
