"""An observed kernel OOM kill is an alert of its own (component ``oom_kill``, severity emergency).

The signal is the cgroup's OOM-kill counter (``CgroupSample.oom_kill_count``: v2 ``memory.events`` ``oom_kill``,
v1 ``memory.oom_control`` ``oom_kill``): when it rises between two checks, the kernel killed that many processes
in the cgroup. Without a counter (no cgroup, or a kernel before 4.13), a kill the kernel log names for one of the
watched processes counts instead.

The victim comes from the kernel log when it is readable (:class:`memmon.sampling.kernel_log.KernelLog`: the
``Killed process <pid> (<comm>)`` record, matched to the watched cgroup by its ``task_memcg``, or by its pid being
a watched process when the kernel rate-limited the record naming the cgroup), else it is guessed:
the process that vanished since the previous check with the largest RSS ("probably pid X (name, N MiB), gone since
the previous check").

The alert's life: it fires at the first kill; further kills while it fires update its count, victims and message
in place (:meth:`OomKillWatch.active_alerts`, so Alertmanager's re-push carries them) without a new notification;
it resolves once ``quiet_seconds`` pass without another kill, and its resolution says how many kills there were.
A counter that goes down, or another cgroup path, is a recreated or different cgroup: a new baseline, not a kill.
"""

from __future__ import annotations

import collections
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

from memmon.evaluation.evaluator import fingerprint
from memmon.kits.isotime import iso_utc
from memmon.model import MB, Alert, Evaluation, Level, MemorySample, ProcessMemory, frozen_mapping
from memmon.sampling.kernel_log import KernelLog, OomKill

COMPONENT = "oom_kill"
ALERTNAME = "MemmonOomKill"
_VICTIMS_KEPT = 10
"""At most this many victims are listed in one alert's metadata (the count goes on)."""


UNCLAIMED_SECONDS = 5.0
"""A kernel record that no counter rise claimed within this long belongs to nothing memmon counts."""


class OomKillSource(Protocol):
    """Where the kernel's OOM kill records come from (:class:`KernelLog` in production)."""

    def read_oom_kills(self) -> list[OomKill]:
        """The kills logged since the previous call; never blocks."""
        ...

    @property
    def available(self) -> bool:
        """Whether the log can be read (else victims are guessed)."""
        ...


def _in_cgroup(memcg: str | None, path: str) -> bool:
    if memcg is None:
        return False
    return path == "/" or memcg == path or memcg.startswith(path.rstrip("/") + "/")


