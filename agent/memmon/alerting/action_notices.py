"""Every memmon action is told to people with its result: one message per action, bursts coalesced.

An :class:`~memmon.model.ActionResult` (a restart, a worker recycle, a signal, an HTTP hook ...) becomes a *notice*:
an :class:`~memmon.model.Alert` with ``metadata["notice"] = True`` (see :mod:`memmon.alerting.kinds`), component
``action:<action name>``, published through the alert manager like any alert. Its message says what was done and
how it went: the worker's pid, how long it took to exit, what was freed (``detail["freed_bytes"]``), the error.

Rules, per (action, target):

* the first result is notified at once, and opens a coalescing window of ``interval`` seconds (the
  ``alerting.rate_limit_seconds``); results inside the window are counted, and when it closes one summary says
  what happened meanwhile ("recycled 37 workers of cgroup:/app since 10:00:01 UTC: 0 failed, freed 5400.0 MiB")
  and opens the next window. A window without results closes quietly. So 60 recycles a minute are 1 + one per
  interval messages, never 60.
* the first failure (or OOM-killed restart) of a window is notified at once too: a failing restart needs people;
  so is a result marked ``cannot_keep_up`` (restarts cannot keep up with the leak: the runner reports it once),
  with severity ``emergency``, whatever its outcome.
* a *skipped* action (cool-down, hourly cap, memory already lower) is never a message of its own while coalescing:
  it is counted in the next summary (a window holding only skips still ends with one). A *dry run* is told like
  a result ("dry run: would have run ...").
* with ``interval`` 0 nothing is coalesced: every result is its own message.
* a notice never stays firing: it is resolved (silently, see :mod:`memmon.alerting.kinds`: Alertmanager ends it,
  people get no "RESOLVED" message) when the next notice of the same action and target replaces it, or when its
  window closes, but not before ``linger_seconds`` (so that Alertmanager has the time to notify). Alertmanager
  also ends it by itself: a notice is never re-pushed.

Severity: ``warning`` for a done action or a dry run, ``critical`` for a failure, ``critical`` for a summary that
counts a failure, ``emergency`` for "cannot keep up". The limiter lets notices through untouched
(:meth:`NotificationLimiter.offer`): this module coalesces them. ``quiet_actions`` (default: the in-process gc, cache
clearing and throttle, whose results already travel in the metadata of the alert that triggered them) are not
notified.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from memmon.alerting.kinds import NOTICE, is_notice
from memmon.evaluation.evaluator import fingerprint
from memmon.kits.isotime import iso_utc
from memmon.model import MB, ActionResult, Alert, Level, frozen_mapping

ALERTNAME = "MemmonAction"
QUIET_ACTIONS = frozenset({"gc_cycles", "clear_caches", "throttle"})
_PIDS_KEPT = 20
_DETAIL_KEYS = (
    "pid", "master", "replaced_by", "exit_seconds", "replace_seconds", "reload_seconds", "signal", "signalled",
    "still_running", "unit", "exit_code", "status", "hook", "level", "level_after", "freed_bytes", "memory_before",
    "memory_after", "oom_kills", "unique_mib", "reason",
)  # fmt: skip
"""Keys of ``ActionResult.detail`` copied into the notice's metadata (``detail``) when present."""

Publish = Callable[[Sequence[Alert]], None]


def action_outcome(result: ActionResult) -> str:
    """``dry_run``, ``skipped``, ``oom_killed``, ``success`` or ``failure``: the same reading of a result as
    ``memmon.actions.runner.action_outcome`` (the alerting stage does not import the actions stage)."""
    for flag in ("dry_run", "skipped", "oom_killed"):
        if result.detail.get(flag):
            return flag
    return "success" if result.success else "failure"


