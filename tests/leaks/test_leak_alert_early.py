"""A leak alert fires at detection, not after the tracemalloc window; the allocation site follows in one message.

A real service process (``leaking_service.py``: library mode, about 5 MB/s, a 10 s ``monitoring_window``, the
default 60 s tracemalloc window) notifies a real aiohttp webhook receiver on 127.0.0.1. The assertions are on the
order of events, not on durations.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.receivers import Receiver

SERVICE = Path(__file__).with_name("leaking_service.py")
LEAKY_LINE = 5
TRACE_WINDOW = 60.0
"""The default ``tracemalloc_window_seconds`` the service runs with."""
NATIVE_TRACE_WINDOW = 4.0
"""The ``tracemalloc_window_seconds`` of the ``native`` service."""
WAIT_FOR_SITE = 100.0
"""Bound on the wait for the site (generous: detection plus one whole tracemalloc window fits in it)."""


def names_the_site(body: Any) -> bool:
    """A webhook body that names an allocation site (the follow-up, or an alert carrying its sites)."""
    metadata = body.get("metadata", {}) if isinstance(body, dict) else {}
    return bool(metadata.get("top_sites")) or body.get("component") == "memory_leak_site"


def resolves_the_leak(body: Any) -> bool:
    """A webhook body resolving the leak alert."""
    return (
        isinstance(body, dict) and body.get("component") == "memory_leak" and body.get("state") == "resolved"
    )


async def run_service(
    tmp_path: Path, receiver: Receiver, kind: str = "python", until: Callable[[Any], bool] = names_the_site
) -> list[dict[str, Any]]:
    """Run the service until the receiver got a body ``until`` accepts (or the bound passed); its JSON lines."""
    stop = tmp_path / "stop"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SERVICE), kind, str(tmp_path), receiver.url + "/hook", str(stop), str(WAIT_FOR_SITE),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_SITE
        while loop.time() < deadline and process.returncode is None:
            if any(until(body) for body in receiver.bodies):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # a duplicate of the alert, were one sent, would arrive meanwhile
        stop.touch()
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-3000:]
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


@pytest.mark.timeout(180)
async def test_leak_alert_fires_at_detection_and_the_site_follows_in_one_message(tmp_path: Path) -> None:
    """5 MB/s with a 10 s window: the memory_leak alert reaches the webhook while allocations are still being
    traced, before the 60 s window would end; one follow-up then names leaky.py:5 after a window that ended
    early; the firing alert is updated in place (same id, sites in its metadata), never notified twice."""
    async with Receiver() as receiver:
        lines = await run_service(tmp_path, receiver)
    hooks = receiver.requests
    leak_hooks = [r for r in hooks if r.json["component"] == "memory_leak"]
    assert len(leak_hooks) == 1, [r.json for r in hooks]
    fired = leak_hooks[0].json
    assert fired["state"] == "firing"
    trace = fired["metadata"]["allocation_trace"]
    # Fired at detection: the trace had only begun, no site was known yet ...
    assert trace["state"] == "running" and "top_sites" not in fired["metadata"], fired
    # ... and the alert was received before the tracemalloc window could have ended.
    assert leak_hooks[0].at < trace["started_at"] + TRACE_WINDOW

    site_hooks = [r for r in hooks if r.json["component"] == "memory_leak_site"]
    assert len(site_hooks) == 1, [r.json for r in hooks]
    follow_up = site_hooks[0]
    assert hooks.index(follow_up) > hooks.index(leak_hooks[0])
    metadata = follow_up.json["metadata"]
    assert metadata["alert_id"] == fired["id"]
    assert metadata["site"].endswith(f"leaky.py:{LEAKY_LINE}"), metadata
    assert f"leaky.py:{LEAKY_LINE}" in follow_up.json["message"]
    done = metadata["allocation_trace"]
    assert done["state"] == "done" and done["ended"] == "early", done
    assert done["window_seconds"] < TRACE_WINDOW

    # The firing alert now carries the site, under its original id; /health/leaks shows the finished trace.
    end = lines[-1]
    assert end["event"] == "end"
    active = [a for a in end["active"] if a["component"] == "memory_leak"]
    assert [a["id"] for a in active] == [fired["id"]]
    assert active[0]["metadata"]["top_sites"][0]["site"].endswith(f"leaky.py:{LEAKY_LINE}")
    assert f"leaky.py:{LEAKY_LINE}" in active[0]["message"]
    assert active[0]["metadata"]["allocation_trace"]["state"] == "done"
    leaks = end["leaks"]
    assert leaks["profiling"] is False and leaks["alert_firing"] is True
    top = leaks["last_profile"]["sites"][0]
    assert (Path(top["file"]).name, top["line"]) == ("leaky.py", LEAKY_LINE)
    # Custom handlers saw the alert fire once; the follow-up is a notice that ends at once, silently.
    transitions = [(t["component"], t["state"]) for t in lines if t["event"] == "transition"]
    assert transitions.count(("memory_leak", "firing")) == 1
    assert ("memory_leak_site", "firing") in transitions and ("memory_leak_site", "resolved") in transitions
    assert not [r for r in hooks if r.json["state"] == "resolved"]


@pytest.mark.timeout(180)
async def test_trace_that_never_traces_enough_ends_within_the_configured_window(tmp_path: Path) -> None:
    """A leak in native memory (mmap, invisible to tracemalloc) never ends the trace early: it ends at the
    configured 4 s window, not past it, and the one follow-up says the growth is outside Python's allocators."""
    async with Receiver() as receiver:
        lines = await run_service(tmp_path, receiver, "native")
    hooks = [r.json for r in receiver.requests]
    assert [(h["component"], h["state"]) for h in hooks] == [
        ("memory_leak", "firing"),
        ("memory_leak_site", "firing"),
    ], hooks
    fired, follow_up = hooks
    assert fired["metadata"]["allocation_trace"]["state"] == "running"
    done = follow_up["metadata"]["allocation_trace"]
    assert done["ended"] == "window", done
    # Checks come every second: the trace ends at the last check before the 4 s would be exceeded.
    assert done["window_seconds"] <= NATIVE_TRACE_WINDOW, done
    assert "native memory" in follow_up["message"]
    assert follow_up["metadata"]["alert_id"] == fired["id"]
    end = lines[-1]
    assert end["leaks"]["profiling"] is False and end["leaks"]["allocation_trace"] is None


@pytest.mark.timeout(180)
async def test_leak_that_stops_during_the_trace_ends_it_without_a_follow_up(tmp_path: Path) -> None:
    """A native leak that stops once its alert fired: the alert resolves while allocations are traced (60 s
    window); that ends the trace at once, its sites go to /health/leaks only, and no site message is sent."""
    async with Receiver() as receiver:
        lines = await run_service(tmp_path, receiver, "native-stops", until=resolves_the_leak)
    hooks = [r.json for r in receiver.requests]
    assert [(h["component"], h["state"]) for h in hooks] == [
        ("memory_leak", "firing"),
        ("memory_leak", "resolved"),
    ], hooks
    assert hooks[0]["metadata"]["allocation_trace"]["state"] == "running"
    leaks = lines[-1]["leaks"]
    assert (
        leaks["alert_firing"] is False and leaks["profiling"] is False and leaks["allocation_trace"] is None
    )
    profile = leaks["last_profile"]
    assert profile is not None and profile["window_seconds"] < TRACE_WINDOW
    assert not [t for t in lines if t.get("component") == "memory_leak_site"]