class OomKillWatch:
    """Turns OOM kills observed in each check into one alert per episode; not thread-safe (the check loop owns it).

    ``kernel_log`` names the victims (default: ``/dev/kmsg``, opened at the first check); ``quiet_seconds`` without
    another kill resolve the alert.
    """

    def __init__(
        self,
        *,
        quiet_seconds: float = 300.0,
        kernel_log: OomKillSource | None = None,
        hostname: str | None = None,
        record_wait_seconds: float = 0.02,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if quiet_seconds <= 0:
            raise ValueError("quiet_seconds must be positive")
        self.quiet_seconds = quiet_seconds
        self.record_wait_seconds = record_wait_seconds
        self.sleep = sleep
        self.kernel_log: OomKillSource = kernel_log if kernel_log is not None else KernelLog()
        self.hostname = hostname or socket.gethostname()
        self.alert: Alert | None = None
        self._baseline: tuple[str, int] | None = None
        """(cgroup path, oom_kill counter) as of the previous check that read it."""
        self._previous: dict[int, ProcessMemory] = {}
        self._kills = 0
        self._first_kill_at = 0.0
        self._last_kill_at = 0.0
        self._victims: collections.deque[dict[str, object]] = collections.deque(maxlen=_VICTIMS_KEPT)
        self._unclaimed: list[tuple[float, OomKill]] = []
        """(monotonic time read, record) of kills logged before the counter showed them."""

    # -- each check ----------------------------------------------------------------------------------------------

    def on_evaluation(self, evaluation: Evaluation) -> tuple[Alert, ...]:
        """Feed one check; the transitions it causes (a firing on the first kill, a resolution after the quiet
        period; further kills update the firing alert without a transition)."""
        sample = evaluation.sample
        now = sample.timestamp
        fresh = [kill for kill in self.kernel_log.read_oom_kills() if self._ours(kill, sample)]
        kills = self._counted(sample, fresh)
        # A record read before this check's counter showed its kill (the sample was taken a moment earlier)
        # waits here for the check that counts it.
        horizon = time.monotonic() - UNCLAIMED_SECONDS
        logged = [kill for at, kill in self._unclaimed if at >= horizon] + fresh
        self._unclaimed.clear()
        transitions: tuple[Alert, ...] = ()
        if kills > 0 and not logged and self.kernel_log.available:
            logged = self._await_record(sample)
        if kills > 0:
            victims = self._victims_of(kills, logged, sample)
            transitions = self._killed(kills, victims, sample, now)
        elif logged and self.alert is not None and self._guessed_last():
            self._relabel(logged, sample)  # the kernel's record came after the counter: name the real victim
        elif logged:
            read_at = time.monotonic()
            self._unclaimed.extend((read_at, kill) for kill in logged[-_VICTIMS_KEPT:])
        elif self.alert is not None and now - self._last_kill_at >= self.quiet_seconds:
            transitions = (self._resolve(sample, now),)
        if sample.process is not None:
            self._previous = {p.pid: p for p in sample.process.processes}
        return transitions

    def _await_record(self, sample: MemorySample) -> list[OomKill]:
        """The kernel counts the kill before it logs it (mm/oom_kill.c ``__oom_kill_process``: the memcg event,
        SIGKILL, then ``pr_err("Killed process ...")``), and a check woken by the counter can fall in between: wait
        up to ``record_wait_seconds`` (microseconds in practice) so that the first message names the victim."""
        deadline = time.monotonic() + self.record_wait_seconds
        while time.monotonic() < deadline:
            self.sleep(0.002)
            logged = [kill for kill in self.kernel_log.read_oom_kills() if self._ours(kill, sample)]
            if logged:
                return logged
        return []

    def _ours(self, kill: OomKill, sample: MemorySample) -> bool:
        if sample.cgroup is not None and (kill.memcg is not None or kill.oom_memcg is not None):
            return _in_cgroup(kill.memcg, sample.cgroup.path) or _in_cgroup(
                kill.oom_memcg, sample.cgroup.path
            )
        return kill.pid in self._previous

    def _counted(self, sample: MemorySample, logged: list[OomKill]) -> int:
        """Kills since the previous check: the counter's rise, or (without a counter) the logged kills of watched
        processes."""
        cgroup = sample.cgroup
        if cgroup is None or cgroup.oom_kill_count is None:
            return sum(1 for kill in logged if kill.pid in self._previous)
        count = cgroup.oom_kill_count
        baseline, self._baseline = self._baseline, (cgroup.path, count)
        if baseline is None or baseline[0] != cgroup.path or count < baseline[1]:
            return 0  # first reading, another cgroup, or a recreated one (the counter starts again at 0)
        return count - baseline[1]

    def _victims_of(self, kills: int, logged: list[OomKill], sample: MemorySample) -> list[dict[str, object]]:
        if logged:
            return [_logged_victim(kill) for kill in logged[-kills:]]
        current = {p.pid for p in sample.process.processes} if sample.process is not None else set()
        gone = [p for pid, p in self._previous.items() if pid not in current]
        if sample.process is None or not gone:
            return []
        top = max(gone, key=lambda p: p.rss_bytes)
        return [
            {"pid": top.pid, "name": top.name, "rss_mb": round(top.rss_bytes / MB, 1), "source": "vanished"}
        ]

    def _guessed_last(self) -> bool:
        return not self._victims or self._victims[-1].get("source") != "kernel_log"

    # -- the alert -----------------------------------------------------------------------------------------------

    def _killed(
        self, kills: int, victims: list[dict[str, object]], sample: MemorySample, now: float
    ) -> tuple[Alert, ...]:
        if self.alert is None:
            self._kills, self._first_kill_at = 0, now
            self._victims.clear()
        self._kills += kills
        self._last_kill_at = now
        self._victims.extend(victims)
        updated = self._build(sample, now)
        first = self.alert is None
        self.alert = updated
        return (updated,) if first else ()

    def _relabel(self, logged: list[OomKill], sample: MemorySample) -> None:
        if self._victims:
            self._victims.pop()
        self._victims.append(_logged_victim(logged[-1]))
        assert self.alert is not None
        self.alert = self._build(sample, self.alert.started_at)

    def _build(self, sample: MemorySample, now: float) -> Alert:
        where = f"cgroup {sample.cgroup.path}" if sample.cgroup is not None else sample.target
        victim = victim_text(self._victims[-1] if self._victims else None)
        if self._kills == 1:
            message = f"OOM KILL: the kernel's OOM killer killed {victim} in {where}"
        else:
            message = (
                f"OOM KILL: {self._kills} kernel OOM kills in {where} since {iso_utc(self._first_kill_at)}; "
                f"the last killed {victim}"
            )
        metadata: dict[str, object] = {
            "alertname": ALERTNAME,
            "oom_kills": self._kills,
            "victims": list(self._victims),
            "first_kill_at": iso_utc(self._first_kill_at),
            "last_kill_at": iso_utc(self._last_kill_at),
            "last_kill_epoch": self._last_kill_at,
            "quiet_seconds": self.quiet_seconds,
            "limit_source": sample.limit_source,
            "host": self.hostname,
        }
        if sample.cgroup is not None:
            metadata["cgroup"] = sample.cgroup.path
            metadata["oom_kill_count"] = sample.cgroup.oom_kill_count
        usage = 0.0 if sample.target_bytes is None else sample.target_bytes / MB
        current = self.alert
        return Alert(
            id=uuid.uuid4().hex if current is None else current.id,
            fingerprint=fingerprint(COMPONENT, sample.target, Level.EMERGENCY),
            severity=Level.EMERGENCY,
            component=COMPONENT,
            target=sample.target,
            state="firing",
            started_at=now if current is None else current.started_at,
            resolved_at=None,
            memory_usage=round(usage, 1),
            threshold=round(sample.effective_limit_bytes / MB, 1),
            message=message,
            metadata=frozen_mapping(metadata),
        )

    def _resolve(self, sample: MemorySample, now: float) -> Alert:
        alert = self.alert
        assert alert is not None
        self.alert = None
        count = alert.metadata.get("oom_kills", self._kills)
        usage = alert.memory_usage if sample.target_bytes is None else round(sample.target_bytes / MB, 1)
        return replace(
            alert,
            state="resolved",
            resolved_at=now,
            memory_usage=usage,
            message=(
                f"RESOLVED: oom_kill: no OOM kill for {self.quiet_seconds:g} s ({count} in all, the last at "
                f"{alert.metadata.get('last_kill_at')})"
            ),
        )

    # -- state -----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the kernel log (at shutdown); a later check opens it again, from its end."""
        closer = getattr(self.kernel_log, "close", None)
        if callable(closer):
            closer()

    def active_alerts(self) -> tuple[Alert, ...]:
        """The OOM kill alert firing now, if any."""
        return () if self.alert is None else (self.alert,)

    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Take back a firing ``oom_kill`` alert after a restart (it resolves after the quiet period counted from
        its last kill); returns the other alerts."""
        others: list[Alert] = []
        for alert in alerts:
            if alert.component != COMPONENT or alert.state != "firing":
                others.append(alert)
                continue
            self.alert = alert
            kills = alert.metadata.get("oom_kills")
            last = alert.metadata.get("last_kill_epoch")
            self._kills = kills if isinstance(kills, int) else 1
            self._first_kill_at = alert.started_at
            self._last_kill_at = float(last) if isinstance(last, int | float) else alert.started_at
            victims = alert.metadata.get("victims")
            self._victims.clear()
            if isinstance(victims, list):
                self._victims.extend(v for v in victims if isinstance(v, dict))
        return others


def victim_text(victim: dict[str, object] | None) -> str:
    """``pid 4242 (gunicorn, 160.0 MiB anon-rss)`` from the kernel log, ``probably pid 4242 (gunicorn, 150.0 MiB),
    gone since the previous check`` when guessed, ``an unknown process`` otherwise."""
    if victim is None:
        return "an unknown process (no kernel log record, no process vanished since the previous check)"
    rss = victim.get("rss_mb")
    if victim.get("source") == "kernel_log":
        size = "" if rss is None else f", {rss} MiB anon-rss"
        return f"pid {victim['pid']} ({victim['name']}{size})"
    return f"probably pid {victim['pid']} ({victim['name']}, {rss} MiB), gone since the previous check"


def _logged_victim(kill: OomKill) -> dict[str, object]:
    rss = None if kill.anon_rss_bytes is None else round(kill.anon_rss_bytes / MB, 1)
    return {"pid": kill.pid, "name": kill.name, "rss_mb": rss, "source": "kernel_log", "memcg": kill.memcg}
