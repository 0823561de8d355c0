"""The ``targets`` list and the repeatable target flags: per-target thresholds, actions and routing over the global
ones, the problems reported at start-up, and each target judged on its own at run time."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from memmon.cli import overrides_from, run_parser
from memmon.config import ConfigError, load_settings
from memmon.model import Level
from tests.alerting.receivers import Receiver
from tests.cgroups import V1_MEMORY
from tests.conftest import MonitorFactory


def settings_of(data: dict[str, Any]) -> Any:
    """Settings of ``data`` alone (no environment)."""
    return load_settings(None, overrides=data, environ={})


def problems_of(data: dict[str, Any]) -> list[str]:
    """The problem lines of an invalid configuration."""
    with pytest.raises(ConfigError) as caught:
        settings_of(data)
    return list(caught.value.problems)


def test_an_entry_overrides_only_what_it_names() -> None:
    """An entry's thresholds and auto_response keys replace the global ones for it alone; the rest is global."""
    settings = settings_of(
        {
            "thresholds": {"memory_percent_critical": 80},
            "targets": [
                {
                    "cgroup": "/a",
                    "thresholds": {"memory_percent_warning": 60},
                    "auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "signal"}}},
                },
                {"cgroup": "/b"},
            ],
        }
    )
    first, second = (settings.for_target(entry) for entry in settings.target_entries())
    assert first.thresholds.memory_percent_warning == 60 and first.thresholds.memory_percent_critical == 80
    assert second.thresholds.memory_percent_warning == 70 and second.thresholds.memory_percent_critical == 80
    assert first.auto_response.emergency_actions.graceful_restart.strategy == "signal"
    assert first.auto_response.emergency_actions.force_gc == settings.auto_response.emergency_actions.force_gc
    assert second.auto_response.emergency_actions.graceful_restart.strategy == "none"
    assert first.target.cgroup == "/a" and second.target.cgroup == "/b" and not first.targets


def test_a_server_entry_gets_its_preset() -> None:
    """A pre-fork server entry gets its server's strategy and worker signal; its neighbour keeps the global."""
    settings = settings_of({"targets": [{"pids": [1], "server": "gunicorn"}, {"cgroup": "/b"}]})
    server, plain = (settings.for_target(entry) for entry in settings.targets)
    assert server.auto_response.emergency_actions.graceful_restart.strategy == "recycle"
    assert plain.auto_response.emergency_actions.graceful_restart.strategy == "none"


def test_every_problem_of_the_entries_is_named_by_its_path() -> None:
    """Bad override keys and values, a duplicate name, a server on a pattern, a systemd restart without a unit
    and target given with targets: each is one line naming its path, all in one run."""
    lines = problems_of(
        {
            "target": {"cgroup": "/x"},
            "targets": [
                {"cgroup": "/a", "thresholds": {"memory_percent_warning": 150, "bogus": 1}},
                {"cgroup": "/a"},
                {"cgroup": "/system.slice/*.service", "server": "gunicorn"},
                {
                    "match": "x",
                    "auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "systemd"}}},
                },
            ],
        }
    )
    text = "\n".join(lines)
    assert "target: cannot be combined with targets" in text
    assert "targets.0.thresholds.memory_percent_warning" in text
    assert "targets.0.thresholds.bogus: unknown key" in text
    assert "targets.1.name: the name 'cgroup:/a' is also targets.0's" in text
    assert "targets.2.server: a pre-fork server needs one target, not a pattern" in text
    assert (
        "targets.3.auto_response.emergency_actions.graceful_restart.unit: the systemd strategy needs a unit"
        in text
    )


