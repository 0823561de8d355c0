"""A second container sharing the app container's PID namespace (Kubernetes ``shareProcessNamespace``, the
chart's sidecar) watches the app's leaking worker with ``--match`` and restarts it with the ``signal`` strategy
before the app container's memory limit OOM-kills it. The cgroup file system is read-only in both containers:
no kernel notification can be armed, so this is the usage watcher's path (polling /proc/PID/statm)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from image_tests.conftest import REPO, RUN_AS_THE_CHART_DOES, Container, Containers, wait_until

APPS = REPO / "image_tests" / "apps"
APP_LIMIT = 256 * 2**20
LEAK_MB_PER_SECOND = 40
"""With nothing in the way the worker reaches the app container's 256 MiB in about 6 s."""
SIDECAR_LIMIT = 160 * 2**20
"""memmon's own container's limit: not the app's, so judging the app against it would show."""
V1_MEMORY = Path("/sys/fs/cgroup/memory")


def run_app(containers: Containers) -> Container:
    """The leaking app: a supervisor restarting its worker, in its own read-only container as uid 65532 (the user
    the chart asks the app to share with memmon), 256 MiB, no swap."""
    options = [
        *RUN_AS_THE_CHART_DOES,
        "--memory", "256m", "--memory-swap", "256m",
        "-v", f"{APPS}:/app:ro",
        "-e", f"LEAK_MB_PER_SECOND={LEAK_MB_PER_SECOND}",
        "--entrypoint", "/opt/memmon/bin/python",
    ]  # fmt: skip
    return containers.run("app", options, ["-u", "/app/leaky_app.py", "supervise"], health=False)


def events(app: Container) -> list[dict[str, Any]]:
    """The app's JSON event lines so far."""
    return [json.loads(line) for line in app.logs().splitlines() if line.startswith("{")]


def oom_kills(app: Container) -> int:
    """OOM kills in the app container's memory cgroup, read on the host (cgroup v1 memory.oom_control)."""
    path = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{app.pid}/cgroup").read_text().splitlines()
        if line.split(":")[1] == "memory"
    )
    control = (V1_MEMORY / path.lstrip("/") / "memory.oom_control").read_text()
    return int(dict(line.split() for line in control.splitlines())["oom_kill"])


def test_without_memmon_the_leaking_worker_dies_by_the_oom_killer(containers: Containers) -> None:
    """The control: alone, the leak ends in the kernel's OOM kill (so the test below can fail)."""
    app = run_app(containers)
    wait_until(
        lambda: any(e["event"] == "worker-exit" for e in events(app)),
        60,
        "the first worker's end",
        log=app.logs,
    )
    first_exit = next(e for e in events(app) if e["event"] == "worker-exit")
    assert first_exit["code"] == -9, first_exit  # SIGKILL: the OOM killer
    assert oom_kills(app) >= 1


def test_a_sidecar_memmon_restarts_the_leaking_worker_gracefully_before_the_oom_kill(
    containers: Containers, tmp_path: Path
) -> None:
    """memmon in a second container (--pid container:app, its own read-only root, uid 65532, no capabilities)
    matches the worker, judges it against the app container's cgroup limit (not its own container's; the chart
    also passes the limit as MEMMON_TARGET__MEMORY_LIMIT_BYTES from the downward API) and SIGTERMs it at
    emergency: the worker exits 0 on its own handler, the supervisor starts a new one, no OOM kill in the app's
    cgroup, and memmon records the restart as a success."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps(
            {
                "monitoring": {"check_interval": 1},
                "thresholds": {
                    "memory_warning_mb": None,
                    "memory_critical_mb": None,
                    "memory_emergency_mb": None,
                    "memory_percent_warning": 30,
                    "memory_percent_critical": 45,
                    "memory_percent_emergency": 60,
                },
                "auto_response": {
                    "emergency_actions": {
                        "graceful_restart": {"strategy": "signal", "signal": "SIGTERM", "grace_seconds": 10}
                    }
                },
            }
        )
    )
    config.chmod(0o755)
    (config / "config.json").chmod(0o644)
    state = containers.volume("state")
    app = run_app(containers)
    wait_until(
        lambda: any(e["event"] == "worker-started" for e in events(app)), 30, "the worker", log=app.logs
    )
    options = [
        *RUN_AS_THE_CHART_DOES,
        "--memory", f"{SIDECAR_LIMIT // 2**20}m",
        "--pid", f"container:{app.name}",
        "-v", f"{state}:/var/lib/memmon",
        "-v", f"{config}:/etc/memmon:ro",
        "-e", f"MEMMON_TARGET__MEMORY_LIMIT_BYTES={APP_LIMIT}",
    ]  # fmt: skip
    command = ["--config", "/etc/memmon/config.json", "--match", "leaky_app.py worker"]
    memmon = containers.run("sidecar", options, command)
    memmon.wait_healthy()

    def restarted() -> bool:
        return any(e["event"] == "worker-started" and e["generation"] == 1 for e in events(app))

    wait_until(restarted, 60, "a second worker", log=lambda: app.logs() + memmon.logs())
    by_event = {(e["event"], e["generation"]): e for e in events(app)}
    assert ("graceful-exit", 0) in by_event, events(app)
    assert by_event[("worker-exit", 0)]["code"] == 0, events(app)
    assert by_event[("graceful-exit", 0)]["held_mb"] < APP_LIMIT // 2**20, events(app)
    assert oom_kills(app) == 0
    assert app.inspect()["State"]["Running"], app.inspect()["State"]
    health = memmon.get("/health")
    assert "kernel_events" in health["degraded"], health
    restarts = [a for a in health["recent_actions"] if a["action"].startswith("restart:")]
    assert restarts and restarts[0]["action"] == "restart:signal" and restarts[0]["success"], health
    # The app's own cgroup, read through /proc/<pid>/root (the same user): its limit, not memmon's container's.
    memory = memmon.get("/health/memory")
    assert memory["limit_source"] == "cgroup", memory
    assert memory["effective_limit_mb"] == APP_LIMIT / 2**20, memory
