"""The Helm chart's demo in a real (kind) cluster: a leaky app (container ``app``) with the memmon sidecar, driven
through warning, critical and emergency by POST /leak, and what memmon does to the pod at each level:

* warning: the pod annotation ``memmon.io/level`` (with ``/since`` and ``/reason``) and a MemoryWarning Event;
* critical: MemoryCritical, and the pod's Ready condition turns False (the app's readiness probe asks memmon's
  /health/ready) while memmon's own container stays ready;
* emergency: MemoryEmergency and GracefulRestart, then the kubelet restarts the app container because its liveness
  probe (memmon's /health/live) failed: restartCount +1, the app exited 0 after draining, not ``OOMKilled``;
* afterwards: MemoryRecovered, ``memmon.io/level`` back to ok, the pod Ready again, and no further restart.

The leak sizes come from the chart as installed (the app's memory limit, memmon's thresholds from its config
file) and from memmon's own reading of the app's memory just before each step. The requests are made from the
memmon container (``kubectl exec``; the pod shares one network namespace): a helper process in the app container
would be charged to the app's memory limit and could OOM-kill it at the emergency step.

Without a container runtime and kind every test here is skipped at collection, with the reason (conftest.py).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from memmon.model import Level

if TYPE_CHECKING:  # the fixture's type, from e2e/conftest.py (for annotations only)
    from conftest import Demo

T = TypeVar("T")

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
LEVEL = "memmon.io/level"
SINCE = "memmon.io/since"
REASON = "memmon.io/reason"
SETTLE_SECONDS = 60
"""Slack for memmon's next check plus its API calls, and for the kubelet's next probe."""


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float, every: float = 2.0) -> T:
    """Poll ``probe`` until it gives something other than None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def pod_annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("annotations") or {})


def pod_ready(pod: Mapping[str, Any]) -> str | None:
    """The status of the pod's Ready condition ("True"/"False"), None before it has one."""
    for condition in pod.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            status: str = condition["status"]
            return status
    return None


def memmon_events(demo: Demo, reason: str) -> list[dict[str, Any]]:
    """memmon's Events (source.component memmon) with ``reason`` on the demo pod (this very pod: its uid)."""
    return [
        event
        for event in demo.events()
        if event.get("reason") == reason
        and (event.get("source") or {}).get("component") == "memmon"
        and event["involvedObject"].get("uid") == demo.pod_uid
    ]


def wait_for_event(demo: Demo, reason: str, *, timeout: float = SETTLE_SECONDS) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        events = memmon_events(demo, reason)
        return events[-1] if events else None

    return wait_for(f"a {reason} Event from memmon on pod {demo.pod_name}", found, timeout=timeout)


def wait_for_level(demo: Demo, level: Level, *, timeout: float = SETTLE_SECONDS) -> dict[str, str]:
    """Wait until the pod's memmon.io/level annotation says ``level``; the pod's annotations then."""

    def annotated() -> dict[str, str] | None:
        found = pod_annotations(demo.pod())
        return found if found.get(LEVEL) == level.label else None

    return wait_for(f"{LEVEL}={level.label} on pod {demo.pod_name}", annotated, timeout=timeout)


def assert_level_annotations(found: Mapping[str, str], level: Level) -> None:
    assert found[LEVEL] == level.label, found
    assert RFC3339.match(found[SINCE]), f"{SINCE} is not RFC 3339: {found}"
    assert 0 < len(found[REASON]) <= 200, f"{REASON}: {found}"


def assert_level_event(event: Mapping[str, Any], level: Level, previous: Level) -> None:
    assert event["type"] == ("Normal" if level == Level.OK else "Warning"), event
    assert event["involvedObject"]["kind"] == "Pod", event
    message = event.get("message", "")
    assert previous.label in message and level.label in message, f"the Event's message: {message!r}"