def _mib(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return round(value / MB, 1)


def _seconds(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def _clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def _facts(detail: Mapping[str, object]) -> list[str]:
    """What the result's detail says happened: exit time, replacement, memory freed."""
    facts: list[str] = []
    exited = _seconds(detail.get("exit_seconds"))
    reloaded = _seconds(detail.get("reload_seconds"))
    if exited:
        facts.append(f"exited in {exited}")
    elif reloaded:
        facts.append(f"reloaded in {reloaded}")
    if detail.get("replaced_by") is not None:
        replaced = _seconds(detail.get("replace_seconds"))
        facts.append(f"replaced by pid {detail['replaced_by']}" + (f" in {replaced}" if replaced else ""))
    freed = _mib(detail.get("freed_bytes"))
    if freed is not None:
        facts.append(f"freed {freed} MiB")
    return facts


def notice_kind(result: ActionResult) -> str:
    """How a result is told: ``cannot_keep_up`` and ``failure`` (also an OOM-killed restart) at once, ``skipped``
    only counted while coalescing, ``done`` (a success or a dry run) at once when it opens a window."""
    if result.detail.get("cannot_keep_up"):
        return "cannot_keep_up"
    outcome = action_outcome(result)
    if outcome in ("failure", "oom_killed"):
        return "failure"
    return "skipped" if outcome == "skipped" else "done"


def describe(result: ActionResult, target: str) -> str:
    """One sentence: what memmon did to ``target`` and how it went, e.g. ``memmon recycled worker pid 4242 of
    cgroup:/app (SIGTERM): done, exited in 0.8 s, replaced by pid 4300 in 0.3 s, freed 152.0 MiB``."""
    outcome = action_outcome(result)
    detail = result.detail
    action = result.action
    error = result.error or "no reason given"
    if result.detail.get("cannot_keep_up"):
        return f"memmon on {target}: {error} ({action})"
    if outcome == "dry_run":
        level = detail.get("level")
        return f"dry run: memmon would have run {action} on {target}" + (f" (at {level})" if level else "")
    if outcome == "skipped":
        return f"memmon skipped {action} on {target}: {error}"
    how: list[str] = [action] if action.startswith("restart") else []
    if detail.get("signal") and action.startswith(("restart", "recycle")):
        how.append(str(detail["signal"]))
    via = f" ({', '.join(how)})" if how else ""
    if action.startswith("recycle"):
        pid = detail.get("pid")
        worker = "a worker" if pid is None else f"worker pid {pid}"
        done, failed = (
            f"memmon recycled {worker} of {target}{via}",
            f"memmon could not recycle {worker} of {target}{via}",
        )
    elif action.startswith("restart"):
        done, failed = f"memmon restarted {target}{via}", f"memmon could not restart {target}{via}"
    else:
        done, failed = f"memmon ran {action} on {target}", f"memmon's {action} on {target} failed"
    facts = _facts(detail)
    if outcome == "oom_killed":
        return f"{done} too late: {error}" + "".join(f"; {fact}" for fact in facts)
    if outcome == "failure":
        return f"{failed}: {error}" + "".join(f"; {fact}" for fact in facts)
    return f"{done}: done" + "".join(f", {fact}" for fact in facts)


@dataclass(slots=True)
class _Tally:
    """Results counted since the last message of one (action, target)."""

    since: float | None = None
    done: int = 0
    failed: int = 0
    skipped: int = 0
    dry_runs: int = 0
    freed_bytes: int = 0
    pids: list[int] = field(default_factory=list)
    last: ActionResult | None = None

    def add(self, result: ActionResult, at: float) -> None:
        outcome = action_outcome(result)
        self.since = at if self.since is None else self.since
        if outcome == "skipped":
            self.skipped += 1
        elif outcome == "dry_run":
            self.dry_runs += 1
        elif outcome == "success":
            self.done += 1
        else:
            self.failed += 1
        freed = result.detail.get("freed_bytes")
        if isinstance(freed, int) and not isinstance(freed, bool):
            self.freed_bytes += freed
        pid = result.detail.get("pid")
        if isinstance(pid, int) and len(self.pids) < _PIDS_KEPT:
            self.pids.append(pid)
        self.last = result

    @property
    def count(self) -> int:
        return self.done + self.failed + self.skipped + self.dry_runs


@dataclass(slots=True)
class _Key:
    """The state of one (action, target)."""

    notice: Alert | None = None
    window_end: float | None = None
    told: set[str] = field(default_factory=set)
    """The urgent kinds (``failure``, ``cannot_keep_up``) already told at once in the current window."""
    tally: _Tally = field(default_factory=_Tally)


class ActionNotices:
    """Turns action results into notices and publishes them (``publish``: the alert manager's, plus the alert log);
    not thread-safe: call it on the event loop. Timers (window ends, notice ends) run on the running loop; without
    one, call :meth:`flush` yourself."""

    def __init__(
        self,
        publish: Publish,
        *,
        interval: float,
        linger_seconds: float = 60.0,
        quiet_actions: Iterable[str] = QUIET_ACTIONS,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval < 0 or linger_seconds < 0:
            raise ValueError("interval and linger_seconds must not be negative")
        self.publish = publish
        self.interval = interval
        self.linger = linger_seconds
        self.quiet_actions = frozenset(quiet_actions)
        self.hostname = hostname or socket.gethostname()
        self.clock = clock
        self._keys: dict[tuple[str, str], _Key] = {}
        self._timer: asyncio.TimerHandle | None = None

    # -- intake ----------------------------------------------------------------------------------------------------

    def on_result(self, result: ActionResult, target: str) -> None:
        """Take one recorded result of an action on ``target`` (the sample's target label)."""
        if result.action in self.quiet_actions:
            return
        now = self.clock()
        out: list[Alert] = self._due(now)
        key = (result.action, target)
        state = self._keys.setdefault(key, _Key())
        kind = notice_kind(result)
        urgent = kind in ("failure", "cannot_keep_up") and kind not in state.told
        if self.interval > 0 and (kind == "skipped" or (state.window_end is not None and not urgent)):
            state.tally.add(result, now)
            if state.window_end is None:
                state.window_end = now + self.interval
        else:
            out += self._replace(state, self._single(result, target, now), now)
            state.told.add(kind)
            if self.interval > 0 and state.window_end is None:
                state.window_end = now + self.interval
        self._emit(out)
        self._schedule()

    # -- timers ----------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Send the summaries and end the notices that are due now (the timer calls this)."""
        self._timer = None
        self._emit(self._due(self.clock()))
        self._schedule()

    def _due(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        for (action, target), state in list(self._keys.items()):
            if state.window_end is not None and now >= state.window_end:
                if state.tally.count:
                    summary = self._summary(action, target, state.tally, now)
                    out += self._replace(state, summary, now)
                    state.tally = _Tally()
                    state.window_end = now + self.interval
                else:
                    state.window_end = None
                state.told.clear()
            notice = state.notice
            if state.window_end is None and notice is not None and now >= notice.started_at + self.linger:
                out.append(self._ended(notice, now))
                state.notice = None
            if state.window_end is None and state.notice is None:
                del self._keys[(action, target)]
        return out

    def _next_due(self) -> float | None:
        times = []
        for state in self._keys.values():
            if state.window_end is not None:
                times.append(state.window_end)
            elif state.notice is not None:
                times.append(state.notice.started_at + self.linger)
        return min(times, default=None)

    def _schedule(self) -> None:
        due = self._next_due()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the caller flushes
        self._timer = loop.call_later(max(0.0, due - self.clock()), self.flush)

    def close(self) -> None:
        """At shutdown: send what is still counted and end every notice (silently); cancels the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self.clock()
        out: list[Alert] = []
        for (action, target), state in self._keys.items():
            if state.tally.count:
                out += self._replace(state, self._summary(action, target, state.tally, now), now)
            if state.notice is not None:
                out.append(self._ended(state.notice, now))
        self._keys.clear()
        self._emit(out)

    def active_alerts(self) -> tuple[Alert, ...]:
        """The notices firing now (each ends by itself; not a condition to re-push)."""
        return tuple(state.notice for state in self._keys.values() if state.notice is not None)

    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        """After a restart: end (silently) the notices a previous run left firing; returns the other alerts."""
        others: list[Alert] = []
        ended: list[Alert] = []
        now = self.clock()
        for alert in alerts:
            if is_notice(alert):
                if alert.state == "firing":
                    ended.append(self._ended(alert, now))
            else:
                others.append(alert)
        self._emit(ended)
        return others

    # -- the notices -----------------------------------------------------------------------------------------------

    def _emit(self, alerts: list[Alert]) -> None:
        if alerts:
            self.publish(alerts)

    def _replace(self, state: _Key, notice: Alert, now: float) -> list[Alert]:
        out = [] if state.notice is None else [self._ended(state.notice, now)]
        state.notice = notice
        return [*out, notice]

    def _single(self, result: ActionResult, target: str, now: float) -> Alert:
        outcome = action_outcome(result)
        kind = notice_kind(result)
        severity = {"cannot_keep_up": Level.EMERGENCY, "failure": Level.CRITICAL}.get(kind, Level.WARNING)
        detail = {key: result.detail[key] for key in _DETAIL_KEYS if key in result.detail}
        metadata: dict[str, object] = {
            "outcome": outcome,
            "cannot_keep_up": kind == "cannot_keep_up",
            "results": 1,
            "failed": int(outcome in ("failure", "oom_killed")),
            "detail": detail,
            "duration_seconds": round(result.duration_seconds, 3),
            "error": result.error,
        }
        freed = _mib(result.detail.get("freed_bytes"))
        if freed is not None:
            metadata["freed_mb"] = freed
        return self._notice(result.action, target, severity, describe(result, target), metadata, now, result)

    def _summary(self, action: str, target: str, tally: _Tally, now: float) -> Alert:
        since = _clock_text(tally.since if tally.since is not None else now)
        attempts = tally.done + tally.failed
        last_error = None if tally.last is None else tally.last.error
        if attempts == 0 and tally.dry_runs == 0:
            message = f"memmon skipped {action} on {target} {_times(tally.skipped)} since {since}"
            message += f" (last: {last_error})" if last_error else ""
        else:
            if action.startswith("recycle"):
                head = f"recycled {attempts} worker{'' if attempts == 1 else 's'} of {target}"
            elif action.startswith("restart"):
                head = f"restarted {target} {_times(attempts)} ({action})"
            else:
                head = f"ran {action} on {target} {_times(attempts)}"
            facts = [f"{tally.failed} failed"]
            if tally.skipped:
                facts.append(f"{tally.skipped} skipped")
            if tally.dry_runs:
                facts.append(f"{tally.dry_runs} dry run{'' if tally.dry_runs == 1 else 's'}")
            if tally.freed_bytes:
                facts.append(f"freed {tally.freed_bytes / MB:.1f} MiB")
            message = f"memmon {head} since {since}: {', '.join(facts)}"
            if tally.failed and last_error:
                message += f" (last error: {last_error})"
        metadata: dict[str, object] = {
            "outcome": "summary",
            "results": attempts,
            "failed": tally.failed,
            "skipped": tally.skipped,
            "dry_runs": tally.dry_runs,
            "freed_mb": round(tally.freed_bytes / MB, 1),
            "since": iso_utc(tally.since),
            "pids": list(tally.pids),
            "error": last_error,
        }
        severity = Level.CRITICAL if tally.failed else Level.WARNING
        return self._notice(action, target, severity, message, metadata, now, tally.last)

    def _notice(
        self,
        action: str,
        target: str,
        severity: Level,
        message: str,
        extra: dict[str, object],
        now: float,
        result: ActionResult | None,
    ) -> Alert:
        component = f"action:{action}"
        after = None if result is None else _mib(result.detail.get("memory_after"))
        metadata: dict[str, object] = {
            NOTICE: True,
            "alertname": ALERTNAME,
            "action": action,
            **extra,
            "host": self.hostname,
        }
        return Alert(
            id=uuid.uuid4().hex,
            fingerprint=fingerprint(component, target, severity),
            severity=severity,
            component=component,
            target=target,
            state="firing",
            started_at=now,
            resolved_at=None,
            memory_usage=after if after is not None else 0.0,
            threshold=0.0,
            message=message,
            metadata=frozen_mapping(metadata),
        )

    @staticmethod
    def _ended(notice: Alert, now: float) -> Alert:
        return replace(
            notice,
            state="resolved",
            resolved_at=max(now, notice.started_at),
            message=f"RESOLVED: notice ended ({notice.message})",
        )


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
