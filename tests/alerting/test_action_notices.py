"""Every memmon action is notified with its result: one message per action, a burst coalesced into summaries,
never left firing; through the real dispatcher to a webhook on 127.0.0.1 and a real Alertmanager."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from memmon.alerting.action_notices import ActionNotices, action_outcome, describe
from memmon.alerting.alertmanager import AlertmanagerChannel
from memmon.alerting.channel import Channel
from memmon.alerting.channelworker import Backoff
from memmon.alerting.dispatcher import AlertDispatcher
from memmon.alerting.manager import AlertManager
from memmon.alerting.ratelimit import NotificationLimiter
from memmon.alerting.spool import AlertSpool
from memmon.alerting.webhook import WebhookChannel
from memmon.model import MB, ActionResult, Alert, Level, frozen_mapping
from memmon.telemetry import Telemetry
from tests.alerting.conftest import get_json
from tests.alerting.receivers import Receiver
from tests.waiting import wait_until

W, C, E = Level.WARNING, Level.CRITICAL, Level.EMERGENCY


def recycle(pid: int, *, freed_mib: float = 150.0, error: str | None = None) -> ActionResult:
    """A worker recycle's result as the recycle strategy and the runner record it."""
    detail: dict[str, object] = {
        "signal": "SIGTERM",
        "pid": pid,
        "master": 100,
        "exit_seconds": 0.8,
        "replaced_by": pid + 1000,
        "replace_seconds": 0.3,
        "freed_bytes": int(freed_mib * MB),
    }
    return ActionResult(
        "recycle:worker", error is None, time.time(), 1.1, frozen_mapping(detail), error=error
    )


def restart(**detail: object) -> ActionResult:
    base: dict[str, object] = {"signal": "SIGTERM", "exit_seconds": 1.2, "freed_bytes": 312 * MB}
    return ActionResult("restart:signal", True, time.time(), 1.2, frozen_mapping({**base, **detail}))


def skipped(why: str) -> ActionResult:
    return ActionResult(
        "restart:signal", False, time.time(), 0.0, frozen_mapping({"skipped": True}), error=why
    )


class Published:
    """Collects what ActionNotices publishes (stands where the alert manager and the alert log are wired)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alerts: Any) -> None:
        self.alerts.extend(alerts)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "firing"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


# -- through the real dispatcher -------------------------------------------------------------------------------------


@pytest.fixture
async def delivery(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Builds (AlertManager, dispatcher) over the given channels, every level routed to all; closed afterwards."""
    started: list[AlertDispatcher] = []

    async def build(
        channels: dict[str, Channel], interval: float = 300.0
    ) -> tuple[AlertManager, AlertDispatcher]:
        telemetry = Telemetry()
        dispatcher = AlertDispatcher(
            channels,
            {level: tuple(channels) for level in (W, C, E)},
            AlertSpool(tmp_path / f"spool-{len(started)}.db"),
            telemetry,
            limiter=NotificationLimiter(interval),
            backoff=Backoff(0.05, 0.2),
        )
        await dispatcher.start()
        started.append(dispatcher)
        return AlertManager(telemetry, dispatcher=dispatcher), dispatcher

    yield build
    for dispatcher in started:
        await dispatcher.close(0.5)


async def test_a_burst_of_recycles_is_one_message_then_one_summary_per_interval(
    delivery: Callable[..., Any], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """60 worker recycles over about 1.5 s with a 0.5 s rate limit reach the webhook as the first recycle at
    once, then at most one summary per interval, counting all 60 and what they freed; no "RESOLVED" message
    ever (the notices end quietly) and the log says the same as the webhook."""
    manager, dispatcher = await delivery({"webhook": WebhookChannel(receiver.url + "/hook", timeout=2)})
    notices = ActionNotices(manager.publish, interval=0.5, linger_seconds=0.2, hostname="h1")
    caplog.set_level(logging.INFO, logger="memmon.alerts")
    started = time.monotonic()
    for index in range(60):
        notices.on_result(recycle(4000 + index), "cgroup:/app")
        await asyncio.sleep(0.025)
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.2)  # the last window closes with a summary; the next closes empty; the notice ends
    await wait_until(lambda: dispatcher.report()["webhook"].pending == 0)
    assert notices.active_alerts() == ()
    bodies = receiver.bodies
    assert all(body["state"] == "firing" for body in bodies)
    assert 3 <= len(bodies) <= 2 + int(elapsed / 0.5) + 1
    first, *summaries = bodies
    assert first["message"] == (
        "memmon recycled worker pid 4000 of cgroup:/app (SIGTERM): done, exited in 0.8 s, "
        "replaced by pid 5000 in 0.3 s, freed 150.0 MiB"
    )
    assert first["component"] == "action:recycle:worker" and first["severity"] == "warning"
    assert first["metadata"]["notice"] is True and first["metadata"]["detail"]["pid"] == 4000
    assert 1 + sum(body["metadata"]["results"] for body in summaries) == 60
    assert all(" since " in body["message"] and ": 0 failed, freed " in body["message"] for body in summaries)
    assert summaries[0]["message"].startswith("memmon recycled ")
    assert sum(body["metadata"]["freed_mb"] for body in summaries) == pytest.approx(59 * 150.0)
    logged = [r.getMessage() for r in caplog.records if r.name == "memmon.alerts"]
    assert logged == [body["message"] for body in bodies]