def leak_into(demo: Demo, level: Level, fraction: float) -> int:
    """POST /leak with enough MiB to put the app's memory ``fraction`` into the ``level`` band, as memmon judges
    it (its RSS against the effective limit; also the app's cgroup against its limit when memmon reads one);
    the leaked MiB."""
    status, memory = demo.memmon("/health/memory")
    assert status == 200, memory
    usage, limit = memory["memory_usage_mb"], memory["effective_limit_mb"]
    assert usage is not None, f"memmon cannot read the app's memory: {memory}"
    spec = demo.spec
    gaps: list[float] = [spec.usage_inside(level, limit, with_mb_thresholds=True, fraction=fraction) - usage]
    cgroup = memory.get("cgroup")
    if cgroup and cgroup.get("limit_mb"):
        target = spec.usage_inside(level, cgroup["limit_mb"], with_mb_thresholds=False, fraction=fraction)
        gaps.append(target - cgroup["working_set_mb"])
    mb = math.ceil(min(gaps))
    assert mb > 0, f"the app is already past the middle of the {level.label} band: {memory}"
    demo.leak(mb)
    return mb


STEP_TIMEOUT = 1500
"""Per step, generous: the first step also builds the image and creates the cluster, the last deletes it; every
wait inside a step has its own, much shorter, bound."""


