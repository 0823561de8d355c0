"""Problem 9 of issue 12 with real gunicorn, a real memmon and a real webhook receiver on 127.0.0.1: a fast leak
answered by recycling sends a handful of messages, not dozens; a level change is one message; a kernel OOM kill
is an alert naming its victim; memmon's own recycles are notified."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.alerting.receivers import Receiver
from tests.prefork.agent import running_agent
from tests.prefork.servers import MIB, launch, leak_path, run_load, skip_unless_runnable


def _webhook(receiver: Receiver) -> dict[str, Any]:
    return {"alerting": {"webhook_url": f"{receiver.url}/hook", "delivery": {"backoff_max_seconds": 1}}}


async def _settle(receiver: Receiver, seconds: float = 2.0) -> list[dict[str, Any]]:
    """The bodies received once nothing has arrived for a moment (deliveries are asynchronous)."""
    count = -1
    while count != len(receiver.requests):
        count = len(receiver.requests)
        await asyncio.sleep(seconds)
    return [body for body in receiver.bodies if isinstance(body, dict)]


async def test_a_fast_leak_answered_by_recycling_sends_few_messages() -> None:
    """At 100 MB/s for 15 s the preset recycles workers many times, and the webhook gets a few messages (the
    first recycle at once, the rest coalesced; at most a warning and its resolution besides), none of them a
    "RESOLVED" sent for a level change, sizes in MiB."""
    skip_unless_runnable("gunicorn-sync")
    async with Receiver() as receiver:
        with launch("gunicorn-sync") as server:
            flags = ["--server", "gunicorn", "--pid", str(server.master_pid), "--cgroup", str(server.cgroup)]
            with running_agent(flags, config=_webhook(receiver)) as agent:
                load = await asyncio.to_thread(
                    run_load, server.port, rate=30, duration=15, path=leak_path(int(100 * MIB / 30))
                )
                bodies = await _settle(receiver)
                totals = await asyncio.to_thread(agent.action_totals)
    recycles = totals.get(("recycle:worker", "success"), 0)
    assert load.failed == 0 and recycles >= 5, (load.errors, totals)
    assert 1 <= len(bodies) <= 4, [body["message"] for body in bodies]
    notices = [b for b in bodies if b["component"] == "action:recycle:worker"]
    assert notices and "memmon recycled worker pid" in notices[0]["message"], bodies
    assert not [b for b in bodies if b["state"] == "resolved" and b["metadata"].get("replaced_by")]
    assert all(" MB" not in body["message"] for body in bodies)


async def test_a_kernel_oom_kill_is_an_alert_naming_its_victim() -> None:
    """With no restart strategy the kernel kills a leaking worker; the webhook gets an oom_kill alert naming the
    killed pid, and the escalation on the way there was one message per level (no resolve of the level left)."""
    skip_unless_runnable("gunicorn-sync")
    async with Receiver() as receiver:
        config = {
            **_webhook(receiver),
            "auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "none"}}},
        }
        with launch("gunicorn-sync") as server:
            flags = ["--server", "gunicorn", "--pid", str(server.master_pid), "--cgroup", str(server.cgroup)]
            with running_agent(flags, config=config):
                kills = server.oom_kills()
                path = leak_path(int(100 * MIB / 30))
                await asyncio.to_thread(run_load, server.port, rate=30, duration=12, path=path)
                bodies = await _settle(receiver)
                killed = server.oom_kills() - kills
    assert killed >= 1
    oom = [b for b in bodies if b["component"] == "oom_kill" and b["state"] == "firing"]
    assert len(oom) == 1, [b["message"] for b in bodies]
    assert oom[0]["severity"] == "emergency" and "OOM KILL" in oom[0]["message"]
    victims = oom[0]["metadata"]["victims"]
    assert victims and victims[0]["pid"] > 0 and victims[0]["source"] == "kernel_log", oom[0]
    levels = [b for b in bodies if b["component"] != "oom_kill" and not b["component"].startswith("action:")]
    assert not [b for b in levels if b["state"] == "resolved" and b["metadata"].get("replaced_by")]
    firing = [b["message"].split(":", 1)[0] for b in levels if b["state"] == "firing"]
    assert any("->" in head for head in firing), firing
