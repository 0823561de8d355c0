"""Alerts end to end on a real cgroup v2 kernel (User-Mode Linux, tests/v2/uml.py): the v2 counterpart of
tests/test_cgroup_alerts.py, which needs a cgroup v1 memory hierarchy.

A child in a 256 MiB v2 cgroup (``memory.max``) grows past 70 % and 85 % of it and frees again: the agent, watching
the cgroup, fires warning then critical and resolves both, judging the working set of ``memory.current``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.v2.conftest import Uml

ROOT = Path(__file__).resolve().parents[2]

# Runs inside UML with the same grower as the v1 test; prints the levels and the alert transitions as JSON.
PROBE = r"""
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from memmon.app import ProductionMemoryMonitor
from memmon.config import load_settings
from tests.test_cgroup_alerts import Grower

cgroup, workdir, state = sys.argv[2], Path(sys.argv[3]), sys.argv[4]


async def main() -> None:
    settings = load_settings(None, environ={}, overrides={
        "target": {"cgroup": cgroup},
        "monitoring": {"check_interval": 3600, "prometheus_port": 0},
        "server": {"health_port": 0},
        "storage": {"state_dir": state},
    })
    monitor = ProductionMemoryMonitor(settings=settings)
    received = []
    monitor.alert_manager.add_handler(received.append)
    grower = Grower(Path(cgroup))
    await monitor.start_monitoring()
    levels, versions = [], set()
    try:
        for mib in (40, 195, 225, 30):
            grower.hold(mib)
            evaluation = await monitor.check_now()
            levels.append(evaluation.level.label)
            versions.add(evaluation.sample.cgroup.version if evaluation.sample.cgroup else None)
        await monitor.alert_manager.drain(wait_seconds=2)
    finally:
        await monitor.stop_monitoring()
        grower.stop()
    limit = monitor.latest.sample.effective_limit_bytes
    transitions = [
        {"severity": a.severity.label, "state": a.state, "limit_source": a.metadata.get("limit_source"),
         "threshold": a.threshold}
        for a in received if a.component == "cgroup_memory"
    ]
    (workdir / "result.json").write_text(json.dumps(
        {"levels": levels, "versions": sorted(map(str, versions)), "limit": limit, "transitions": transitions}
    ))


asyncio.run(main())
"""


def test_v2_child_in_limited_cgroup_fires_and_resolves_alerts(uml: Uml) -> None:
    """Working set crossing 70 % then 85 % of a 256 MiB v2 limit fires warning then critical; freeing resolves."""
    (uml.workdir / "probe.py").write_text(PROBE)
    result = uml(
        f"""
        cg="$CGROUP_ROOT/app"
        mkdir "$cg"
        echo 256M > "$cg/memory.max"
        "$PYTHON" probe.py {ROOT} "$cg" "$WORKDIR" "$TMPDIR/memmon"
        """,
        timeout=180,
    )
    assert result.rc == 0, result.output
    data = json.loads((uml.workdir / "result.json").read_text())
    assert data["versions"] == ["2"] and data["limit"] == 256 << 20
    assert data["levels"] == ["ok", "warning", "critical", "ok"]
    states = [(t["severity"], t["state"]) for t in data["transitions"]]
    assert states == [
        ("warning", "firing"),
        ("warning", "resolved"),
        ("critical", "firing"),
        ("critical", "resolved"),
    ]
    critical = data["transitions"][2]
    assert critical["limit_source"] == "cgroup" and abs(critical["threshold"] - 0.85 * 256) <= 0.1
