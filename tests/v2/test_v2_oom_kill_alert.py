"""An observed kernel OOM kill on a real cgroup v2 kernel (User-Mode Linux, tests/v2/uml.py): the v2 counterpart
of tests/evaluation/test_oom_kills.py's real-kill tests, which need a cgroup v1 memory hierarchy.

On v2 the kill is counted in the cgroup's ``memory.events`` (``oom_kill``), not in v1's ``memory.oom_control``;
the victim comes from /dev/kmsg, or is guessed from the process that vanished since the previous check.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.v2.conftest import Uml

ROOT = Path(__file__).resolve().parents[2]

# Runs inside UML: the same steps as the v1 tests, with the same helpers, on a 48 MiB v2 cgroup.
PROBE = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from memmon.evaluation.oom_kills import OomKillWatch
from memmon.sampling.cgroup import CgroupSampler, cgroup_at
from memmon.sampling.kernel_log import KernelLog
from tests.evaluation.test_oom_kills import Victim, evaluation_of, real_sample

directory = Path(sys.argv[2])
results = {}
for mode in ("kernel_log", "vanished"):
    victim = Victim(directory)
    log = KernelLog() if mode == "kernel_log" else KernelLog(Path(sys.argv[3]) / "unreadable")
    oom = OomKillWatch(kernel_log=log, hostname="h1")
    sampler = CgroupSampler(cgroup_at(directory))
    before = real_sample(sampler, directory)
    first = oom.on_evaluation(evaluation_of(before))
    victim.leak_until_killed()
    alerts = oom.on_evaluation(evaluation_of(real_sample(sampler, directory)))
    log.close()
    results[mode] = {
        "log_available": log.available if mode == "kernel_log" else None,
        "version": before.cgroup.version,
        "first": len(first),
        "pid": victim.proc.pid,
        "rss_mb": round(before.process.processes[0].rss_bytes / 2**20, 1),
        "alerts": [
            {
                "component": a.component,
                "severity": a.severity.label,
                "state": a.state,
                "message": a.message,
                "oom_kills": a.metadata.get("oom_kills"),
                "victims": a.metadata.get("victims"),
            }
            for a in alerts
        ],
    }
Path(sys.argv[3], "result.json").write_text(json.dumps(results))
"""


def test_v2_real_oom_kill_fires_one_emergency_alert_naming_the_victim(uml: Uml) -> None:
    """On cgroup v2 a child OOM-killed between two checks fires one emergency oom_kill alert naming its pid and
    comm from the kernel log; with the kernel log unreadable, the vanished process is named as probable victim."""
    (uml.workdir / "probe.py").write_text(PROBE)
    result = uml(
        f"""
        cg="$CGROUP_ROOT/oomwatch"
        mkdir "$cg"
        echo 48M > "$cg/memory.max"
        echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
        "$PYTHON" probe.py {ROOT} "$cg" "$WORKDIR"
        """,
        timeout=180,
    )
    assert result.rc == 0, result.output
    results = json.loads((uml.workdir / "result.json").read_text())
    logged, vanished = results["kernel_log"], results["vanished"]
    assert logged["version"] == 2 and logged["log_available"] is True
    assert logged["first"] == 0 and vanished["first"] == 0
    (alert,) = logged["alerts"]
    pid = logged["pid"]
    assert (alert["component"], alert["severity"], alert["state"]) == ("oom_kill", "emergency", "firing")
    assert alert["message"].startswith(f"OOM KILL: the kernel's OOM killer killed pid {pid} (python")
    assert "in cgroup /oomwatch" in alert["message"]
    assert alert["oom_kills"] == 1
    (victim,) = alert["victims"]
    assert victim["pid"] == pid and victim["source"] == "kernel_log"
    (guess,) = vanished["alerts"]
    assert guess["message"].endswith(
        f"killed probably pid {vanished['pid']} (python, {vanished['rss_mb']} MiB), gone since the previous check "
        "in cgroup /oomwatch"
    )
