"""AllocationProfiler: a tracemalloc window names the leaking line, in real interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import memmon
from memmon.sampling.allocations import AllocationProfiler

MEMMON_DIR = str(Path(memmon.__file__).resolve().parent)
LEAKS = 40
BUFFER = 100_000

# Line 5 keeps every buffer it makes (the leak); churn() allocates as much and frees it on return.
LEAKY = '''"""A module that leaks on line 5."""
KEPT = []

def leak():
    KEPT.append(bytearray(100_000))

def churn():
    return [bytes(1000) for _ in range(100)] + [str(i) * 5 for i in range(1000)]
'''

# argv: directory of leaky.py, number of leaks, "own" or "shared" (tracemalloc already on, with leaks made
# before the window that must not count). leaky and fractions are imported inside the window (importlib's
# work), and a memmon call made inside it keeps its result alive (memmon's own work): neither may show.
DRIVER = """
import dataclasses, json, os, sys, tracemalloc
directory, times, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, directory)
if mode == "shared":
    tracemalloc.start(1)
    import leaky
    for _ in range(times):
        leaky.leak()
from memmon.sampling.allocations import AllocationProfiler
from memmon.sampling.mappings import read_mappings
profiler = AllocationProfiler(frames=5, top=10)
assert profiler.start() and profiler.active and not profiler.start()
import leaky, fractions
kept = [read_mappings(os.getpid(), top=50)]
def run():
    for _ in range(times):
        leaky.leak()
        leaky.churn()
run()
report = profiler.finish()
print(json.dumps({"report": dataclasses.asdict(report), "tracing_after": tracemalloc.is_tracing(),
                  "active_after": profiler.active}))
"""


def run_driver(tmp_path: Path, mode: str) -> dict[str, Any]:
    (tmp_path / "leaky.py").write_text(LEAKY)
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), str(LEAKS), mode],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def assert_names_the_leak(report: dict[str, Any], tmp_path: Path) -> None:
    leaky = str(tmp_path / "leaky.py")
    top = report["sites"][0]
    assert (top["file"], top["line"]) == (leaky, 5), report["sites"][:3]
    assert abs(top["size_bytes"] - LEAKS * BUFFER) <= 0.2 * LEAKS * BUFFER
    # tracemalloc counts blocks: a bytearray is two (object + buffer); +1 for KEPT's item array when it was
    # first allocated inside the window.
    assert 2 * LEAKS <= top["count"] <= 2 * LEAKS + 1
    assert top["traceback"][-1] == f"{leaky}:5 in leak"
    for site in report["sites"]:
        assert not site["file"].startswith(MEMMON_DIR), site
        assert "importlib" not in site["file"], site
        assert not any(frame.startswith((MEMMON_DIR, "<frozen importlib")) for frame in site["traceback"]), (
            site
        )
    assert report["traced_bytes"] >= top["size_bytes"]
    assert report["taken_at"] >= report["started_at"]


def test_window_names_the_leaking_line_and_stops_tracing(tmp_path: Path) -> None:
    """Own trace: the top site is leaky.py:5 with ~N x 100 kB, 5 frames ending in leak(); tracing is off after."""
    output = run_driver(tmp_path, "own")
    report = output["report"]
    leaky = str(tmp_path / "leaky.py")
    assert_names_the_leak(report, tmp_path)
    assert report["frames"] == 5
    # python -c code has no source file to name its functions from: "<string>:N in ?".
    assert [frame.split(":")[0] for frame in report["sites"][0]["traceback"]] == [
        "<string>",
        "<string>",
        leaky,
    ]
    assert "ms" in report["overhead_note"]
    assert output["tracing_after"] is False
    assert output["active_after"] is False


def test_shared_trace_reports_only_the_window_and_stays_on(tmp_path: Path) -> None:
    """Tracing already on (1 frame, leaks before the window): only the window's leaks count, tracing stays on."""
    output = run_driver(tmp_path, "shared")
    report = output["report"]
    assert_names_the_leak(report, tmp_path)
    assert report["frames"] == 1
    assert report["sites"][0]["traceback"] == [f"{tmp_path / 'leaky.py'}:5 in leak"]
    assert "shared" in report["overhead_note"]
    assert output["tracing_after"] is True


@pytest.fixture
def tracing_off() -> Iterator[None]:
    """This process does not trace before the test, and tracing is stopped after it whatever happened."""
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already on in the test process")
    try:
        yield
    finally:
        tracemalloc.stop()


@pytest.mark.usefixtures("tracing_off")
def test_snapshot_now_runs_one_window_with_the_given_sleep() -> None:
    """snapshot_now(seconds, sleep) starts, sleeps once for that long, finishes; the clock dates the window."""
    ticks = iter([100.0, 160.0])
    slept: list[tuple[float, bool]] = []
    profiler = AllocationProfiler(frames=3, top=2, clock=lambda: next(ticks))
    report = profiler.snapshot_now(
        60.0, sleep=lambda seconds: slept.append((seconds, tracemalloc.is_tracing()))
    )
    assert slept == [(60.0, True)]
    assert (report.started_at, report.taken_at, report.window_seconds) == (100.0, 160.0, 60.0)
    assert report.frames == 3
    assert len(report.sites) <= 2
    assert not tracemalloc.is_tracing()
    assert not profiler.active


@pytest.mark.usefixtures("tracing_off")
def test_misuse_is_refused_and_a_failed_sleep_stops_tracing() -> None:
    """finish() without a window raises; a second start() is False; sleep raising still stops tracing."""
    profiler = AllocationProfiler()
    with pytest.raises(RuntimeError):
        profiler.finish()
    assert profiler.start()
    assert profiler.started_at is not None
    assert not profiler.start()
    with pytest.raises(RuntimeError):
        profiler.snapshot_now(1.0)
    profiler.finish()
    assert not tracemalloc.is_tracing()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profiler.snapshot_now(5.0, sleep=interrupted)
    assert not tracemalloc.is_tracing()
    assert not profiler.active
    with pytest.raises(ValueError):
        AllocationProfiler(frames=0)
