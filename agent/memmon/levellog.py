"""The ``memory level a -> b`` log line, rate-limited per transition pair.

Memory that hovers at a threshold changes level at every other check: with a 1 s interval that is thousands of
lines an hour, all saying the same thing (the evaluator's hysteresis, ``resolve_margin_ratio``, damps this but a
workload that swings wider than the margin defeats it). Alerts have their own rate limit (the dispatcher's
``alerting.rate_limit_seconds``); this is the log's.

Rules:

- A transition pair (``ok -> warning``, ``warning -> ok``, ...) is logged at most once per ``interval`` seconds.
  The first change of a pair is always logged, so a new kind of change (an escalation to emergency) is never
  held back by another pair's traffic.
- A change that is not logged is counted; the next line that is logged (of any pair) ends with
  ``(N changes suppressed)``, so the log says how much happened between two lines.
- So that the last line in the log tells the current level even when the last change was suppressed: once
  ``interval`` seconds have passed since the last line, the first check that finds suppressed changes pending
  logs ``memory level now X (N changes suppressed)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from memmon.model import Level

LEVEL_LOG_INTERVAL_SECONDS = 60.0
"""Seconds between two lines of the same transition pair."""


class LevelChangeLog:
    """Writes the level-change lines of one monitor; not thread-safe (the check loop owns it)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = LEVEL_LOG_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._monotonic = monotonic
        self._last_by_pair: dict[tuple[Level, Level], float] = {}
        self._last_line_at: float | None = None
        self._suppressed = 0

    @property
    def suppressed(self) -> int:
        """Changes not logged since the last line."""
        return self._suppressed

    def changed(self, previous: Level, level: Level, reason: str) -> bool:
        """A level change at this check; True when it was logged, False when it was counted as suppressed."""
        now = self._monotonic()
        pair = (previous, level)
        last = self._last_by_pair.get(pair)
        if last is not None and now - last < self._interval:
            self._suppressed += 1
            return False
        self._last_by_pair[pair] = now
        # Up is a warning (memory got worse), down to an alert level or ok is news, not a problem.
        severity = logging.WARNING if level > previous and level > Level.OK else logging.INFO
        self._write(
            severity,
            f"memory level {previous.label} -> {level.label}: {reason}",
            now,
            {"level": level.label, "previous_level": previous.label},
        )
        return True

    def checked(self, level: Level) -> None:
        """After a check without a level change: the summary line when changes were suppressed and the last
        line is ``interval`` seconds old."""
        if not self._suppressed:
            return
        now = self._monotonic()
        if self._last_line_at is not None and now - self._last_line_at < self._interval:
            return
        severity = logging.INFO if level == Level.OK else logging.WARNING
        self._write(severity, f"memory level now {level.label}", now, {"level": level.label})

    def _write(self, severity: int, text: str, now: float, extra: dict[str, object]) -> None:
        if self._suppressed:
            text += f" ({self._suppressed} changes suppressed)"
            extra = {**extra, "suppressed_changes": self._suppressed}
        self._logger.log(severity, "%s", text, extra=extra)
        self._suppressed = 0
        self._last_line_at = now
