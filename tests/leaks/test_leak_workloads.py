"""Leak detection on real processes: a steady leak is reported with its allocation site; a sawtooth, a cache
filling to a cap and a one-off spike are not (time-compressed: a 6 s window)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import memmon

WORKLOAD = Path(__file__).with_name("workload.py")
LEAKY_LINE = 5


async def run(kind: str, state_dir: Path, seconds: float) -> tuple[list[dict[str, object]], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKLOAD), kind, str(state_dir), str(seconds),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), seconds + 30)
    assert process.returncode == 0, err.decode()[-2000:]
    lines = out.decode().splitlines()
    alerts = [json.loads(line) for line in lines if line.startswith("{")]
    return alerts, lines[-1]


def memmons_own(sites: list[dict[str, object]]) -> list[dict[str, object]]:
    """The sites in memmon's package directory: judged by that directory, not by a "memmon" substring, since the
    checkout's own path may contain the word (``git clone ... memmon``)."""
    package = Path(memmon.__file__).resolve().parent
    return [
        site for site in sites if Path(str(site["site"]).rsplit(":", 1)[0]).resolve().is_relative_to(package)
    ]


async def test_leak_is_named_and_steady_patterns_are_not_leaks(tmp_path: Path) -> None:
    """In separate processes: the leak fires one memory_leak alert and one follow-up naming leaky.py's line;
    sawtooth, cache and spike run three windows each and fire none."""
    kinds = ["leak", "sawtooth", "cache", "spike"]
    for kind in kinds:
        (tmp_path / kind).mkdir()
    results = await asyncio.gather(*(run(kind, tmp_path / kind, 18) for kind in kinds))
    outcome = dict(zip(kinds, results, strict=True))
    leak_lines, leak_done = outcome["leak"]
    leak_alerts = [line for line in leak_lines if line["component"] == "memory_leak"]
    follow_ups = [line for line in leak_lines if line["component"] == "memory_leak_site"]
    assert len(leak_alerts) == 1 and len(follow_ups) == 1, leak_lines
    sites = follow_ups[0]["metadata"]["top_sites"]
    assert sites[0]["site"].endswith(f"leaky.py:{LEAKY_LINE}"), sites
    assert "leaky.py" in str(follow_ups[0]["message"])
    assert not memmons_own(sites), sites
    assert leak_done == "done 1"
    for kind in ("sawtooth", "cache", "spike"):
        alerts, done = outcome[kind]
        assert alerts == [] and done == "done 0", (kind, alerts)
