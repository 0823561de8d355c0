"""The durable delivery spool: alert transitions waiting for a channel's receiver to accept them.

Every transition to deliver through a channel is added here BEFORE the first attempt and deleted only after
the receiver accepted it (or rejected it permanently), so an agent killed with SIGKILL finds its pending
deliveries after restart. One SQLite file in WAL mode, schema version 1 in ``PRAGMA user_version`` (a file
written by a newer schema is refused), ``quick_check`` at open, like :mod:`memmon.storage.store` but a separate file.

Durability: ``synchronous=NORMAL`` in WAL mode means a committed transaction has been written to the WAL file
(not fsynced). It survives a SIGKILL or crash of the process, because the write is in the OS page cache; it
may be lost (never corrupted: the database rolls back to an earlier commit) only if the OS or the machine
goes down before the kernel flushes it.

Each channel holds at most ``max_entries_per_channel`` entries. Beyond that the entry of LOWEST severity is
dropped, OLDEST first (oldest warnings, then oldest criticals), the new entry competing with the rest; an
emergency is never dropped, so a channel holding only emergencies keeps them all and exceeds the bound.

Alerts round-trip exactly, as in the store: levels by label, metadata as JSON frozen back with
:func:`~memmon.model.frozen_mapping` (tuples come back as lists, nested mappings as dicts, other values as
their ``str()``). Every failure raises :class:`SpoolError`, whose message names the spool file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memmon.model import Alert, Level
from memmon.storage.alertrows import ALERT_ROW_WIDTH, alert_from_row, alert_row
from memmon.storage.sqlitefile import SqliteFile

__all__ = ["MAX_ERROR_CHARS", "SCHEMA_VERSION", "AlertSpool", "SpoolEntry", "SpoolError"]

SCHEMA_VERSION = 1
MAX_ERROR_CHARS = 500
"""``last_error`` is truncated to this many characters."""
_EMERGENCY_RANK = int(Level.EMERGENCY)
"""Severity rank is the level's value: warning 1, critical 2, emergency 3 (never dropped)."""

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS spool ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, "  # AUTOINCREMENT: an id is never reused after a delete
    "channel TEXT NOT NULL, "
    "idempotency_key TEXT NOT NULL, "
    "rank INTEGER NOT NULL, "
    "attempts INTEGER NOT NULL DEFAULT 0, "
    "next_attempt_at REAL NOT NULL, "
    "created_at REAL NOT NULL, "
    "last_error TEXT, "
    "alert_id TEXT NOT NULL, "
    "fingerprint TEXT NOT NULL, "
    "severity TEXT NOT NULL, "
    "component TEXT NOT NULL, "
    "target TEXT NOT NULL, "
    "state TEXT NOT NULL, "
    "started_at REAL NOT NULL, "
    "resolved_at REAL, "
    "memory_usage REAL NOT NULL, "
    "threshold REAL NOT NULL, "
    "message TEXT NOT NULL, "
    "metadata TEXT NOT NULL, "
    "UNIQUE (channel, idempotency_key))",
    "CREATE INDEX IF NOT EXISTS spool_channel_next ON spool (channel, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS spool_channel_rank ON spool (channel, rank, id)",
    # One row rewritten by probe(): the dispatcher's test whether the file can be written again.
    "CREATE TABLE IF NOT EXISTS spool_probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
)

_ENTRY_NAMES = (
    "id, channel, idempotency_key, attempts, next_attempt_at, created_at, last_error, "
    "alert_id, fingerprint, severity, component, target, state, started_at, resolved_at, "
    "memory_usage, threshold, message, metadata"
)
_INSERT = (
    "INSERT INTO spool (channel, idempotency_key, rank, next_attempt_at, created_at, "
    "alert_id, fingerprint, severity, component, target, state, started_at, resolved_at, "
    "memory_usage, threshold, message, metadata) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (channel, idempotency_key) DO NOTHING"
)


class SpoolError(Exception):
    """The spool cannot be opened, read or written; the message names the spool file."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One alert transition waiting for delivery through one channel."""

    id: int
    """Autoincrement row id, never reused."""
    channel: str
    idempotency_key: str
    """``f"{alert.id}:{alert.state}"``, built by the caller; unique per channel."""
    alert: Alert
    attempts: int
    """Failed attempts so far."""
    next_attempt_at: float
    """Epoch seconds."""
    created_at: float
    last_error: str | None


def _entry_from_row(row: Sequence[Any]) -> SpoolEntry:
    alert = alert_from_row(row[7 : 7 + ALERT_ROW_WIDTH])
    return SpoolEntry(
        id=row[0],
        channel=row[1],
        idempotency_key=row[2],
        alert=alert,
        attempts=row[3],
        next_attempt_at=row[4],
        created_at=row[5],
        last_error=row[6],
    )


