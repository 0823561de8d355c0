"""One agent, many targets, on real memory cgroups: a leak in one target alerts and restarts that target alone;
the others stay ok and untouched; targets that go away resolve and come back cleanly."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cgroups import v1_memory_cgroup
from tests.prefork.agent import RunningAgent, running_agent
from tests.test_cgroup_alerts import Grower

LIMIT = 256 * 2**20
CONFIG: dict[str, Any] = {
    "monitoring": {"check_interval": 0.2, "forget_missing_targets_seconds": 2},
    "thresholds": {
        "memory_warning_mb": None,
        "memory_critical_mb": None,
        "memory_emergency_mb": None,
        "memory_percent_warning": 30,
        "memory_percent_critical": 50,
        "memory_percent_emergency": 70,
        "swap_percent_warning": None,
        "swap_percent_critical": None,
        "swap_percent_emergency": None,
        "system_percent_warning": 99,
        "system_percent_critical": 99.5,
        "system_percent_emergency": 99.9,
    },
    "auto_response": {
        "emergency_actions": {
            "graceful_restart": {
                "strategy": "signal",
                "signal": "SIGTERM",
                "grace_seconds": 5,
                "cooldown_seconds": 0,
            }
        }
    },
}


@contextlib.contextmanager
def three_cgroups() -> Iterator[list[Path]]:
    """Three fresh 256 MiB v1 memory cgroups."""
    with v1_memory_cgroup(LIMIT) as a, v1_memory_cgroup(LIMIT) as b, v1_memory_cgroup(LIMIT) as c:
        yield [a, b, c]


def metrics_text(agent: RunningAgent) -> str:
    """The agent's /metrics, as text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll ``condition`` every 0.1 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def by_name(agent: RunningAgent) -> dict[str, dict[str, Any]]:
    """``/health/targets`` as name -> target."""
    return {target["name"]: target for target in agent.get("/health/targets")["targets"]}


def test_a_leak_in_one_of_three_cgroups_alerts_and_restarts_that_one_alone() -> None:
    """Three cgroups in one agent: the one that leaks past emergency alerts and gets SIGTERM; the others stay ok,
    their processes alive, no action or alert of theirs; /health is the worst; history keeps each target."""
    with three_cgroups() as cgroups:
        growers = [Grower(cgroup) for cgroup in cgroups]
        for grower in growers:
            grower.hold(10)
        names = ["api", "worker", "db"]
        config = {
            **CONFIG,
            "targets": [{"cgroup": str(c), "name": n} for c, n in zip(cgroups, names, strict=True)],
        }
        with running_agent([], config=config) as agent:
            wait_until(
                lambda: (
                    {n: t["status"] for n, t in by_name(agent).items() if n != "host"}
                    == dict.fromkeys(names, "ok")
                ),
                timeout=20,
            )
            assert set(by_name(agent)) == {*names, "host"}
            leaker = growers[1].proc
            assert leaker.stdin is not None
            leaker.stdin.write(
                "200\n"
            )  # 78 % of its cgroup's limit: emergency (it may be stopped before it says so)
            leaker.stdin.flush()
            wait_until(lambda: leaker.poll() is not None, timeout=30)  # restarted: SIGTERM ended it

            def restarts_recorded() -> list[dict[str, Any]]:
                """The restart results so far: recorded once the strategy returns, after the process has exited."""
                return [
                    a for a in agent.get("/health")["recent_actions"] if a["action"].startswith("restart")
                ]

            wait_until(lambda: bool(restarts_recorded()), timeout=15)
            targets = by_name(agent)
            actions = agent.get("/health")["recent_actions"]
            restarts = restarts_recorded()
            assert restarts and {a["target"] for a in restarts} == {"worker"}, actions
            assert {a.get("target") for a in actions} == {"worker"}, actions
            alerts = agent.get("/health/alerts?hours=1")
            fired = {(a["target"], a["severity"]) for a in alerts["alerts"]}
            assert ("worker", "emergency") in fired, fired
            assert not {t for t, _ in fired} - {"worker"}, fired
            assert targets["api"]["status"] == "ok" and targets["db"]["status"] == "ok", targets
            assert growers[0].proc.poll() is None and growers[2].proc.poll() is None
        for grower in (growers[0], growers[2]):
            grower.proc.kill()
            grower.proc.wait()