def test_an_increasing_rule_broken_by_an_override_names_the_entry() -> None:
    """An override that makes warning >= critical is reported under the entry, not the global section."""
    text = "\n".join(
        problems_of({"targets": [{"cgroup": "/a", "thresholds": {"memory_percent_warning": 90}}]})
    )
    assert "targets.0.thresholds" in text and "memory_percent" in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cgroup", "/a"], {"target": {"cgroup": "/a"}}),
        (["--pid", "1,2"], {"target": {"pids": [1, 2]}}),
        (
            ["--server", "gunicorn", "--pid", "1", "--cgroup", "/c"],
            {"target": {"server": "gunicorn", "pids": [1], "cgroup": "/c"}},
        ),
        (["--cgroup", "/a", "--cgroup", "/b"], {"targets": [{"cgroup": "/a"}, {"cgroup": "/b"}]}),
        (["--pid", "1", "--pid", "2"], {"targets": [{"pids": [1]}, {"pids": [2]}]}),
        (["--unit", "app-*.service"], {"targets": [{"unit": "app-*.service"}]}),
        (
            ["--server", "uwsgi", "--match", "a", "--match", "b"],
            {"targets": [{"match": "a", "server": "uwsgi"}, {"match": "b", "server": "uwsgi"}]},
        ),
    ],
)
def test_target_flags_once_are_one_target_and_twice_or_a_glob_are_several(
    argv: list[str], expected: dict[str, Any]
) -> None:
    """Each of --pid/--match/--cgroup/--unit once: today's one target; any twice or a glob: one entry each."""
    overrides = overrides_from(run_parser().parse_args(argv))
    assert {key: overrides[key] for key in ("target", "targets") if key in overrides} == expected


async def test_each_target_is_judged_on_its_own_thresholds(make_monitor: MonitorFactory) -> None:
    """Two targets on the same process: the one whose warning line is 1 MiB is at warning, the other ok; the
    host is judged once, as target host, and /health's level is the worst."""
    pid = os.getpid()
    monitor = make_monitor(
        {
            "targets": [
                {
                    "pids": [pid],
                    "name": "low",
                    "thresholds": {
                        "memory_warning_mb": 1,
                        "memory_critical_mb": None,
                        "memory_emergency_mb": None,
                    },
                },
                {"pids": [pid], "name": "high"},
            ],
            "thresholds": {
                "system_percent_warning": 99.7,
                "system_percent_critical": 99.8,
                "system_percent_emergency": 99.9,
            },
        }
    )
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        levels = {watch.name: watch.level for watch in monitor.watches.values()}
        assert levels == {"low": Level.WARNING, "high": Level.OK, "host": Level.OK}, levels
        assert monitor.level == Level.WARNING and monitor.focus.name == "low"
        components = {c.component for c in monitor.watches["high"].latest.components}  # type: ignore[union-attr]
        assert components and not components & {"system_memory", "swap"}, components
        alerts = monitor.active_alerts()
        assert {(a.target, a.severity) for a in alerts} == {("low", Level.WARNING)}
    finally:
        await monitor.stop_monitoring()


async def test_an_entry_with_its_own_alert_levels_routes_its_alerts_alone(
    make_monitor: MonitorFactory,
) -> None:
    """targets[].alert_levels: the entry's warning goes to the webhook; the other target's warning does not
    (its global route is the log alone)."""
    pid = os.getpid()
    async with Receiver() as receiver:
        monitor = make_monitor(
            {
                "alerting": {
                    "webhook_url": receiver.url + "/hook",
                    "alert_levels": {"warning": {"channels": ["log"]}},
                    "rate_limit_seconds": 0,
                },
                "targets": [
                    {
                        "pids": [pid],
                        "name": "paged",
                        "thresholds": {
                            "memory_warning_mb": 1,
                            "memory_critical_mb": None,
                            "memory_emergency_mb": None,
                        },
                        "alert_levels": {"warning": {"channels": ["webhook"]}},
                    },
                    {
                        "pids": [pid],
                        "name": "quiet",
                        "thresholds": {
                            "memory_warning_mb": 1,
                            "memory_critical_mb": None,
                            "memory_emergency_mb": None,
                        },
                    },
                ],
            }
        )
        await monitor.start_monitoring()
        try:
            await monitor.check_now()
            await receiver.wait_for_requests(1, within=10)
            await asyncio.sleep(0.5)  # the other target's alert, were it routed there, would have come by now
            targets = {body["target"] for body in receiver.bodies}
            assert targets == {"paged"}, receiver.bodies
        finally:
            await monitor.stop_monitoring()


