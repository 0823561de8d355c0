"""The usage watcher: between two checks, re-read the one number that kills, paced by the headroom left.

cgroup v2 has no usage-threshold notification, v1's needs write access to ``cgroup.event_control``, and
containers see cgroupfs read-only (``../shared/PLATFORMS.md``). Reading the usage counter needs none of that.
The pace: at a read showing ``headroom`` bytes below the emergency line, the next read comes after
``headroom / worst_case_rate`` seconds, so a leak no faster than the worst case cannot cross the line unseen
between two reads; far from the line that is seconds (capped at ``max_interval``), near it milliseconds (floored
at ``min_interval``: a leak at the worst-case rate overshoots by at most ``min_interval * rate``).

A read that crosses a threshold upward, or falls back below the threshold it had crossed (by a little more
than the hysteresis, so that hovering does not fire at every read), calls ``on_crossing(reason)`` once: the
caller runs a full check at once. At or above the emergency line, raw usage may be page cache that the kernel
reclaims before it OOM-kills (v1 and v2 usage both count it): there the watcher subtracts ``inactive_file`` of
``memory.stat`` (the working set, as the thresholds judge it) and paces toward the limit itself.

The watcher is one daemon thread: it keeps reading while the event loop or the check thread is busy, and costs
one ``pread`` a read (measured in ``bench/usage_watch.py``). A source that cannot be opened or read (the cgroup
was removed, the process exited) is reported in ``problem`` and through ``on_crossing`` and re-opened by path
every ``retry_interval``: a cgroup recreated by a unit or container restart is watched again by itself.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from memmon.sampling.usage_gauge import CgroupUsage, Gauge, GaugeSpec, open_gauge

log = logging.getLogger("memmon.usage_watch")

_MIB = 1 << 20
_SHORT_PAUSE = 0.05


@dataclass(frozen=True)
class WatchPlan:
    """What the latest check asks the watcher to watch, and where the levels begin."""

    spec: GaugeSpec
    thresholds: tuple[int, ...]
    """Ascending byte values where a level may begin (in the gauge's terms)."""
    guard_bytes: int | None
    """The emergency line the pace protects; None: no emergency threshold applies (read every max_interval)."""
    limit_bytes: int | None
    """The limit that kills, paced toward once the line is crossed; None when unknown."""
    seen_bytes: int | None
    """What the latest check saw, in the watcher's terms (usage below the line, working set at or above)."""
    kernel_notifies: bool = False
    """The kernel signals these thresholds itself (cgroup v1 eventfds armed): read at the longest pause only, as
    a fallback (a watcher paced for the worst case would compete with the notified check for the interpreter:
    measured here, 1 ms later restarts at 1000 MB/s)."""


def hysteresis(threshold: int) -> int:
    """How far below a crossed threshold a read must fall to count as falling back: 1 % of it, at least 1 MiB."""
    return max(_MIB, threshold // 100)


class UsageWatcher:
    """Reads a gauge in a daemon thread, paced by headroom; ``on_crossing`` is called from that thread."""

    def __init__(
        self,
        on_crossing: Callable[[str], None],
        *,
        worst_case_bytes_per_second: float,
        min_interval: float = 0.002,
        max_interval: float = 1.0,
        retry_interval: float = 0.02,
        opener: Callable[[GaugeSpec], Gauge] = open_gauge,
    ) -> None:
        if not worst_case_bytes_per_second > 0:
            raise ValueError(f"worst-case rate must be > 0: {worst_case_bytes_per_second}")
        if not 0 < min_interval <= max_interval:
            raise ValueError(f"need 0 < min_interval <= max_interval: {min_interval}, {max_interval}")
        self._on_crossing = on_crossing
        self.rate = worst_case_bytes_per_second
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.retry_interval = retry_interval
        self._opener = opener
        self._lock = threading.Lock()
        self._plan: WatchPlan | None = None
        self._plan_version = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.problem: str | None = None
        """Why the gauge cannot be read now (None while it is read)."""
        self.reads = 0
        """Reads so far (the benchmark's count)."""
        self.interval = max_interval
        """The latest pause chosen, seconds."""

    def follow(self, plan: WatchPlan | None) -> None:
        """Watch by ``plan`` from the next read on (None: pause). Thread-safe; call after every check."""
        with self._lock:
            changed = self._plan is None or plan is None or self._plan.spec != plan.spec
            self._plan = plan
            self._plan_version += 1
        if changed:
            self._wake.set()

    def start(self) -> None:
        """Start the thread (again after ``stop()``: a monitor restarted in-process)."""
        if self._thread is None:
            self._stopping = False
            self._wake.clear()
            self._thread = threading.Thread(target=self._run, name="memmon-usage-watch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread and close the gauge. Idempotent."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the thread --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        gauge: Gauge | None = None
        band = 0
        version = -1
        try:
            while not self._stopping:
                with self._lock:
                    plan, plan_version = self._plan, self._plan_version
                if plan is None:
                    _close(gauge)
                    gauge = None
                    self._pause(self.max_interval)
                    continue
                if gauge is None or gauge.spec != plan.spec:
                    _close(gauge)
                    gauge = None
                    try:
                        gauge = self._opener(plan.spec)
                    except OSError as exc:
                        self._failed(f"cannot open {_describe(plan.spec)}: {exc.strerror or exc}")
                        self._pause(self.retry_interval)
                        continue
                    if self.problem is not None:  # back (a recreated cgroup): a check re-arms the rest on it
                        log.info("usage watch: %s readable again", _describe(plan.spec))
                        self.problem = None
                        self._crossing("usage source back")
                if plan_version != version:
                    version = plan_version
                    band = self._rebase(plan, band)
                try:
                    value, from_stat = self._read(gauge, plan)
                except ProcessLookupError as exc:
                    self._crossing(f"usage source changed: {exc}")
                    continue
                except (OSError, ValueError) as exc:
                    _close(gauge)
                    gauge = None
                    self._failed(f"{_describe(plan.spec)}: {getattr(exc, 'strerror', None) or exc}")
                    self._pause(self.retry_interval)
                    continue
                band = self._judge(plan, band, value)
                interval = self._interval(plan, value)
                self._pause(max(interval, 0.01) if from_stat else interval)
        finally:
            _close(gauge)

    def _read(self, gauge: Gauge, plan: WatchPlan) -> tuple[int, bool]:
        """(the value judged, whether memory.stat was read): usage, or the working set at or above the line."""
        usage = gauge.read()
        self.reads += 1
        if plan.guard_bytes is None or usage < plan.guard_bytes:
            return usage, False
        return max(0, usage - gauge.inactive_file_bytes()), True

    def _rebase(self, plan: WatchPlan, band: int) -> int:
        """The band after a check: what the check saw, unless the check saw a value just under a threshold the
        watcher had seen crossed (within hysteresis): hovering there must not run a check at every read."""
        seen = plan.seen_bytes or 0
        fresh = bisect.bisect_right(plan.thresholds, seen)
        if fresh < band <= len(plan.thresholds):
            crossed = plan.thresholds[band - 1]
            if seen >= crossed - hysteresis(crossed):
                return band
        return fresh

    def _judge(self, plan: WatchPlan, band: int, value: int) -> int:
        """The band after this read; a crossing up (or back down, past hysteresis) calls ``on_crossing``."""
        thresholds = plan.thresholds
        now = bisect.bisect_right(thresholds, value)
        if now > band:
            self._crossing(f"usage crossed {thresholds[now - 1]}")
            return now
        if now < band and value < thresholds[band - 1] - hysteresis(thresholds[band - 1]):
            self._crossing(f"usage fell below {thresholds[band - 1]}")
            return now
        return band

    def _interval(self, plan: WatchPlan, value: int) -> float:
        """Seconds until the next read: the time the worst-case leak needs to reach the next line."""
        line = plan.guard_bytes
        if plan.kernel_notifies:
            line = None
        elif line is not None and value >= line:
            line = plan.limit_bytes if plan.limit_bytes is not None and value < plan.limit_bytes else None
        if line is None:
            interval = self.max_interval
        else:
            interval = min(self.max_interval, max(self.min_interval, (line - value) / self.rate))
        self.interval = interval
        return interval

    def _crossing(self, reason: str) -> None:
        try:
            self._on_crossing(reason)
        except Exception:  # the callback's bug must not end the watch
            log.exception("usage watch callback failed")

    def _failed(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("usage watch: %s; retrying every %gs", problem, self.retry_interval)
            previous, self.problem = self.problem, problem
            if previous is None:
                self._crossing("usage source lost")

    def _pause(self, seconds: float) -> None:
        """Sleep; a long pause ends early when ``follow()`` changes the source or ``stop()`` is called. Short
        pauses use ``time.sleep``: a wakeup through ``Event.wait`` cost 34 µs of CPU here against 21 µs."""
        if seconds < _SHORT_PAUSE:
            time.sleep(seconds)
        elif self._wake.wait(seconds):
            self._wake.clear()


def _close(gauge: Gauge | None) -> None:
    if gauge is not None:
        gauge.close()
    return None


def _describe(spec: GaugeSpec) -> str:
    if isinstance(spec, CgroupUsage):
        return f"cgroup {spec.directory}"
    return f"pid {', '.join(map(str, spec.pids))}"