class AlertSpool(SqliteFile):
    """Alert transitions waiting for delivery, per channel, in one SQLite file.

    Synchronous; the dispatcher calls it from ONE worker thread. A lock still serialises calls, so that e.g.
    :meth:`close` from the main thread at shutdown is safe. Call :meth:`open` before anything else; any
    method but :meth:`close` raises :class:`SpoolError` on a closed spool.
    """

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    ERROR = SpoolError
    KIND = "spool"

    def __init__(
        self,
        path: Path,
        *,
        max_entries_per_channel: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure only; nothing touches the disk before :meth:`open`. The bound must be >= 1."""
        if max_entries_per_channel < 1:
            raise ValueError(f"max_entries_per_channel must be >= 1, got {max_entries_per_channel}")
        super().__init__(path)
        self._max = int(max_entries_per_channel)
        self._clock = clock

    # -- writes ----------------------------------------------------------------------------------------

    def add(
        self, channel: str, key: str, alert: Alert, *, not_before: float | None = None
    ) -> tuple[int, list[SpoolEntry]]:
        """Spool ``alert`` for ``channel`` under idempotency ``key``, and enforce the channel's bound.

        The entry is due at ``not_before`` (default: now, from the injected clock). Insert and bound are
        one transaction. Adding a (channel, key) already in the spool changes nothing and returns its id
        with no drops (a key deleted after delivery can be added again).

        Returns ``(id, dropped)``: ``id`` is the new entry's, or -1 when the new entry itself was the one
        dropped by the bound; ``dropped`` lists the entries that were already in the spool and were dropped
        to make room (the new entry, when dropped, is signalled by -1 only, never listed), lowest severity
        and oldest first.
        """
        now = self._clock()
        due_at = now if not_before is None else not_before
        row = (
            channel,
            key,
            int(alert.severity),
            due_at,
            now,
            *alert_row(alert),
        )
        with self._transaction(f"add {key!r} to channel {channel!r}") as conn:
            cursor = conn.execute(_INSERT, row)
            if cursor.rowcount == 0:
                (existing,) = conn.execute(
                    "SELECT id FROM spool WHERE channel = ? AND idempotency_key = ?", (channel, key)
                ).fetchone()
                return int(existing), []
            new_id = cursor.lastrowid
            assert new_id is not None
            (count,) = conn.execute("SELECT count(*) FROM spool WHERE channel = ?", (channel,)).fetchone()
            excess = int(count) - self._max
            if excess <= 0:
                return new_id, []
            victims = [
                _entry_from_row(victim)
                for victim in conn.execute(
                    f"SELECT {_ENTRY_NAMES} FROM spool WHERE channel = ? AND rank < ? ORDER BY rank, id LIMIT ?",
                    (channel, _EMERGENCY_RANK, excess),
                )
            ]
            conn.executemany("DELETE FROM spool WHERE id = ?", [(victim.id,) for victim in victims])
            dropped = [victim for victim in victims if victim.id != new_id]
            return (-1 if len(dropped) < len(victims) else new_id), dropped

    def failed(self, entry_id: int, *, next_attempt_at: float, error: str) -> None:
        """Record a failed attempt: attempts + 1, retry at ``next_attempt_at``, keep ``error`` (500 chars).

        An id no longer in the spool (e.g. dropped by the bound meanwhile) is ignored.
        """
        with self._transaction(f"record failed attempt of entry {entry_id}") as conn:
            conn.execute(
                "UPDATE spool SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (next_attempt_at, error[:MAX_ERROR_CHARS], entry_id),
            )

    def probe(self) -> None:
        """Rewrite one row of a side table: ``SpoolError`` while the file cannot be written (disk full, read-only
        file system), so that a caller holding deliveries elsewhere learns when it can spool again."""
        with self._transaction("write the probe row") as conn:
            conn.execute("INSERT OR REPLACE INTO spool_probe (id, at) VALUES (1, ?)", (self._clock(),))

    def delete(self, entry_id: int) -> None:
        """Remove an entry the receiver accepted (or rejected permanently). An unknown id is ignored."""
        with self._transaction(f"delete entry {entry_id}") as conn:
            conn.execute("DELETE FROM spool WHERE id = ?", (entry_id,))

    # -- reads -----------------------------------------------------------------------------------------

    def due(self, channel: str, now: float | None = None, limit: int = 10) -> list[SpoolEntry]:
        """Up to ``limit`` entries of ``channel`` with ``next_attempt_at <= now`` (default: the clock).

        Emergency first, then critical, then warning; oldest (lowest id) first within a severity.
        """
        now = self._clock() if now is None else now
        sql = (
            f"SELECT {_ENTRY_NAMES} FROM spool WHERE channel = ? AND next_attempt_at <= ? "
            "ORDER BY rank DESC, id LIMIT ?"
        )
        with self._connection(f"read due entries of channel {channel!r}") as conn:
            return [_entry_from_row(row) for row in conn.execute(sql, (channel, now, max(0, limit)))]

    def next_due_at(self, channel: str) -> float | None:
        """The earliest ``next_attempt_at`` of ``channel``; None when it has no entries."""
        with self._connection(f"read next due time of channel {channel!r}") as conn:
            (earliest,) = conn.execute(
                "SELECT min(next_attempt_at) FROM spool WHERE channel = ?", (channel,)
            ).fetchone()
        return None if earliest is None else float(earliest)

    def pending(self) -> dict[str, int]:
        """Number of entries per channel (channels without entries are absent)."""
        with self._connection("count pending entries") as conn:
            rows = conn.execute("SELECT channel, count(*) FROM spool GROUP BY channel ORDER BY channel")
            return {str(channel): int(count) for channel, count in rows}

    def entries(self, channel: str | None = None) -> list[SpoolEntry]:
        """Every entry (of ``channel``, or of all channels when None), by id."""
        sql = f"SELECT {_ENTRY_NAMES} FROM spool"
        params: tuple[str, ...] = ()
        if channel is not None:
            sql += " WHERE channel = ?"
            params = (channel,)
        sql += " ORDER BY id"
        with self._connection("read entries") as conn:
            return [_entry_from_row(row) for row in conn.execute(sql, params)]

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"AlertSpool({str(self._path)!r}, {state})"
