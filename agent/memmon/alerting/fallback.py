"""Deliveries held in memory while the durable spool cannot be written (disk full, file system read-only).

A notification the spool refuses is not dropped: the delivery backlog keeps it here, delivers it from here like a
spooled one, and hands it over to the spool as soon as a write succeeds again. Entries look like
:class:`~memmon.alerting.spool.SpoolEntry` with NEGATIVE ids, so the backlog tells the two apart by the sign.

Nothing here survives the process: the spool is reported degraded (and each channel holding entries
here) for as long as it holds any. The bound per channel follows the spool's rule: beyond it the lowest
severity goes first, oldest first, and an emergency is never dropped.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

from memmon.alerting.spool import SpoolEntry
from memmon.model import Alert, Level

DEFAULT_MAX_ENTRIES = 1000
"""Per channel: a bound on memory, not a promise (the durable spool holds 10,000 by default)."""


def _rank(entry: SpoolEntry) -> int:
    return int(entry.alert.severity)


class MemorySpool:
    """Per-channel pending deliveries in memory, with the durable spool's methods and ordering."""

    def __init__(
        self, max_entries_per_channel: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time
    ):
        if max_entries_per_channel < 1:
            raise ValueError(f"max_entries_per_channel must be >= 1, got {max_entries_per_channel}")
        self._max = max_entries_per_channel
        self._clock = clock
        self._entries: dict[int, SpoolEntry] = {}
        self._ids = itertools.count(-1, -1)

    def add(
        self, channel: str, key: str, alert: Alert, *, not_before: float | None = None
    ) -> tuple[int, list[SpoolEntry]]:
        """Hold ``alert`` for ``channel``; ``(id, dropped)`` as :meth:`AlertSpool.add` answers, except that the id
        is 0 (ids here are negative) when the new entry itself was the one dropped by the bound.

        A (channel, key) already held changes nothing and returns its id.
        """
        for entry in self._entries.values():
            if entry.channel == channel and entry.idempotency_key == key:
                return entry.id, []
        now = self._clock()
        entry_id = next(self._ids)
        self._entries[entry_id] = SpoolEntry(
            entry_id, channel, key, alert, 0, now if not_before is None else not_before, now, None
        )
        held = [entry for entry in self._entries.values() if entry.channel == channel]
        excess = len(held) - self._max
        if excess <= 0:
            return entry_id, []
        # Oldest first: ids count down, so a larger id is older.
        victims = sorted(
            (e for e in held if e.alert.severity is not Level.EMERGENCY), key=lambda e: (_rank(e), -e.id)
        )
        victims = victims[:excess]
        for victim in victims:
            del self._entries[victim.id]
        dropped = [victim for victim in victims if victim.id != entry_id]
        return (entry_id if len(dropped) == len(victims) else 0), dropped

    def failed(self, entry_id: int, *, next_attempt_at: float, error: str) -> None:
        """Record a failed attempt (an unknown id is ignored)."""
        entry = self._entries.get(entry_id)
        if entry is not None:
            self._entries[entry_id] = dataclasses.replace(
                entry, attempts=entry.attempts + 1, next_attempt_at=next_attempt_at, last_error=error[:500]
            )

    def delete(self, entry_id: int) -> None:
        """Forget an entry (delivered, rejected or handed over to the spool); an unknown id is ignored."""
        self._entries.pop(entry_id, None)

    def due(self, channel: str, now: float, limit: int) -> list[SpoolEntry]:
        """Up to ``limit`` entries of ``channel`` due at ``now``: highest severity first, then oldest."""
        due = [e for e in self._entries.values() if e.channel == channel and e.next_attempt_at <= now]
        return sorted(due, key=lambda e: (-_rank(e), -e.id))[: max(0, limit)]

    def next_due_at(self, channel: str) -> float | None:
        """The earliest ``next_attempt_at`` of ``channel``; None when it holds nothing."""
        times = [e.next_attempt_at for e in self._entries.values() if e.channel == channel]
        return min(times) if times else None

    def entries(self, channel: str | None = None) -> list[SpoolEntry]:
        """The held entries (of ``channel``, or all), oldest first."""
        held = [e for e in self._entries.values() if channel is None or e.channel == channel]
        return sorted(held, key=lambda e: -e.id)

    def count(self, channel: str) -> int:
        """How many entries ``channel`` has here."""
        return sum(1 for e in self._entries.values() if e.channel == channel)

    def __len__(self) -> int:
        return len(self._entries)