@pytest.mark.steps
@pytest.mark.timeout(STEP_TIMEOUT)
class TestDemoPodThroughTheLevels:
    """One pod, in order: deployed, warning, critical, emergency (graceful restart), recovered."""

    def test_deployed_with_the_sidecar_watching_the_app(self, demo: Demo) -> None:
        spec = demo.spec
        restart = spec.settings.auto_response.emergency_actions.graceful_restart
        assert restart.strategy == "kubernetes-liveness", f"the demo values' graceful restart: {restart}"
        assert {Level.CRITICAL, Level.EMERGENCY} <= set(spec.settings.server.ready_fail_levels)

        pod = demo.pod()
        assert pod_ready(pod) == "True"
        for name in (spec.app_container, "memmon"):
            container = demo.container_status(pod, name)
            assert container["ready"] is True and container["restartCount"] == 0, container

        status, memory = demo.memmon("/health/memory")
        assert status == 200, memory
        assert memory["target_kind"] == "process" and memory["processes"], f"memmon sees no app: {memory}"
        assert memory["effective_limit_mb"] == pytest.approx(spec.memory_limit_mb, abs=0.5), (
            f"memmon judges against {memory['effective_limit_mb']} MiB ({memory['limit_source']}), "
            f"not the app container's limit of {spec.memory_limit_mb:g} MiB"
        )
        status, health = demo.memmon("/health")
        assert health["level"] == "ok", (
            f"memmon is at {health['level']} before any leak (host used {memory['host']}); "
            f"the demo thresholds also apply to the host's memory"
        )
        assert demo.memmon("/health/live")[0] == 200
        assert demo.memmon("/health/ready")[0] == 200
        answer, body = demo.http("GET", spec.app_port, "/healthz")
        assert answer == 200 and json.loads(body)["held_mb"] == 0, body
        assert pod_annotations(pod).get(LEVEL, "ok") == "ok"

    def test_warning_annotates_the_pod_and_emits_an_event(self, demo: Demo) -> None:
        leak_into(demo, Level.WARNING, fraction=0.5)
        found = wait_for_level(demo, Level.WARNING)
        assert_level_annotations(found, Level.WARNING)
        assert_level_event(wait_for_event(demo, "MemoryWarning"), Level.WARNING, Level.OK)

        if Level.WARNING not in demo.spec.settings.server.ready_fail_levels:
            assert demo.memmon("/health/ready")[0] == 200
            time.sleep(demo.spec.readiness.reaction_seconds)  # give the kubelet time to probe again
            assert pod_ready(demo.pod()) == "True", "the pod left readiness at warning"

    def test_critical_takes_the_pod_out_of_readiness(self, demo: Demo) -> None:
        leak_into(demo, Level.CRITICAL, fraction=0.5)
        assert_level_annotations(wait_for_level(demo, Level.CRITICAL), Level.CRITICAL)
        assert_level_event(wait_for_event(demo, "MemoryCritical"), Level.CRITICAL, Level.WARNING)
        assert demo.memmon("/health/ready")[0] == 503
        assert demo.memmon("/health/live")[0] == 200, "no restart is asked for at critical"

        def not_ready() -> dict[str, Any] | None:
            pod = demo.pod()
            return pod if pod_ready(pod) == "False" else None

        pod = wait_for(
            "the pod's Ready condition to turn False at critical",
            not_ready,
            timeout=demo.spec.readiness.reaction_seconds + SETTLE_SECONDS,
        )
        app = demo.container_status(pod, demo.spec.app_container)
        sidecar = demo.container_status(pod, "memmon")
        assert app["ready"] is False, app
        assert sidecar["ready"] is True, f"memmon's own readiness must not follow the app's memory: {sidecar}"
        assert app["restartCount"] == 0 and sidecar["restartCount"] == 0

    def test_emergency_restarts_the_app_gracefully(self, demo: Demo) -> None:
        spec = demo.spec
        before = demo.container_status(demo.pod(), spec.app_container)["restartCount"]
        leak_into(demo, Level.EMERGENCY, fraction=0.35)

        seen: set[str] = set()

        def restarted() -> dict[str, Any] | None:
            pod = demo.pod()
            seen.add(pod_annotations(pod).get(LEVEL, ""))
            app = demo.container_status(pod, spec.app_container)
            return pod if app["restartCount"] > before else None

        grace = spec.settings.auto_response.emergency_actions.graceful_restart.grace_seconds
        pod = wait_for(
            f"the {spec.app_container} container's restart after the emergency",
            restarted,
            timeout=grace + spec.liveness.reaction_seconds + spec.termination_grace_seconds + SETTLE_SECONDS,
            every=1.0,
        )
        assert "emergency" in seen, f"{LEVEL} seen while waiting: {sorted(seen)}"
        app = demo.container_status(pod, spec.app_container)
        assert app["restartCount"] == before + 1, app
        terminated = app.get("lastState", {}).get("terminated")
        assert terminated is not None, f"no lastState.terminated: {app}"
        assert terminated.get("reason") != "OOMKilled", f"the kernel killed the app: {terminated}"
        assert terminated.get("exitCode") == 0, f"the app did not drain and exit 0: {terminated}"
        assert demo.container_status(pod, "memmon")["restartCount"] == 0, "memmon itself was restarted"

        assert_level_event(wait_for_event(demo, "MemoryEmergency"), Level.EMERGENCY, Level.CRITICAL)
        restart_event = wait_for_event(demo, "GracefulRestart")
        assert restart_event["type"] == "Warning"
        assert "kubernetes-liveness" in restart_event.get("message", ""), restart_event
        killing = [
            event
            for event in demo.events()
            if event.get("reason") == "Killing"
            and event["involvedObject"].get("fieldPath") == f"spec.containers{{{spec.app_container}}}"
        ]
        assert killing, "no Killing Event from the kubelet for the app container"
        assert any("liveness" in event.get("message", "").lower() for event in killing), killing

    def test_recovers_after_the_restart(self, demo: Demo) -> None:
        spec = demo.spec
        restarts = demo.container_status(demo.pod(), spec.app_container)["restartCount"]
        assert_level_annotations(wait_for_level(demo, Level.OK, timeout=120), Level.OK)
        recovered = wait_for_event(demo, "MemoryRecovered")
        assert recovered["type"] == "Normal", recovered

        def ready() -> dict[str, Any] | None:
            pod = demo.pod()
            return pod if pod_ready(pod) == "True" else None

        wait_for("the pod Ready again after the restart", ready, timeout=120)
        assert demo.memmon("/health/live")[0] == 200
        answer, body = demo.http("GET", spec.app_port, "/healthz")
        assert answer == 200 and json.loads(body)["held_mb"] == 0, f"not a fresh app process: {body}"

        time.sleep(spec.liveness.reaction_seconds + 5)  # long enough for a failing liveness probe to act
        pod = demo.pod()
        assert pod_ready(pod) == "True"
        assert demo.container_status(pod, spec.app_container)["restartCount"] == restarts, "restarted again"
        assert pod_annotations(pod)[LEVEL] == "ok"
