"""AllocationProfiler ends a window early: ``traced_growth()`` and ``finish_if()``, in real interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LEAKY = '''"""Line 5 keeps every buffer."""
KEPT = []

def leak(times):
    KEPT.extend(bytearray(100_000) for _ in range(times))
'''

# argv: directory of leaky.py, "own" or "shared" (tracemalloc already on, 3 MB kept before the window).
DRIVER = """
import dataclasses, json, sys, tracemalloc
directory, mode = sys.argv[1], sys.argv[2]
sys.path.insert(0, directory)
import leaky
if mode == "shared":
    tracemalloc.start(1)
    leaky.leak(30)
from memmon.sampling.allocations import AllocationProfiler
profiler = AllocationProfiler(frames=3)
out = {"growth_before": profiler.traced_growth()}
assert profiler.start()
leaky.leak(20)
out["growth_2mb"] = profiler.traced_growth()
out["early_2mb"] = profiler.finish_if(5_000_000) is not None
out["open_after_no"] = [profiler.active, tracemalloc.is_tracing()]
leaky.leak(40)
report = profiler.finish_if(5_000_000)
out["report"] = None if report is None else dataclasses.asdict(report)
out["open_after_yes"] = [profiler.active, tracemalloc.is_tracing()]
out["growth_after"] = profiler.traced_growth()
print(json.dumps(out))
"""


def run(tmp_path: Path, mode: str) -> dict[str, Any]:
    (tmp_path / "leaky.py").write_text(LEAKY)
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), mode],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


@pytest.mark.parametrize("mode", ["own", "shared"])
def test_window_stays_open_until_its_top_site_holds_enough(tmp_path: Path, mode: str) -> None:
    """traced_growth counts only what the window added (0 when closed); finish_if keeps tracing while the top
    site holds less than asked (2 MB of 5 MB), and closes with the report once it holds more (6 MB)."""
    out = run(tmp_path, mode)
    assert out["growth_before"] == 0
    # 20 x 100 kB kept since the window opened (the 3 MB kept before it, in a shared trace, do not count).
    assert 2_000_000 <= out["growth_2mb"] < 3_000_000
    assert out["early_2mb"] is False and out["open_after_no"] == [True, True]
    report = out["report"]
    assert report is not None
    top = report["sites"][0]
    assert (Path(top["file"]).name, top["line"]) == ("leaky.py", 5)
    assert 6_000_000 <= top["size_bytes"] < 7_000_000
    # Tracing stops when the profiler started it; a shared trace is left on.
    assert out["open_after_yes"] == [False, mode == "shared"]
    assert out["growth_after"] == 0


# Drives LeakWatch with a synthetic 5 MB/s series, one check per second, check_interval 5 s and a 2 s
# tracemalloc window (a check interval as long as the window): prints what each check returned.
WATCH_DRIVER = """
import json
from memmon.config import load_settings
from memmon.leakwatch import LeakWatch
from memmon.model import MB, Evaluation, Level
from memmon.telemetry import Telemetry
from tests.samples import process_sample
settings = load_settings(None, overrides={"monitoring": {
    "check_interval": 5, "enable_tracemalloc": True,
    "leak_detection": {"enabled": True, "monitoring_window": 10, "tracemalloc_window_seconds": 2},
}}, environ={})
recorded = []
watch = LeakWatch(settings, Telemetry(), in_process=True, target_pids=lambda: (), record=recorded.extend)
checks = []
for second in range(40):
    sample = process_sample(100 + 5 * second, at=1000.0 + second)
    alerts = watch.on_evaluation(Evaluation(sample, Level.OK, Level.OK, (), (), ()), None)
    checks.append([
        {"component": a.component, "state": a.state, "id": a.id, "trace": a.metadata.get("allocation_trace"),
         "alert_id": a.metadata.get("alert_id")}
        for a in alerts
    ])
print(json.dumps({"checks": [c for c in checks if c],
                  "recorded": [{"id": a.id, "trace": a.metadata["allocation_trace"], "message": a.message,
                                "has_sites": "top_sites" in a.metadata} for a in recorded],
                  "report": watch.report()["allocation_trace"]}))
"""


def test_window_is_judged_from_the_check_after_the_one_that_opened_it() -> None:
    """With check_interval >= the tracemalloc window, the check that detects the leak fires the alert with a
    running trace, and the next check ends the trace ("window"): one follow-up, the alert updated and recorded."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", WATCH_DRIVER],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    fired, follow_up = out["checks"][:2]
    assert [(a["component"], a["state"]) for a in fired] == [("memory_leak", "firing")]
    assert fired[0]["trace"]["state"] == "running"
    assert [(a["component"], a["state"]) for a in follow_up] == [
        ("memory_leak_site", "firing"),
        ("memory_leak_site", "resolved"),
    ]
    assert follow_up[0]["trace"]["ended"] == "window" and follow_up[0]["alert_id"] == fired[0]["id"]
    assert len(out["checks"]) == 2  # nothing more while the leak goes on: the alert keeps firing, updated
    (updated,) = out["recorded"]
    assert updated["id"] == fired[0]["id"] and updated["has_sites"] and updated["trace"]["state"] == "done"
    assert "tracing allocations" not in updated["message"]
    assert out["report"] is None