async def test_a_notice_is_active_in_alertmanager_then_ends(
    delivery: Callable[..., Any], alertmanager: str
) -> None:
    """A restart notice is an active MemmonAction alert in a real Alertmanager, and ends there once its window
    closes (it never stays firing)."""
    target = f"pid:{uuid.uuid4().hex[:8]}"
    channel = AlertmanagerChannel(alertmanager, instance="notices-test", repush_seconds=60)
    manager, _dispatcher = await delivery({"alertmanager": channel})
    notices = ActionNotices(manager.publish, interval=0.5, linger_seconds=0.5, hostname="h1")

    def active() -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"filter": f'target="{target}"', "active": "true"})
        return [
            a for a in get_json(f"{alertmanager}/api/v2/alerts?{query}") if a["status"]["state"] == "active"
        ]

    notices.on_result(restart(), target)
    await wait_until(lambda: len(active()) == 1)
    (alert,) = active()
    assert alert["labels"]["alertname"] == "MemmonAction"
    assert alert["labels"]["component"] == "action:restart:signal"
    assert alert["annotations"]["description"] == alert["annotations"]["summary"]
    assert alert["annotations"]["summary"].startswith(
        f"memmon restarted {target} (restart:signal, SIGTERM): done"
    )
    await wait_until(lambda: active() == [], within=10)


# -- the rules -------------------------------------------------------------------------------------------------------


def test_a_failure_inside_a_window_is_told_at_once_and_successes_are_summed() -> None:
    """Inside a coalescing window the first failure is a message at once (critical), later ones wait for the
    summary, which counts the failure and names the last error."""
    clock, published = Clock(), Published()
    notices = ActionNotices(published, interval=60.0, linger_seconds=10.0, hostname="h1", clock=clock)
    notices.on_result(recycle(1), "t")
    clock.now += 1
    notices.on_result(recycle(2), "t")
    clock.now += 1
    notices.on_result(recycle(3, error="worker 3 still running after 30s"), "t")
    clock.now += 1
    notices.on_result(recycle(4, error="worker 4 still running after 30s"), "t")
    fired = published.firing
    assert [(a.severity, a.message.split(":")[0]) for a in fired] == [
        (W, "memmon recycled worker pid 1 of t (SIGTERM)"),
        (C, "memmon could not recycle worker pid 3 of t (SIGTERM)"),
    ]
    assert fired[1].message.startswith("memmon could not recycle worker pid 3 of t (SIGTERM): worker 3 still")
    clock.now += 60
    notices.flush()
    summary = published.firing[-1]
    assert summary.severity is C and summary.metadata["results"] == 2 and summary.metadata["failed"] == 1
    assert summary.message.endswith(
        "1 failed, freed 300.0 MiB (last error: worker 4 still running after 30s)"
    )
    # Every notice replaced by the next was ended (silently) at that moment.
    ended = [a for a in published.alerts if a.state == "resolved"]
    assert [a.id for a in ended] == [fired[0].id, fired[1].id]


def test_skips_are_never_a_message_of_their_own_while_coalescing() -> None:
    """Skipped restarts (cool-down) are counted, not sent: a window of skips only ends with one summary."""
    clock, published = Clock(), Published()
    notices = ActionNotices(published, interval=30.0, linger_seconds=0.0, hostname="h1", clock=clock)
    for _ in range(3):
        notices.on_result(skipped("cool-down: restarted 12s ago"), "unit:app.service")
        clock.now += 5
    assert published.alerts == []
    clock.now += 30
    notices.flush()
    (summary,) = published.firing
    assert summary.message.startswith("memmon skipped restart:signal on unit:app.service 3 times since ")
    assert summary.message.endswith("(last: cool-down: restarted 12s ago)")


def test_without_a_rate_limit_every_result_is_its_own_message() -> None:
    """With interval 0 each result is a message at once (skips included), each ending the previous notice;
    the last ends after linger_seconds."""
    clock, published = Clock(), Published()
    notices = ActionNotices(published, interval=0.0, linger_seconds=5.0, hostname="h1", clock=clock)
    notices.on_result(restart(), "t")
    notices.on_result(skipped("3 restarts in the last hour (maximum)"), "t")
    notices.on_result(restart(), "t")
    assert len(published.firing) == 3 and len(notices.active_alerts()) == 1
    clock.now += 5
    notices.flush()
    assert notices.active_alerts() == ()
    assert [a.state for a in published.alerts].count("resolved") == 3