async def test_a_held_sampling_thread_does_not_stop_the_other_targets(make_monitor: MonitorFactory) -> None:
    """One sampling thread held for 1.5 s (what a sampler stuck on a slow file does): every target keeps being
    checked meanwhile on the other threads."""
    pid = os.getpid()
    monitor = make_monitor({"targets": [{"pids": [pid], "name": name} for name in ("a", "b", "c")]})
    await monitor.start_monitoring()
    try:
        await monitor.check_now()
        held = asyncio.ensure_future(monitor._in_pool(lambda: time.sleep(1.5)))
        await asyncio.sleep(0.1)
        before = {name: watch.latest.sample.timestamp for name, watch in monitor.watches.items()}  # type: ignore[union-attr]
        await asyncio.sleep(1.0)
        assert not held.done()
        after = {name: watch.latest.sample.timestamp for name, watch in monitor.watches.items()}  # type: ignore[union-attr]
        assert all(after[name] > before[name] for name in before), (before, after)
        await held
    finally:
        await monitor.stop_monitoring()


async def test_a_unit_glob_match_is_watched_with_its_cgroup_and_its_unit(
    make_monitor: MonitorFactory,
) -> None:
    """A --unit glob's match carries the cgroup found and its unit name (what the systemd strategy restarts)."""
    if os.geteuid() != 0 or not V1_MEMORY.is_dir():
        pytest.skip("creating a cgroup needs root and a v1 memory hierarchy")
    unit = f"memmon-unit-{uuid.uuid4().hex[:8]}.service"
    directory = V1_MEMORY / unit
    directory.mkdir()
    try:
        monitor = make_monitor(
            {
                "targets": [{"unit": "memmon-unit-*.service"}],
                "auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "systemd"}}},
            }
        )
        await monitor.start_monitoring()
        try:
            watch = monitor.watches[f"cgroup:{unit}"]
            assert watch.settings.target.unit == unit and watch.settings.target.cgroup == f"/{unit}"
            assert watch.actions.restarts.strategy.name == "restart:systemd"
            await monitor.check_now()
            assert watch.latest is not None and watch.latest.sample.cgroup is not None
        finally:
            await monitor.stop_monitoring()
    finally:
        directory.rmdir()


def test_a_global_systemd_strategy_with_several_units_leaves_the_host_alone(
    make_monitor: MonitorFactory,
) -> None:
    """strategy systemd for every unit: each unit's watch restarts its own unit; the host watch acts on nothing."""
    monitor = make_monitor(
        {
            "targets": [{"unit": "a.service"}, {"unit": "b.service"}],
            "auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "systemd"}}},
        }
    )
    strategies = {name: watch.actions.restarts.strategy for name, watch in monitor.watches.items()}
    assert strategies["host"] is None, strategies
    assert strategies["cgroup:a.service"].unit == "a.service"  # type: ignore[union-attr]
    assert strategies["cgroup:b.service"].unit == "b.service"  # type: ignore[union-attr]


def test_the_readme_example_of_many_targets_is_valid() -> None:
    """The README's multi-target config example validates, with its per-target overrides applied."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Many targets in one agent") :]
    example = json.loads(
        section[
            section.index("```json") + len("```json") : section.index("```\n", section.index("```json") + 7)
        ]
    )
    settings = settings_of(example)
    api, worker, batch = settings.targets
    assert settings.for_target(api).auto_response.emergency_actions.graceful_restart.strategy == "systemd"
    assert settings.for_target(worker).thresholds.memory_percent_warning == 60
    assert batch.is_pattern


async def test_history_size_is_split_among_the_targets_and_older_windows_come_from_sqlite(
    make_monitor: MonitorFactory,
) -> None:
    """monitoring.history_size is the agent's: 4 targets of 400 points keep 100 each in memory; a window longer
    than a ring is answered from SQLite, for that target only."""
    pid = os.getpid()
    monitor = make_monitor(
        {
            "monitoring": {"history_size": 400},
            "targets": [{"pids": [pid], "name": name} for name in ("a", "b", "c")],
        }
    )
    await monitor.start_monitoring()
    try:
        assert {name: watch.history.size for name, watch in monitor.watches.items()} == dict.fromkeys(
            ("a", "b", "c", "host"), 100
        )
        for _ in range(3):
            await monitor.check_now()
        await monitor.recorder.flush()
        total, points = await monitor.history_window(time.time() - 86400, 1000, "b")
        assert total >= 3 and {point.target for point in points} == {"b"}
    finally:
        await monitor.stop_monitoring()