def test_single_target_flags_given_twice_watch_two_targets_and_history_keeps_each(tmp_path: Path) -> None:
    """``--cgroup A --cgroup B``: two targets named cgroup:<path>, plus host; ?target= selects a history."""
    with three_cgroups() as cgroups:
        a, b = cgroups[0], cgroups[1]
        with running_agent(["--cgroup", str(a), "--cgroup", str(b), "--check-interval", "0.2"]) as agent:
            wait_until(lambda: all(t["state"] == "present" for t in by_name(agent).values()), timeout=20)
            names = set(by_name(agent))
            assert names == {f"cgroup:{a}", f"cgroup:{b}", "host"}, names
            name = f"cgroup:{a}"
            detail = agent.get(f"/health/targets/{name}")
            assert detail["name"] == name and detail["memory"]["cgroup"] is not None
            history = agent.get(f"/health/metrics/history?hours=1&target={name}")
            assert history["samples"] and all(p["target"] == name for p in history["samples"])
            with pytest.raises(Exception, match="404"):
                agent.get("/health/targets/nope")
            text = metrics_text(agent)
            for target in names:
                assert f'memmon_memory_level{{target="{target}"}}' in text, target
                assert f'severity="warning",target="{target}"}}' in text, target
            assert text.count("# TYPE memmon_memory_level gauge") == 1


def test_a_pattern_finds_new_cgroups_forgets_removed_ones_and_finds_them_again() -> None:
    """A glob target: a cgroup created later is watched within the re-resolution interval; one removed goes
    missing, then is forgotten after forget_missing_targets_seconds (its series leave /metrics); created again
    under the same name, it is watched again."""
    with v1_memory_cgroup(LIMIT, prefix="memmon-glob") as first:
        pattern = str(first.parent / "memmon-glob-*")
        second = first.parent / f"{first.name}-b"
        name = f"cgroup:/{second.name}"
        config = {**CONFIG, "targets": [{"cgroup": pattern}]}
        try:
            with running_agent([], config=config) as agent:
                wait_until(lambda: f"cgroup:/{first.name}" in by_name(agent), timeout=20)
                second.mkdir()
                wait_until(lambda: by_name(agent).get(name, {}).get("state") == "present", timeout=20)
                second.rmdir()
                wait_until(
                    lambda: by_name(agent).get(name, {}).get("status") in (None, "unknown"), timeout=20
                )
                wait_until(lambda: name not in by_name(agent), timeout=30)
                assert f"cgroup:/{first.name}" in by_name(agent)
                text = metrics_text(agent)
                assert f'target="cgroup:/{first.name}"' in text
                assert f'target="{name}"' not in text  # a forgotten target's series are gone
                second.mkdir()
                wait_until(lambda: by_name(agent).get(name, {}).get("state") == "present", timeout=20)
                assert f'target="{name}"' in metrics_text(agent)
        finally:
            if second.exists():
                second.rmdir()


def history_targets(database: Path) -> set[str]:
    """The distinct targets of the samples table."""
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT target FROM samples")}


def test_history_query_of_one_target_in_the_store(tmp_path: Path) -> None:
    """The SQLite store answers one target's history (the ring does not cover the window)."""
    from memmon.model import HistoryPoint, Level
    from memmon.storage.store import MemoryStore

    store = MemoryStore(tmp_path, retention_seconds=3600, alert_retention_seconds=3600)
    store.open()
    now = time.time()
    store.add_samples(
        [
            HistoryPoint(now - i, Level.OK, target, float(i), 1.0, 100.0, "host")
            for i in range(10)
            for target in ("a", "b")
        ]
    )
    assert {p.target for p in store.history(now - 100, target="a")} == {"a"}
    assert len(store.history(now - 100, target="b")) == 10
    assert history_targets(store.path) == {"a", "b"}
    store.close()