def test_dry_runs_and_quiet_actions() -> None:
    """A dry run is told as what would have been done; the in-process gc, cache and throttle actions (reported
    in their alert's metadata already) are not notified."""
    clock, published = Clock(), Published()
    notices = ActionNotices(published, interval=30.0, hostname="h1", clock=clock)
    dry = ActionResult(
        "restart:signal", True, clock.now, 0.0, frozen_mapping({"dry_run": True, "level": "emergency"})
    )
    notices.on_result(dry, "pid:42")
    for action in ("gc_cycles", "clear_caches", "throttle"):
        notices.on_result(ActionResult(action, True, clock.now, 0.01), "pid:42")
    (told,) = published.firing
    assert told.message == "dry run: memmon would have run restart:signal on pid:42 (at emergency)"
    assert told.metadata["outcome"] == "dry_run" and told.severity is W


def test_describe_says_what_was_done_for_each_kind_of_action() -> None:
    """Restart, OOM-killed restart, failed systemd restart, signal and HTTP hook results read as sentences."""
    assert describe(restart(), "pid:42") == (
        "memmon restarted pid:42 (restart:signal, SIGTERM): done, exited in 1.2 s, freed 312.0 MiB"
    )
    late = ActionResult(
        "restart:signal",
        False,
        0.0,
        1.0,
        frozen_mapping({"oom_killed": True, "signal": "SIGTERM"}),
        error="the kernel OOM killer struck first (1 kill(s) in the cgroup)",
    )
    assert action_outcome(late) == "oom_killed"
    assert describe(late, "cgroup:/app") == (
        "memmon restarted cgroup:/app (restart:signal, SIGTERM) too late: the kernel OOM killer struck first "
        "(1 kill(s) in the cgroup)"
    )
    systemd = ActionResult(
        "restart:systemd", False, 0.0, 0.5, frozen_mapping({"unit": "app.service"}), error="exit 5"
    )
    assert (
        describe(systemd, "unit:app.service")
        == "memmon could not restart unit:app.service (restart:systemd): exit 5"
    )
    hook = ActionResult("http_hook", True, 0.0, 0.1, frozen_mapping({"status": 200}))
    assert describe(hook, "pid:42") == "memmon ran http_hook on pid:42: done"
    signal = ActionResult("signal:SIGUSR1", False, 0.0, 0.0, error="no process to signal")
    assert describe(signal, "pid:42") == "memmon's signal:SIGUSR1 on pid:42 failed: no process to signal"


def test_close_sends_what_is_counted_and_restore_ends_leftover_notices() -> None:
    """At shutdown the pending count is sent as a summary and every notice is ended; after a restart, notices a
    previous run left firing are ended (silently) and other alerts are handed back."""
    clock, published = Clock(), Published()
    notices = ActionNotices(published, interval=60.0, hostname="h1", clock=clock)
    notices.on_result(recycle(1), "t")
    notices.on_result(recycle(2), "t")
    notices.close()
    first, summary = published.firing
    assert summary.metadata["results"] == 1
    assert {a.id for a in published.alerts if a.state == "resolved"} == {first.id, summary.id}
    later = Published()
    resumed = ActionNotices(later, interval=60.0, hostname="h1", clock=clock)
    other = replace_metadata(first, {})
    assert resumed.restore([first, other]) == [other]
    (ended,) = later.alerts
    assert (ended.id, ended.state) == (first.id, "resolved")


def replace_metadata(alert: Alert, metadata: dict[str, object]) -> Alert:
    """``alert`` with other metadata (a non-notice alert of the same shape)."""
    return replace(alert, component="process_memory", metadata=frozen_mapping(metadata))


def test_negative_intervals_are_refused() -> None:
    """A negative rate limit or linger is a programming error, refused at construction."""
    with pytest.raises(ValueError, match="negative"):
        ActionNotices(Published(), interval=-1.0)


def test_restarts_that_cannot_keep_up_are_an_emergency_told_at_once() -> None:
    """A result marked cannot_keep_up (the hourly cap reached during an emergency: a skip) is told at once as an
    emergency even inside a coalescing window, where an ordinary skip would only be counted."""
    clock, published = Clock(), Published()
    notices = ActionNotices(published, interval=300.0, hostname="h1", clock=clock)
    notices.on_result(recycle(1), "cgroup:/app")
    notices.on_result(skipped("cool-down: restarted 2s ago"), "cgroup:/app")
    why = "restarts cannot keep up: 3 failed or freed nothing in the last hour (max_restarts_per_hour 3)"
    capped = ActionResult(
        "recycle:worker",
        False,
        clock.now,
        0.0,
        frozen_mapping({"skipped": True, "cannot_keep_up": True}),
        error=why,
    )
    notices.on_result(capped, "cgroup:/app")
    first, alarm = published.firing
    assert first.severity is W and alarm.severity is E
    assert alarm.message == f"memmon on cgroup:/app: {why} (recycle:worker)"
    assert alarm.metadata["cannot_keep_up"] is True and alarm.metadata["outcome"] == "skipped"
